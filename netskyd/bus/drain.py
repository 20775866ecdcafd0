"""One agent's drain: validate what it claimed, deliver it in batches, ack, confirm.

A mixin of ``netskyd.bus.watcher.Bus`` (which runs one drain at a time per agent) and the
module functions it shares with the rest of the bus: ``batches`` (paste-sized, in order)
and ``message_row`` (one ``messages`` row). The steps after the claim
(``netskyd.bus.claims``), docs/bus.md "Life of an envelope":

- **validate** each claimed entry (``netskyd.bus.validate``; ``duplicate-id`` here against
  the records); a failure is poisoned, and one bad file never blocks the next;
- **deliver** the good ones in batches through the first path that takes them (MCP
  channel, else the pane), an ``attempts`` row written before each hand-over;
- **ack**: journal (fsynced) -> rename into ``delivered/`` (dir fsynced) -> ``messages``
  rows; an envelope whose earlier attempt may have reached the agent is a marked repeat;
- **confirm** (pane deliveries): wait, bounded, until the agent has taken the batch, and
  record it in the ledger (``netskyd.bus.ledger``) before the agent's next batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from netsky_shared.errors import EnvelopeRejected
from netsky_shared.maildir import box_entries, fsync_dir, now_rfc3339
from netskyd.bus.delivery import Consumption, DeliveryFailed
from netskyd.bus.envelope import Envelope
from netskyd.bus.validate import validate

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.bus.delivery import Delivery, Receipt
    from netskyd.bus.ledger import Ledger
    from netskyd.ports import AgentView, Clock, SettingsView
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder


#: At most this many envelopes, and this many bytes of text, go in one paste.
BATCH_MAX_ENVELOPES = 64
BATCH_MAX_TEXT_BYTES = 64 * 1024


def batches(items: Sequence[tuple[Path, Envelope]]) -> list[list[tuple[Path, Envelope]]]:
    """Split ``items`` into paste-sized batches, keeping order (each holds at least one)."""
    out: list[list[tuple[Path, Envelope]]] = []
    current: list[tuple[Path, Envelope]] = []
    size = 0
    for item in items:
        n = len(item[1].text.encode())
        if current and (len(current) >= BATCH_MAX_ENVELOPES or size + n > BATCH_MAX_TEXT_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        out.append(current)
    return out


def message_row(
    agent: str,
    file: str,
    env: Envelope,
    status: str,
    ts: str,
    via: str,
    *,
    duplicate: bool = False,
    reason: str | None = None,
    submitted_at: str | None = None,
    consumption: str | None = None,
) -> dict[str, Any]:
    """One ``messages`` row (``netskyd.store.db.MESSAGE_COLUMNS``) for an envelope."""
    return {
        "submitted_at": submitted_at,
        "consumption": consumption,
        "envelope_id": env.id,
        "sender": env.sender,
        "recipient": agent,
        "kind": env.kind,
        "envelope_ts": env.ts,
        "file": file,
        "status": status,
        "delivered_ts": ts,
        "via": via,
        "duplicate": duplicate,
        "reason": reason,
    }


class Drain:
    """Validate, deliver, ack and confirm one agent's claims; the host class provides
    ``agents``, ``settings``, ``store``, ``recorder``, ``clock``, the delivery paths
    (``deliveries``), the ledger (``consumption``), ``paths``, ``_attempted`` (ids found in
    ``attempts`` when their batch was checked), ``_claimed_at``, the counters and, from
    ``netskyd.bus.claims.Claims``, ``claim``, ``_requeue`` and ``poison_many``."""

    agents: AgentView
    settings: SettingsView
    store: Store
    recorder: Recorder
    clock: Clock
    deliveries: list[Delivery]
    consumption: Ledger
    _attempted: set[str]
    _claimed_at: dict[str, float]
    delivered_count: int
    duplicate_count: int

    # Declared for the type checker only: a runtime stub could shadow the real method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def claim(self, agent: str) -> list[Path]: ...

        def _requeue(self, agent: str, files: list[Path]) -> None: ...

        async def poison_many(self, agent: str, items: list[tuple[Path, str, str]]) -> None: ...

    def available(self, agent: str) -> list[Delivery]:
        """The delivery paths that can take envelopes for ``agent`` now, preferred first."""
        return [d for d in self.deliveries if d.available(agent)]

    async def drain(self, agent: str) -> int:
        """Claim, validate, deliver and ack what waits for ``agent``; return how many delivered.

        Never raises for a bad envelope (it is poisoned); OSError and NetskyError from
        the filesystem or the records propagate to the caller's loop, which logs them.
        """
        if not self.available(agent):
            return 0  # stays queued; readiness (or the channel server) kicks the bus again
        claimed = self.claim(agent)
        if not claimed:
            return 0
        good = await self._check(agent, claimed)
        delivered = 0
        for batch in batches(good):
            n = await self._deliver(agent, batch)
            if n == 0:  # no path took it: the rest goes back to the queue, in order
                self._requeue(agent, [f for f, _ in good[delivered:]])
                break
            delivered += n
        return delivered

    async def _check(self, agent: str, claimed: list[Path]) -> list[tuple[Path, Envelope]]:
        s = self.settings()
        now = self.clock()
        good: list[tuple[Path, Envelope]] = []
        bad: list[tuple[Path, str, str]] = []
        for f in claimed:
            try:
                env = validate(
                    f, agent, s.envelope_max_bytes, now=now, future_skew_s=s.envelope_future_skew_s
                )
            except EnvelopeRejected as e:
                bad.append((f, e.rule, e.detail))
            else:
                good.append((f, env))
        known, attempted = (
            await self.store.prior([e.id for _, e in good]) if good else (set(), set())
        )
        self._attempted.update(attempted)
        seen: set[str] = set()
        unique: list[tuple[Path, Envelope]] = []
        for f, env in good:
            if env.id in known:
                bad.append((f, "duplicate-id", f"envelope id {env.id} was delivered before"))
            elif env.id in seen:
                bad.append((f, "duplicate-id", f"id {env.id} appears twice in the queue"))
            else:
                seen.add(env.id)
                unique.append((f, env))
        if bad:
            await self.poison_many(agent, bad)
        return unique

    async def _deliver(self, agent: str, batch: list[tuple[Path, Envelope]]) -> int:
        store = self.store
        ids = [env.id for _, env in batch]
        repeats = {i for i in ids if i in self._attempted}
        self._attempted.difference_update(ids)
        for path in self.available(agent):
            ts = now_rfc3339()
            await store.add_attempts(agent, ids, ts, path.via)
            try:
                receipt = await path.deliver(agent, [env for _, env in batch])
            except DeliveryFailed as e:
                if e.maybe_delivered:
                    repeats.update(ids)
                else:
                    await store.forget_attempts(ids, ts)
                await self.recorder.event(
                    "envelope.delivery_failed",
                    level="warning",
                    agent=agent,
                    via=path.via,
                    count=len(batch),
                    maybe_delivered=e.maybe_delivered,
                    error=str(e),
                )
                continue
            await self._ack(agent, batch, path.via, repeats, receipt)
            if receipt is not None:
                await self._confirm(agent, batch, receipt)
            return len(batch)
        return 0

    async def _ack(
        self,
        agent: str,
        batch: list[tuple[Path, Envelope]],
        via: str,
        repeats: set[str],
        receipt: Receipt | None = None,
    ) -> None:
        submitted_at = receipt.submitted_at if receipt is not None else None
        consumption = "pending" if receipt is not None else "unchecked"
        rows = [
            {
                "agent": agent,
                "envelope_id": env.id,
                "sender": env.sender,
                "kind": env.kind,
                "file": f.name,
                "via": via,
                "duplicate": env.id in repeats,
                "submitted_at": submitted_at,
            }
            for f, env in batch
        ]
        ts = await self.recorder.events("envelope.delivered", rows)
        delivered_dir = self.paths.channel(agent, "delivered")
        delivered_dir.mkdir(parents=True, exist_ok=True)
        for f, _ in batch:
            os.rename(f, delivered_dir / f.name)
            self._claimed_at.pop(str(f), None)
        fsync_dir(delivered_dir)
        await self.store.add_messages(
            [
                message_row(
                    agent, f.name, env, "delivered", ts, via,
                    duplicate=env.id in repeats,
                    reason="repeat: an earlier attempt may have reached the agent"
                    if env.id in repeats
                    else None,
                    submitted_at=submitted_at or ts,
                    consumption=consumption,
                )
                for f, env in batch
            ]
        )
        st = self.agents.agents.get(agent)
        if st is not None:
            st.last_delivery_ts = ts
            st.last_delivery_at = self.clock()
        self.delivered_count += len(batch)
        self.duplicate_count += sum(1 for _, env in batch if env.id in repeats)

    async def _confirm(
        self, agent: str, batch: list[tuple[Path, Envelope]], receipt: Receipt
    ) -> Consumption:
        """Wait (bounded) for ``agent`` to take the batch, record it, page or resolve."""
        s = self.settings()
        limit_s = 2 * s.consume_timeout_s + 3 * s.tmux_timeout_s + 1
        result = Consumption("unconsumed", reason=f"no answer within {limit_s:g}s")
        with anyio.move_on_after(limit_s):
            result = await receipt.confirm()
        await self.consumption.record(agent, batch, result)
        return result

    async def unconsumed(self, agent: str, limit: int = 20) -> dict[str, Any]:
        """What ``agent`` was given and did not take (``Ledger.report``)."""
        delivered = box_entries(self.paths.channel(agent, "delivered"))
        return await self.consumption.report(agent, delivered, limit)
