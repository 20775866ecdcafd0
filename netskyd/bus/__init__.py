"""netskyd.bus.watcher."""
