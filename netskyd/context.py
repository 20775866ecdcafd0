"""The daemon's shared context: settings, ports, stores and the long-lived components.

Built once by ``Daemon.startup()`` and handed to every task's ``run(ctx)``.
Time comes from ``clock`` (wall, seconds since the epoch) and ``monotonic``,
both injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from netsky_shared.paths import Paths
from netskyd.agents.tmux import Tmux
from netskyd.config import Settings
from netskyd.keepalive.sdnotify import Notifier
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder

if TYPE_CHECKING:
    from netskyd.activity.monitor import Monitor
    from netskyd.agents.sessions import SessionWatcher
    from netskyd.bus.watcher import Bus
    from netskyd.escalation.spool import Spool
    from netskyd.supervision.restart.runner import Watchdog
    from netskyd.supervision.supervisor import Supervisor


@dataclass
class Context:
    """Everything a daemon task needs; one per running netskyd."""

    settings: Settings
    tmux: Tmux
    store: Store
    recorder: Recorder
    config_path: Path | None = None
    #: The daemon's environment (HOME, CLAUDE_CONFIG_DIR, ... for seeding runtimes).
    environ: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    started_at: float = field(default_factory=time.time)
    last_tick_at: float | None = None
    tick_count: int = 0
    supervisor: Supervisor | None = None
    #: One watchdog tick at a time, whoever asks for it.
    tick_lock: anyio.Lock = field(default_factory=anyio.Lock)
    bus: Bus | None = None
    watchdog: Watchdog | None = None
    sessions: SessionWatcher | None = None
    monitor: Monitor | None = None
    #: The escalation spool (netskyd.escalation.spool), once its task runs.
    spool: Spool | None = None
    #: One writer at a time for the runtimes' own settings files (netskyd/seed.py).
    seed_lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: The service manager's sd_notify channel (netskyd.keepalive.sdnotify; disabled = no-op).
    notifier: Notifier = field(default_factory=Notifier)

    @property
    def paths(self) -> Paths:
        return self.settings.paths

    def sup(self) -> Supervisor:
        """The supervisor (set during startup)."""
        assert self.supervisor is not None, "supervisor not started"
        return self.supervisor

    def the_bus(self) -> Bus:
        """The bus (set during startup)."""
        assert self.bus is not None, "bus not started"
        return self.bus

    def the_watchdog(self) -> Watchdog:
        """The restart runner (set during startup)."""
        assert self.watchdog is not None, "watchdog not started"
        return self.watchdog

    def the_monitor(self) -> Monitor:
        """The activity monitor (set during startup)."""
        assert self.monitor is not None, "monitor not started"
        return self.monitor
