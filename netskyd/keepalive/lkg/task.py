"""The daemon task that records the running install as last-known-good when healthy.

``LkgTask.run`` (started by netskyd.app.wiring) waits for ``lkg_after_s`` of healthy running
(``unhealthy_reason``: fresh ticks; ``open_markers``: no gave-up or crash-loop marker holds an
agent), then, when ``lkg/current`` holds another fingerprint, runs ``python -m
netskyd.keepalive.lkg.snapshot promote --expect-fingerprint F --json`` in its own process group
(``run_child``, deadline ``lkg_timeout_s``) and looks again every ``RECHECK_S``. Journal events:
``lkg.skipped`` (``reason``), ``lkg.unchanged`` (``id``, ``fingerprint``), ``lkg.recorded`` (``id``,
``fingerprint``, ``duration_ms``, ``files``, ``bytes``) and ``lkg.record_failed`` (``error``,
``duration_ms`` when it ran). docs/keepalive.md, "When the daemon records".

``run`` never raises (but cancellation); ``run_child`` raises LkgError at its deadline.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence

import anyio
from anyio.abc import TaskStatus

from netsky_shared.bundled import this_python
from netsky_shared.health import read_install_selected
from netsky_shared.paths import Paths
from netskyd import children
from netskyd.keepalive.lkg.install import fingerprint_of_running
from netskyd.keepalive.lkg.snapshot import LkgError, read_manifest, running_from_lkg
from netskyd.periodic import every
from netskyd.ports import Clock, Monotonic, SettingsView, TickView
from netskyd.store.recorder import Recorder

#: After a record attempt (or finding the recorded one current), look again this much later.
RECHECK_S = 3600.0
#: Restart-budget markers that mean "not healthy" while they hold an agent.
UNHEALTHY_MARKERS = ("gave-up.json", "crashloop.json")


def open_markers(paths: Paths) -> list[str]:
    """The restart-budget markers (``state/gave-up.json``, ``state/crashloop.json``) that
    hold an agent, or do not parse. Read only: a corrupt marker is the restart runner's
    to move aside."""
    out = []
    for name in UNHEALTHY_MARKERS:
        try:
            value = json.loads(paths.marker(name).read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            out.append(name)
            continue
        if not isinstance(value, dict) or value.get("agents"):
            out.append(name)
    return out


def unhealthy_reason(
    now: float, last_tick_at: float | None, tick_interval_s: float, markers: Sequence[str]
) -> str | None:
    """Why the daemon is not healthy right now (None when it is): no tick yet, a tick
    older than three intervals, or an open gave-up / crash-loop marker."""
    if last_tick_at is None:
        return "no tick yet"
    if now - last_tick_at > 3 * tick_interval_s:
        return f"last tick {now - last_tick_at:.0f}s ago"
    if markers:
        return f"open markers: {', '.join(markers)}"
    return None


class LkgTask:
    """The daemon's last-known-good recorder, with only what it uses: the settings in
    force, the ticker's record (``TickView``), the Recorder, the daemon's environment
    (the child ``promote`` runs in it) and the clocks."""

    def __init__(
        self,
        *,
        settings: SettingsView,
        ticks: TickView,
        recorder: Recorder,
        environ: Mapping[str, str],
        clock: Clock = time.time,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.settings = settings
        self.ticks = ticks
        self.recorder = recorder
        self.environ = environ
        self.clock = clock
        self.monotonic = monotonic

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    async def run(self, *, task_status: TaskStatus[LkgTask] = anyio.TASK_STATUS_IGNORED) -> None:
        """The long-running task (module function ``run``)."""
        await run(self, task_status=task_status)


async def run(
    task: LkgTask, *, task_status: TaskStatus[LkgTask] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Long-running task: after ``lkg_after_s`` of healthy running (fresh ticks, no open
    gave-up or crash-loop marker), record the running install as last-known-good when
    ``lkg/current`` holds another one; then look again every ``RECHECK_S``. Never raises
    (but cancellation). Records nothing when ``lkg_after_s`` is 0, while
    ``state/install-selected`` says ``lkg`` (the live install is distrusted), or when this
    daemon runs from ``lkg/``."""
    task_status.started(task)
    if running_from_lkg(task.paths.lkg):
        await task.recorder.event("lkg.skipped", reason=f"netskyd runs from {sys.executable}")
        await anyio.sleep_forever()
    try:
        started_fp = await anyio.to_thread.run_sync(fingerprint_of_running)
    except Exception as e:  # noqa: BLE001 - the task must never take the daemon down
        await task.recorder.event("lkg.record_failed", level="warning", error=f"fingerprint: {e}")
        await anyio.sleep_forever()
    watch = _Watch()

    async def check() -> None:
        try:
            if await watch.due(task):
                await _record_if_changed(task, started_fp)
        except Exception as e:  # noqa: BLE001 - the task must never take the daemon down
            await task.recorder.event("lkg.record_failed", level="warning", error=str(e))

    await every(lambda: min(max(task.settings().tick_interval_s, 0.5), 30.0), check)


class _Watch:
    """The healthy stretch so far, and when the next record attempt may be."""

    def __init__(self) -> None:
        self.healthy_since: float | None = None
        self.next_check_at = 0.0
        self.distrusted = False

    async def due(self, task: LkgTask) -> bool:
        """Whether to attempt a record now (then the next one is ``RECHECK_S`` away)."""
        settings = task.settings()  # SIGHUP may change it
        now = task.clock()
        if settings.lkg_after_s <= 0:
            return False
        if read_install_selected(str(task.paths.home)) == "lkg":
            if not self.distrusted:
                await task.recorder.event(
                    "lkg.skipped",
                    reason="state/install-selected is lkg: the live install is "
                    "not recorded until 'netskyctl self-repair promote' selects it again",
                )
            self.distrusted, self.healthy_since = True, None
            return False
        self.distrusted = False
        why = unhealthy_reason(
            now, task.ticks.last_tick_at, settings.tick_interval_s, open_markers(task.paths)
        )
        if why is not None:
            self.healthy_since = None
            return False
        self.healthy_since = now if self.healthy_since is None else self.healthy_since
        if now - self.healthy_since < settings.lkg_after_s or now < self.next_check_at:
            return False
        self.next_check_at = now + RECHECK_S
        return True


async def _record_if_changed(task: LkgTask, started_fp: str) -> None:
    """Record the running install unless ``lkg/current`` already is it."""
    manifest = read_manifest(task.paths.lkg_current)
    if manifest is not None and manifest.get("fingerprint") == started_fp:
        await task.recorder.event("lkg.unchanged", id=manifest.get("id"), fingerprint=started_fp)
        return
    on_disk = await anyio.to_thread.run_sync(fingerprint_of_running)
    if on_disk != started_fp:
        # An upgrade landed under a running daemon: it is recorded after its own
        # healthy stretch, once a daemon runs it.
        await task.recorder.event(
            "lkg.skipped", reason="the install on disk changed since netskyd started"
        )
        return
    cmd = [
        *this_python("netskyd.keepalive.lkg.snapshot"),
        "promote",
        "--home",
        str(task.paths.home),
        "--reason",
        "healthy-stretch",
        "--expect-fingerprint",
        started_fp,
        "--json",
    ]
    t0 = task.monotonic()
    rc, out, err = await run_child(cmd, task.settings().lkg_timeout_s, task.environ or None)
    duration_ms = int((task.monotonic() - t0) * 1000)
    try:
        result = json.loads(out)
    except ValueError:
        result = {}
    if rc != 0 or not isinstance(result, dict) or "id" not in result:
        error = (result.get("error") if isinstance(result, dict) else None) or err.strip()[-500:]
        await task.recorder.event(
            "lkg.record_failed",
            level="warning",
            error=error or f"exit {rc}",
            duration_ms=duration_ms,
        )
        return
    await task.recorder.event(
        "lkg.recorded",
        id=result["id"],
        fingerprint=result["fingerprint"],
        duration_ms=duration_ms,
        files=result.get("files"),
        bytes=result.get("bytes"),
    )


async def run_child(
    cmd: Sequence[str], timeout_s: float, env: Mapping[str, str] | None
) -> tuple[int, str, str]:
    """Run ``cmd`` in its own process group (netskyd.children); return (exit code, stdout,
    stderr). At the deadline the whole group (the promote and its selftest) is killed and
    LkgError raised."""
    try:
        return await children.run_child(cmd, timeout_s=timeout_s, env=env)
    except TimeoutError as e:
        raise LkgError(f"recording took longer than {timeout_s:g}s") from e
