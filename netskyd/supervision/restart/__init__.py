"""netskyd.supervision.restart."""
