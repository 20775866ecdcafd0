"""The bus's claims: ``inbox/`` into ``claimed/``, and every way out of it but the ack.

A mixin of ``netskyd.bus.watcher.Bus``. ``claim`` renames what waits in ``inbox/`` into
``claimed/`` (the step that takes an envelope off the queue, docs/bus.md "Life of an
envelope"); a claim then leaves ``claimed/`` by the ack (``netskyd.bus.drain``), back into
``inbox/`` (``_requeue``: no delivery path took it, or its lease of ``claim_lease_s``
expired), or into ``poison/`` (``poison_many``, which also takes bad ``outbox/`` entries).
Every move is a rename on one filesystem, so the envelope is in exactly one box at any
moment. The host keeps ``_claimed_at`` (claimed file path -> monotonic seconds of its claim)
for the lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsky_shared.maildir import atomic_write_bytes, box_entries, fsync_dir, now_rfc3339

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.ports import Monotonic, SettingsView
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder


def _unique(directory: Path, name: str) -> Path:
    target = directory / name
    if os.path.lexists(target):
        target = directory / f"{name}.{time.time_ns()}"
    return target


class Claims:
    """Claiming, requeueing, lease expiry and poisoning; the host class provides
    ``settings``, ``recorder``, ``store``, ``monotonic``, ``paths``, ``agents_with_channels``,
    ``kick``, the drains in flight (``_running``), ``_claimed_at`` and ``poisoned_count``."""

    settings: SettingsView
    recorder: Recorder
    store: Store
    monotonic: Monotonic
    _running: set[str]
    _claimed_at: dict[str, float]
    poisoned_count: int

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def agents_with_channels(self) -> list[str]: ...

        def kick(self, agent: str) -> None: ...

    def claim(self, agent: str) -> list[Path]:
        """Rename every inbox entry into ``claimed/``; return all claimed entries in order."""
        paths = self.paths
        inbox, claimed = paths.channel(agent, "inbox"), paths.channel(agent, "claimed")
        claimed.mkdir(parents=True, exist_ok=True)
        now = self.monotonic()
        for name in box_entries(inbox):
            with contextlib.suppress(FileNotFoundError):
                os.rename(inbox / name, claimed / name)
                self._claimed_at[str(claimed / name)] = now
        return [claimed / n for n in box_entries(claimed)]

    def _requeue(self, agent: str, files: list[Path]) -> None:
        inbox = self.paths.channel(agent, "inbox")
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.rename(f, inbox / f.name)
            self._claimed_at.pop(str(f), None)

    async def expire_leases(self) -> int:
        """Return claims older than ``claim_lease_s`` (and not being drained) to the queue."""
        lease = self.settings().claim_lease_s
        now = self.monotonic()
        returned = 0
        for agent in self.agents_with_channels():
            if agent in self._running:
                continue
            claimed = self.paths.channel(agent, "claimed")
            expired = [
                claimed / n
                for n in box_entries(claimed)
                if now - self._claimed_at.setdefault(str(claimed / n), now) > lease
            ]
            if expired:
                self._requeue(agent, expired)
                returned += len(expired)
                await self.recorder.event(
                    "envelope.lease_expired",
                    level="warning",
                    agent=agent,
                    count=len(expired),
                    files=[f.name for f in expired],
                    lease_s=lease,
                )
                self.kick(agent)
        return returned

    async def poison_many(self, agent: str, items: list[tuple[Path, str, str]]) -> None:
        """Move bad entries to ``poison/``, each beside ``<name>.reason.json``; never raises
        for one entry (a failed move is recorded in its reason as ``move_error``)."""
        poison_dir = self.paths.channel(agent, "poison")
        poison_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        ts = now_rfc3339()
        for path, rule, detail in items:
            target = _unique(poison_dir, path.name)
            reason: dict[str, Any] = {"rule": rule, "detail": detail, "ts": ts, "file": target.name}
            try:
                atomic_write_bytes(
                    poison_dir / f"{target.name}.reason.json",
                    (json.dumps(reason, indent=2) + "\n").encode(),
                    sync_dir=False,  # once for the lot, below
                )
                os.rename(path, target)
            except OSError as e:
                reason["move_error"] = str(e)
            self._claimed_at.pop(str(path), None)
            rows.append({"agent": agent, **reason})
        with contextlib.suppress(OSError):
            fsync_dir(poison_dir)
        self.poisoned_count += len(rows)
        await self.recorder.events("envelope.poisoned", rows, level="warning")
        await self.store.add_messages(
            [
                {
                    "recipient": agent,
                    "file": r["file"],
                    "status": "poisoned",
                    "reason": f"{r['rule']}: {r['detail']}",
                }
                for r in rows
            ]
        )
