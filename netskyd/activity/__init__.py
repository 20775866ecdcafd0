"""netskyd.activity.classify."""
