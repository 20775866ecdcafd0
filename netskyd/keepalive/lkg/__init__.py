"""netskyd.keepalive.lkg."""
