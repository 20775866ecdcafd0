"""netskyd.escalation."""
