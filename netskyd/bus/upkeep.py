"""Upkeep of ``delivered/``: reconciled with meta.db at start, pruned each tick.

A mixin of ``netskyd.bus.watcher.Bus``. ``reconcile`` (run once by ``Bus.run`` before the
first drain) adds the ``messages`` rows missing for files already in ``delivered/``: the
daemon stopped between the ack's rename and its rows, and the ``attempts`` rows tell
whether it was a repeat. ``prune`` (the ticker, each tick) deletes ``delivered/`` entries
older than ``delivered_max_age_s``, then the oldest beyond ``delivered_max_count``
(docs/bus.md, "Life of an envelope").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from netsky_shared.errors import EnvelopeRejected
from netsky_shared.maildir import box_entries, now_rfc3339
from netskyd.bus.drain import message_row
from netskyd.bus.validate import validate

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.bus.envelope import Envelope
    from netskyd.ports import Clock, SettingsView
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder


class Upkeep:
    """Reconcile and prune ``delivered/``; the host class provides ``settings``,
    ``recorder``, ``store``, ``clock``, ``paths`` and ``agents_with_channels``."""

    settings: SettingsView
    recorder: Recorder
    store: Store
    clock: Clock

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def agents_with_channels(self) -> list[str]: ...

    async def prune(self) -> dict[str, int]:
        """Delete ``delivered/`` entries older than ``delivered_max_age_s``, then the oldest
        beyond ``delivered_max_count`` per agent. Returns ``{agent: removed}``."""
        s = self.settings()
        cutoff_ns = int((self.clock() - s.delivered_max_age_s) * 1e9)
        removed: dict[str, int] = {}
        for agent in self.agents_with_channels():
            box = self.paths.channel(agent, "delivered")
            names = box_entries(box)
            old = [n for n in names if _sent_ns(box / n) < cutoff_ns]
            keep = [n for n in names if n not in set(old)]
            excess = keep[: max(0, len(keep) - s.delivered_max_count)]
            gone = 0
            for n in old + excess:
                try:
                    os.unlink(box / n)
                    gone += 1
                except IsADirectoryError:
                    continue
                except FileNotFoundError:
                    continue
            if gone:
                removed[agent] = gone
                await self.recorder.event(
                    "channel.pruned",
                    agent=agent,
                    removed=gone,
                    by_age=len(old),
                    by_count=len(excess),
                    kept=len(names) - gone,
                )
        return removed

    async def reconcile(self) -> int:
        """Add the missing ``delivered`` rows for files in ``delivered/`` (a crash between
        the ack's rename and its rows); return how many were added."""
        added = 0
        for agent in self.agents_with_channels():
            box = self.paths.channel(agent, "delivered")
            names = box_entries(box)
            if not names:
                continue
            recorded = await self.store.recorded_files(agent, "delivered")
            missing = [n for n in names if n not in recorded]
            found: list[tuple[str, Envelope]] = []
            max_bytes = self.settings().envelope_max_bytes
            for n in missing:
                try:
                    found.append((n, validate(box / n, agent, max_bytes)))
                except EnvelopeRejected:
                    continue
            # The ack journalled the repeat flag before the rename; the attempt rows,
            # written before each hand-over, say the same: two or more is a repeat.
            tries = await self.store.attempt_counts([env.id for _, env in found])
            rows = []
            for n, env in found:
                count, via = tries.get(env.id, (0, "unknown"))
                rows.append(
                    message_row(
                        agent, n, env, "delivered", now_rfc3339(), via,
                        duplicate=count > 1,
                        reason="recorded at start: the daemon stopped between ack and record"
                        + ("; repeat: an earlier attempt may have reached the agent"
                           if count > 1 else ""),
                    )
                )
            if rows:
                await self.recorder.events(
                    "envelope.reconciled",
                    [
                        {
                            "agent": agent,
                            "envelope_id": r["envelope_id"],
                            "file": r["file"],
                            "duplicate": r["duplicate"],
                        }
                        for r in rows
                    ],
                    level="warning",
                )
                await self.store.add_messages(rows)
                added += len(rows)
        return added


def _sent_ns(path: Path) -> int:
    """When an envelope file was sent: its ``<ns>-`` name prefix, else its mtime."""
    head = path.name.split("-", 1)[0]
    if head.isdigit() and len(head) >= 18:
        return int(head)
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return 0
