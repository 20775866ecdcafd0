"""Replay: deliver again, in order, what ``delivered/`` holds since a time.

A mixin of ``netskyd.bus.watcher.Bus`` for ``netskyctl channel replay AGENT --since``
(the control socket's ``channel.replay``). The files stay in ``delivered/``: a replay
moves nothing, it hands the envelopes over again in ``batches``, waits (bounded) for each
batch to be taken before the next, and records each envelope as ``replayed``
(``envelope.replayed`` in the journal, then a ``messages`` row; docs/bus.md, "Operator
commands").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from netsky_shared.errors import EnvelopeRejected, NetskyError
from netsky_shared.maildir import box_entries
from netskyd.bus.delivery import DeliveryFailed
from netskyd.bus.drain import batches, message_row
from netskyd.bus.envelope import parse_ts
from netskyd.bus.validate import validate

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.bus.delivery import Delivery
    from netskyd.bus.envelope import Envelope
    from netskyd.ports import SettingsView
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder


class Replay:
    """Replays ``delivered/``; the host class provides ``settings``, ``recorder``,
    ``store``, ``paths`` and, from ``netskyd.bus.drain.Drain``, ``available``."""

    settings: SettingsView
    recorder: Recorder
    store: Store

    # Declared for the type checker only: a runtime stub could shadow the real method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def available(self, agent: str) -> list[Delivery]: ...

    async def replay(self, agent: str, since: str) -> list[str]:
        """Deliver again, in order, what ``delivered/`` holds for ``agent`` with ``ts >= since``
        (RFC 3339). Returns the envelope ids replayed (recorded with status ``replayed``).

        Raises ValueError for a bad ``since``; NetskyError when no delivery path is
        available (the agent is not up) or every path fails.
        """
        since_epoch = parse_ts(since).timestamp()
        box = self.paths.channel(agent, "delivered")
        chosen: list[tuple[Path, Envelope]] = []
        for n in box_entries(box):
            try:
                env = validate(box / n, agent, self.settings().envelope_max_bytes)
            except EnvelopeRejected:
                continue
            if env.ts_epoch >= since_epoch:
                chosen.append((box / n, env))
        chosen.sort(key=lambda item: (item[1].ts_epoch, item[0].name))
        if not chosen:
            return []
        if not self.available(agent):
            raise NetskyError(f"{agent} is not up (no pane ready, no channel server); "
                              "nothing replayed")
        replayed: list[str] = []
        for batch in batches(chosen):
            for path in self.available(agent):
                try:
                    receipt = await path.deliver(agent, [env for _, env in batch])
                except DeliveryFailed as e:
                    await self.recorder.event(
                        "envelope.replay_failed", level="warning", agent=agent, via=path.via,
                        error=str(e),
                    )
                    continue
                state = "unchecked"
                if receipt is not None:  # the next paste waits until this one is taken
                    with anyio.move_on_after(2 * self.settings().consume_timeout_s + 5):
                        state = (await receipt.confirm()).state
                rows = [{"agent": agent, "envelope_id": env.id, "file": f.name, "via": path.via,
                         "consumption": state}
                        for f, env in batch]
                ts = await self.recorder.events("envelope.replayed", rows)
                await self.store.add_messages(
                    [
                        message_row(agent, f.name, env, "replayed", ts, path.via,
                                    reason=f"replay since {since}")
                        for f, env in batch
                    ]
                )
                replayed += [env.id for _, env in batch]
                break
            else:
                raise NetskyError(
                    f"replay to {agent} failed after {len(replayed)} envelopes; see the journal"
                )
        return replayed
