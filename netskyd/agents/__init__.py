"""netskyd.agents."""
