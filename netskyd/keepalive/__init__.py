"""netskyd.keepalive."""
