"""Planned restarts: ``netskyctl restart`` and ``state/restart-request``.

A mixin of ``netskyd.supervision.restart.runner.RestartRunner``. ``request`` starts a planned
restart of the constellation for the control socket; an agent asks for one by writing
``state/restart-request`` (``netskyd.supervision.restart.markers`` parses it), which the
runner claims by atomic rename into ``state/restart-claimed/`` (only one claimer can win
the rename) and then archives: at once (``_watch_requests``, a file watch), when agent0 dies
with it pending (``notice_gone``) or at the next tick. ``recover_claimed`` claims again what a
daemon that died mid-claim left in ``state/restart-claimed/``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from netsky_shared.errors import IllegalTransition, NetskyError, RestartBusy
from netsky_shared.ids import ROOT
from netskyd.supervision.restart import machine as restart
from netskyd.supervision.restart.markers import (
    ARCHIVE_DIR,
    CLAIMED_DIR,
    HANDOFF_MAX_BYTES,
    REQUEST,
    parse_request,
)

if TYPE_CHECKING:
    from pathlib import Path

    import anyio

    from netsky_shared.paths import Paths
    from netskyd.store.recorder import Recorder
    from netskyd.supervision.restart.machine import Machine


class RestartRequests:
    """Requesting, claiming and recovering planned restarts; the host class provides
    ``recorder``, ``machines``, ``_claim_lock``, ``paths``, ``_path``, ``machine`` and
    ``feed``."""

    recorder: Recorder
    machines: dict[str, Machine]
    _claim_lock: anyio.Lock

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def _path(self, name: str) -> Path: ...

        def machine(self, agent: str) -> Machine: ...

        async def feed(
            self, agent: str, event: restart.Event, *, gen: int | None = None
        ) -> Machine: ...

    async def request(self, handoff: str, *, clones: int | None, by: str, force: bool) -> Machine:
        """Start a planned restart of the constellation (``netskyctl restart``).

        Raises RestartBusy when one is already in flight (or parked and not forced).
        """
        m = self.machine(ROOT)
        if m.state in restart.ACTIVE or (m.state in restart.PARKED and not force):
            raise RestartBusy(
                f"a restart of agent0 is already {m.state.value} (restart {m.restart_id}); "
                "see 'netskyctl status'"
            )
        return await self.feed(
            ROOT, restart.Requested(uuid.uuid4().hex, handoff, by, clones=clones, force=force)
        )

    async def claim_request(self) -> bool:
        """Claim ``state/restart-request`` by atomic rename and start the planned restart.

        Returns False when there is none or agent0's machine cannot take it now (it
        stays for a later tick).
        """
        async with self._claim_lock:
            return await self._claim_request()

    async def _claim_request(self) -> bool:
        m = self.machine(ROOT)
        source = self._path(REQUEST)
        if not source.exists():
            return False
        if m.state in restart.ACTIVE:
            return False
        if m.state in restart.PARKED:
            # Waiting for a retry: only the owner's request (force) goes ahead. Look
            # without claiming, so the file is not renamed back and forth.
            try:
                if not parse_request(source.read_bytes())["force"]:
                    return False
            except FileNotFoundError:
                return False
        claimed_dir = self._path(CLAIMED_DIR)
        claimed_dir.mkdir(parents=True, exist_ok=True)
        restart_id = uuid.uuid4().hex
        target = claimed_dir / f"{restart_id}.request"
        try:
            source.rename(target)  # the claim: only one claimer can win the rename
        except FileNotFoundError:
            return False
        req = parse_request(target.read_bytes())
        if m.state in restart.PARKED and not req["force"]:  # replaced since the look
            target.rename(source)
            return False
        limit = HANDOFF_MAX_BYTES
        raw_len = len(req["handoff"].encode())
        if raw_len > limit:
            cut = req["handoff"].encode()[:limit].decode("utf-8", errors="ignore")
            req["handoff"] = (
                f"{cut}\n\n[netsky: handoff truncated from {raw_len} bytes; the full text is "
                f"in state/{ARCHIVE_DIR}/restart-request-{restart_id}]"
            )
        await self.recorder.event(
            "restart.request_claimed",
            agent=ROOT,
            restart_id=restart_id,
            by=req["by"],
            bytes=len(req["handoff"].encode()),
            clones=req["clones"],
        )
        try:
            await self.feed(
                ROOT,
                restart.Requested(
                    restart_id, req["handoff"], req["by"], clones=req["clones"], force=req["force"]
                ),
            )
        except IllegalTransition:  # a death started a restart meanwhile: claim it later
            if not source.exists():
                target.rename(source)
            return False
        # The handoff now lives in restart-inflight.json; keep the request for the record.
        archive = self._path(ARCHIVE_DIR)
        archive.mkdir(parents=True, exist_ok=True)
        target.rename(archive / f"restart-request-{restart_id}")
        return True

    async def recover_claimed(self) -> None:
        """Requests claimed by a daemon that died before recording them are claimed again."""
        d = self._path(CLAIMED_DIR)
        if not d.is_dir():
            return
        for f in sorted(d.iterdir()):
            known = any(m.restart_id == f.stem for m in self.machines.values())
            if known or self._path(REQUEST).exists():
                archive = self._path(ARCHIVE_DIR)
                archive.mkdir(parents=True, exist_ok=True)
                f.rename(archive / f"restart-request-{f.stem}")
                continue
            f.rename(self._path(REQUEST))
            await self.recorder.event("restart.request_recovered", agent=ROOT, file=f.name)

    async def _watch_requests(self) -> None:
        """Claim ``state/restart-request`` as soon as it appears (the tick is the backstop)."""
        from watchfiles import awatch

        state = self.paths.state
        state.mkdir(parents=True, exist_ok=True)
        await self.claim_request()
        async for changes in awatch(
            state,
            recursive=False,
            debounce=50,
            step=10,
            # A cancelled awatch waits for its watcher thread to return: at most this long
            # (watchfiles' default, 5 s, made every SIGTERM take 5 s).
            rust_timeout=500,
            watch_filter=lambda _change, path: path.endswith("/" + REQUEST),
        ):
            if changes:
                try:
                    await self.claim_request()
                except NetskyError as e:
                    await self.recorder.event("restart.request_failed", level="error", error=str(e))
