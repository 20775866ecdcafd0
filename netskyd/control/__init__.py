"""netskyd.control.server."""
