"""The inbox watcher: claim, validate, deliver and ack envelopes; forward outboxes.

Long-running task ``Bus.run(wakeups)``. At start it reconciles ``delivered/`` with the
message records and adopts everything left in ``claimed/`` and ``inbox/``; then
``watchfiles`` (inotify; debounce 20 ms, step 1 ms) reports new files in any
``channels/agent/*/inbox/`` or ``outbox/`` (those directories only), and the
ticker rescans as a backstop.
No polling interval sits on the hot path.

This module holds the ``Bus`` (its construction, the scheduling of one drain at a time
per agent, ``run``) and the ``watch`` loop; the steps live in its mixins, named below.

Per agent, one drain at a time (ARCHITECTURE.md, "The agent bus"):

1. **claim** (``netskyd.bus.claims``): rename every ``inbox/`` entry into ``claimed/``
   (atomic), but only while a delivery path is available (pane: agent alive and ready;
   or its MCP channel server connected), so work never lands in a pane still starting up.
2. **validate** each claimed entry (``netskyd.bus.validate``; ``duplicate-id`` here
   against the records). A failure goes to ``poison/`` beside
   ``<name>.reason.json`` (``{"rule", "detail", "ts", "file"}``); one bad file
   never blocks the next.
3. **deliver** (``netskyd.bus.drain``, through ``netskyd.bus.delivery``) the good ones in
   batches (in name order, i.e. send order) through the first path that takes them: MCP
   channel, else the pane. An ``attempts`` row is written before each hand-over.
4. **ack** (``netskyd.bus.drain``): journal (fsynced) -> rename into ``delivered/`` (dir
   fsynced) -> ``messages`` rows. Delivery is at-least-once: after a crash between the
   paste and the ack the envelope is still in ``claimed/``; its redelivery finds the
   earlier attempt and is recorded with ``duplicate = 1``. A crash between the
   rename and the rows is repaired at start (rows added for ``delivered/`` files
   with none: ``netskyd.bus.upkeep``).
5. **confirm** (pane deliveries): the pane is read until the agent has taken the
   batch (``netskyd.bus.confirm``; ``consumption`` ``pending`` until then), then
   ``envelope.consumed`` / ``envelope.unconsumed`` is journalled and the rows get
   ``consumption`` and ``consumed_at`` (``netskyd.bus.ledger``). An unconsumed envelope
   stays delivered (it is in the pane: never pasted twice); it is a flag on the record.
   After ``unconsumed_page_after`` unconsumed envelopes in a row the owner is paged (key
   ``unconsumed:<agent>``); the agent's next consumed envelope resolves it. The
   agent's next batch waits for this (so two pastes never pile up in one composer),
   bounded by twice ``consume_timeout_s``; other agents never wait for it.

Claims left undelivered longer than ``claim_lease_s`` (e.g. adopted at start for
an agent that is not up) go back to ``inbox/`` (``netskyd.bus.claims``). ``delivered/``
is pruned by age and count each tick (``netskyd.bus.upkeep``) and replayed on request
(``netskyd.bus.replay``); outbox entries are forwarded by ``netskyd.bus.forward``.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus
from watchfiles import Change, awatch

from netsky_shared.ids import is_agent_id, sort_key
from netsky_shared.maildir import box_entries
from netsky_shared.paths import Paths
from netskyd.agents.tmux import Tmux
from netskyd.bus.claims import Claims
from netskyd.bus.delivery import Delivery, McpDelivery, PaneDelivery
from netskyd.bus.drain import (
    BATCH_MAX_ENVELOPES,
    BATCH_MAX_TEXT_BYTES,
    Drain,
    batches,
    message_row,
)
from netskyd.bus.forward import Forwarding
from netskyd.bus.ledger import Ledger
from netskyd.bus.replay import Replay
from netskyd.bus.upkeep import Upkeep
from netskyd.bus.validate import validate
from netskyd.ports import ActivityGate, AgentView, Clock, Monotonic, Pager, SettingsView
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder

# What callers import from here, including the names that moved to the modules above.
__all__ = [
    "BATCH_MAX_ENVELOPES",
    "BATCH_MAX_TEXT_BYTES",
    "Bus",
    "batches",
    "message_row",
    "validate",
    "watch",
]


class Bus(Claims, Drain, Forwarding, Upkeep, Replay):
    """Moves envelopes from inboxes into agents; one drain at a time per agent.

    Built with only what it uses: the agents (``AgentView``: who is up and ready), the
    activity monitor (``ActivityGate``: deliveries held while a dialog or a usage limit
    is up), the settings in force, tmux, the Store, the Recorder, the ``Pager`` (pages
    about unconsumed envelopes) and the clocks. Its steps come from the mixins
    (``Claims``, ``Drain``, ``Forwarding``, ``Upkeep``, ``Replay``), which declare what
    they use of it; the state they share (``_claimed_at``, ``_attempted``, ``_running``,
    the counters) is set up here.
    """

    def __init__(
        self,
        *,
        agents: AgentView,
        activity: ActivityGate,
        settings: SettingsView,
        tmux: Tmux,
        store: Store,
        recorder: Recorder,
        pager: Pager,
        clock: Clock = time.time,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.agents = agents
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.monotonic = monotonic
        self.pane = PaneDelivery(
            agents=agents, activity=activity, settings=settings, tmux=tmux, monotonic=monotonic
        )
        self.mcp = McpDelivery(settings)
        #: Delivery paths in order of preference.
        self.deliveries: list[Delivery] = [self.mcp, self.pane]
        self._tg: TaskGroup | None = None
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._claimed_at: dict[str, float] = {}
        #: Ids found in ``attempts`` when their batch was checked (a marked repeat if sent).
        self._attempted: set[str] = set()
        self.stop = anyio.Event()
        self.delivered_count = 0
        self.duplicate_count = 0
        self.poisoned_count = 0
        self.forwarded_count = 0
        #: Consumption records, streaks and their pages (netskyd/bus/ledger.py).
        self.consumption = Ledger(settings=settings, recorder=recorder, store=store, pager=pager)

    async def run(
        self,
        wakeups: AsyncIterable[str],
        *,
        task_status: TaskStatus[Bus] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Long-running task: reconcile, adopt and scan, then watch every inbox (and take
        ``wakeups``: agent ids whose inbox may go in now, netskyd.ports.Wake) until
        cancelled. ``await tg.start(bus.run, wakeups)`` returns the running bus."""
        self.paths.channels.mkdir(parents=True, exist_ok=True)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self.reconcile()
            self.rescan()
            tg.start_soon(self._take_wakeups, wakeups)
            task_status.started(self)
            await watch(self)
            tg.cancel_scope.cancel()

    async def _take_wakeups(self, wakeups: AsyncIterable[str]) -> None:
        async for agent in wakeups:
            self.kick(agent)

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    # -- scheduling ---------------------------------------------------------------

    def agents_with_channels(self) -> list[str]:
        """Agents that have a channel directory, in reading order."""
        names = [n for n in box_entries(self.paths.channels) if is_agent_id(n)]
        return sorted(names, key=sort_key)

    def in_flight(self) -> int:
        """Envelopes claimed but not yet acked or poisoned, across all agents."""
        return sum(len(box_entries(self.paths.channel(a, "claimed")))
                   for a in self.agents_with_channels())

    def rescan(self) -> None:
        """Kick every agent with pending, claimed or outbox entries (startup and each tick)."""
        p = self.paths
        for agent in self.agents_with_channels():
            if box_entries(p.channel(agent, "inbox")) or box_entries(p.channel(agent, "claimed")):
                self.kick(agent)
            if box_entries(p.channel(agent, "outbox")):
                self.kick_outbox(agent)

    def kick(self, agent: str) -> None:
        """Ask for ``agent``'s inbox to be drained soon (coalesces repeated kicks)."""
        self._schedule(agent, self.drain)

    def kick_outbox(self, agent: str) -> None:
        """Ask for ``agent``'s outbox to be forwarded soon."""
        self._schedule(f"outbox:{agent}", lambda _key: self.forward_outbox(agent))

    def _schedule(self, key: str, fn: Callable[[str], Awaitable[int]]) -> None:
        if self._tg is None:
            return
        if key in self._running:
            self._again.add(key)
            return
        self._running.add(key)
        self._tg.start_soon(self._loop, key, fn)

    async def _loop(self, key: str, fn: Callable[[str], Awaitable[int]]) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    await fn(key)
                except Exception as e:  # never out of the watcher: the lease re-queues claims
                    self.recorder.log.exception("bus.error", key=key)
                    with contextlib.suppress(Exception):
                        await self.recorder.event(
                            "bus.error", level="error", key=key, error=f"{type(e).__name__}: {e}"
                        )
                if key not in self._again:
                    return
        finally:
            self._running.discard(key)


def _split(path: str) -> tuple[str, str, str]:
    """``(grandparent dir, parent name, name)`` of a path, with string operations only
    (this runs for every change the watcher reports)."""
    parent, _, name = path.rpartition(os.sep)
    grand, _, parent_name = parent.rpartition(os.sep)
    return grand, parent_name, name


async def _relay(source: anyio.Event, target: anyio.Event) -> None:
    await source.wait()
    target.set()


async def watch(bus: Bus) -> None:
    """Watch every agent's ``inbox/`` and ``outbox/`` (not the other boxes: claims and
    acks would triple the events) plus the channels root for new agents; a new agent
    restarts the watch with its boxes added, then a rescan covers the switch-over."""
    paths = bus.paths
    root = str(paths.channels)
    while not bus.stop.is_set():
        agents = bus.agents_with_channels()
        for agent in agents:
            paths.ensure_channel(agent)
        watched = [paths.channels] + [
            paths.channel(a, box) for a in agents for box in ("inbox", "outbox")
        ]
        restart = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_relay, bus.stop, restart)
            async for changes in awatch(
                *watched,
                debounce=20,
                step=1,
                stop_event=restart,
                rust_timeout=500,
                recursive=False,
                ignore_permission_denied=True,
                watch_filter=None,  # every change is looked at once, below
            ):
                for change, path in changes:
                    if change is Change.deleted:
                        continue
                    grand, box, name = _split(path)
                    if name.startswith("."):
                        continue
                    if box == "inbox" or box == "outbox":
                        agent = grand.rpartition(os.sep)[2]
                        if is_agent_id(agent):
                            (bus.kick if box == "inbox" else bus.kick_outbox)(agent)
                    elif path.rpartition(os.sep)[0] == root and is_agent_id(name):
                        if name not in agents:
                            restart.set()
            tg.cancel_scope.cancel()
        bus.rescan()
