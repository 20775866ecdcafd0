"""netskyd.app."""
