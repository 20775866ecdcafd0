"""The daemon's pulse: heartbeat file and sd_notify watchdog pings, from the event loop.

Every ``pulse_interval_s`` (``heartbeat_s``, at most half the service manager's watchdog
interval) a plain ``anyio.sleep`` loop checks the last tick. While it is fresh the pulse
rewrites ``state/heartbeat.json`` (docs/keepalive.md has the shape; write to a temporary
file, then rename) and sends ``WATCHDOG=1`` (netskyd.keepalive.sdnotify). Because the loop itself
does the work, a wedged event loop stops both, and so does a wedged tick: the shim reads
the heartbeat's age, systemd's ``WatchdogSec=`` counts the pings. A stall is journalled
once (``daemon.tick_stalled``), and its end once (``daemon.tick_recovered``).

The decisions (how often, is the tick stale, which install is running, what the
heartbeat says) are pure functions below; ``run`` carries them out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from netsky_shared.incidents import rfc3339
from netsky_shared.maildir import atomic_write_bytes
from netskyd import __version__
from netskyd import log as logmod
from netskyd.keepalive.sdnotify import Notifier
from netskyd.periodic import every
from netskyd.ports import Clock, SettingsView, TickView
from netskyd.store.recorder import Recorder
from netskyd.timing import tick_deadline_s

log = logmod.get("netskyd")


def pulse_interval_s(heartbeat_s: float, watchdog_s: float | None) -> float:
    """Seconds between two beats: ``heartbeat_s``, at most half the watchdog interval
    (sd_watchdog_enabled(3) recommends pinging at half of ``WATCHDOG_USEC``)."""
    if watchdog_s is None:
        return heartbeat_s
    return min(heartbeat_s, watchdog_s / 2)


def stall_after_s(
    tick_stall_s: float | None, tick_interval_s: float, tmux_timeout_s: float
) -> float:
    """How old the last tick may get before the daemon counts as wedged: ``tick_stall_s``,
    else three tick intervals plus one tick's deadline (netskyd.app.ticker)."""
    if tick_stall_s is not None:
        return tick_stall_s
    return 3 * tick_interval_s + tick_deadline_s(tick_interval_s, tmux_timeout_s)


def tick_age_s(last_tick_at: float | None, started_at: float, now: float) -> float:
    """Seconds since the last tick finished (since start-up before the first one);
    never negative, so a wall clock stepping back does not read as a stall."""
    since = started_at if last_tick_at is None else last_tick_at
    return max(0.0, now - since)


def tick_is_stale(
    last_tick_at: float | None, started_at: float, now: float, stall_s: float
) -> bool:
    """True when the last tick (or start-up, before the first tick) is older than
    ``stall_s`` seconds at ``now`` (all epoch seconds)."""
    return tick_age_s(last_tick_at, started_at, now) > stall_s


def install_kind(executable: str, lkg_dir: Path) -> str:
    """``"lkg"`` when ``executable`` (``sys.executable``) lives under ``lkg_dir``, else
    ``"live"``. A venv's python is usually a symlink to the base interpreter, so its
    directory is resolved, never the file itself."""
    exe = Path(os.path.abspath(executable))
    for base in {lkg_dir, lkg_dir.resolve()}:
        if exe.is_relative_to(base) or exe.parent.resolve().is_relative_to(base):
            return "lkg"
    return "live"


def heartbeat_record(
    *, pid: int, now: float, last_tick_at: float | None, install: str, executable: str
) -> dict[str, Any]:
    """The content of ``state/heartbeat.json`` (docs/keepalive.md, "Files"):
    ``{"pid", "epoch": int unix s, "ts", "last_tick_ts": str | None, "install",
    "executable", "version"}`` (a clean shutdown adds ``stopped``; ``mark_stopped``)."""
    return {
        "pid": pid,
        "epoch": int(now),
        "ts": rfc3339(now),
        "last_tick_ts": None if last_tick_at is None else rfc3339(last_tick_at),
        "install": install,
        "executable": executable,
        "version": __version__,
    }


def write_heartbeat(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as one JSON line to ``path`` by rename, so a reader never sees half
    of it. Raises OSError."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
    # No directory fsync: it is rewritten every tick, and a crash loses at most one beat.
    atomic_write_bytes(path, data, sync_dir=False)


def mark_stopped(path: Path, now: float) -> None:
    """A clean shutdown: add ``"stopped": true, "stopped_ts"`` to the heartbeat, so the
    shim tells a daemon that was stopped (start it quietly) from one that died (start it
    with ``--revived-by shim``, which pages). A missing or unreadable heartbeat is left
    alone. Raises nothing."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and record.get("pid") == os.getpid():
            write_heartbeat(path, {**record, "stopped": True, "stopped_ts": rfc3339(now)})
    except (OSError, ValueError):
        pass


class Pulse:
    """One beat at a time: heartbeat plus ``WATCHDOG=1`` while ticks are fresh.

    Built with only what it uses: the settings in force, the ticker's record
    (``TickView``), the sd_notify channel, the Recorder and a wall clock.
    """

    def __init__(
        self,
        *,
        settings: SettingsView,
        ticks: TickView,
        notifier: Notifier,
        recorder: Recorder,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.ticks = ticks
        self.notifier = notifier
        self.recorder = recorder
        self.clock = clock
        self.install = install_kind(sys.executable, settings().paths.lkg)
        #: Epoch seconds of the first beat that found the tick stale (None: not stalled).
        self.stalled_since: float | None = None
        self.beats = 0
        self._write_failing = False

    async def beat(self) -> bool:
        """Check the last tick; when fresh, write the heartbeat and ping the watchdog.
        Returns True when it did."""
        now = self.clock()
        s = self.settings()
        last_tick_at, started_at = self.ticks.last_tick_at, self.ticks.started_at
        stall_s = stall_after_s(s.tick_stall_s, s.tick_interval_s, s.tmux_timeout_s)
        if tick_is_stale(last_tick_at, started_at, now, stall_s):
            if self.stalled_since is None:
                # FRESH -> STALLED: no heartbeat, no pings, until a tick finishes.
                self.stalled_since = now
                await self.recorder.event(
                    "daemon.tick_stalled",
                    level="warning",
                    last_tick_ts=None if last_tick_at is None else rfc3339(last_tick_at),
                    tick_age_s=round(tick_age_s(last_tick_at, started_at, now), 1),
                    stall_s=stall_s,
                )
            return False
        if self.stalled_since is not None:
            # STALLED -> FRESH
            await self.recorder.event(
                "daemon.tick_recovered", stalled_s=round(now - self.stalled_since, 1)
            )
            self.stalled_since = None
        self._write(now)
        self.notifier.watchdog()
        self.beats += 1
        return True

    def _write(self, now: float) -> None:
        # On the loop, not in a thread: a few hundred bytes, and a heartbeat written by
        # a worker thread would keep going while the loop is wedged.
        record = heartbeat_record(
            pid=os.getpid(),
            now=now,
            last_tick_at=self.ticks.last_tick_at,
            install=self.install,
            executable=sys.executable,
        )
        try:
            write_heartbeat(self.settings().paths.heartbeat, record)
        except OSError as e:
            if not self._write_failing:
                path = str(self.settings().paths.heartbeat)
                log.warning("heartbeat.write_failed", path=path, error=str(e))
            self._write_failing = True
            return
        self._write_failing = False


    async def run(self, *, task_status: TaskStatus[Pulse] = anyio.TASK_STATUS_IGNORED) -> None:
        """Long-running task: a beat at once, then one every ``pulse_interval_s`` until
        cancelled (the interval is re-read each time: SIGHUP may change ``heartbeat_s``)."""
        await self.beat()
        task_status.started(self)
        await every(
            lambda: pulse_interval_s(self.settings().heartbeat_s, self.notifier.watchdog_s),
            self.beat,
        )


def block_loop(seconds: float) -> dict[str, Any]:
    """``debug.block_loop``: block the event loop (time.sleep) for ``seconds``."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point: a wedged event loop
    return {"blocked_s": seconds}
