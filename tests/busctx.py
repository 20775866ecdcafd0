"""A real bus on a real NETSKY_HOME (files, meta.db, journal) with a recording delivery path.

For unit and property tests of claim/validate/deliver/ack without tmux: the pane
path is replaced by ``RecordingDelivery``, which keeps what it was handed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from netskyd.agents.tmux import Tmux
from netskyd.bus.delivery import DeliveryFailed
from netskyd.bus.envelope import Envelope
from netskyd.bus.watcher import Bus
from netskyd.config import Settings
from netskyd.escalation.spool import Spool
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder
from netskyd.supervision.table import AgentTable


class RecordingDelivery:
    """A delivery path that records each batch; ``fail`` makes the next calls fail."""

    via = "test"

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Envelope]]] = []
        self.up = True
        self.fail: DeliveryFailed | None = None

    def available(self, agent: str) -> bool:
        return self.up

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> None:
        if self.fail is not None:
            raise self.fail
        self.batches.append((agent, list(envelopes)))

    @property
    def delivered(self) -> list[Envelope]:
        return [e for _, b in self.batches for e in b]


class NothingHeld:
    """An ActivityGate (netskyd.ports) that never holds a delivery: no monitor here."""

    def held(self, agent: str) -> str | None:
        return None

    async def observe(self, agent: str, text: str | None, source: str) -> Any:
        raise AssertionError("the recording delivery path never reads a screen")


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def bus_on(home: Path, **settings: object) -> AsyncIterator[tuple[Bus, RecordingDelivery]]:
    """Yield a Bus over ``home`` whose only delivery path is a RecordingDelivery."""
    s = Settings(home=home, **settings)  # type: ignore[arg-type]
    for d in (s.paths.state, s.paths.logs, s.paths.channels):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(s.paths.db)
    try:
        recorder = Recorder(Journal(s.paths.logs), store)
        bus = Bus(
            agents=AgentTable(lambda: s),
            activity=NothingHeld(),
            settings=lambda: s,
            tmux=Tmux("netsky-test-unused", 1.0),
            store=store,
            recorder=recorder,
            pager=Spool(settings=lambda: s, environ={}, recorder=recorder, store=store),
        )
        rec = RecordingDelivery()
        bus.deliveries = [rec]
        yield bus, rec
    finally:
        await store.close()


async def messages(bus: Bus) -> list[dict[str, object]]:
    """Every ``messages`` row, as dicts, in insert order."""
    conn = bus.store.conn
    async with conn.execute("SELECT * FROM messages ORDER BY id") as cur:
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]
