"""netskyctl: the thin netsky client (stdlib only, so it starts fast)."""
