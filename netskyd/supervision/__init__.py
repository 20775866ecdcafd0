"""netskyd.supervision."""
