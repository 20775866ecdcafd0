"""The inbox watcher: claim, validate, deliver and ack envelopes (happy path + poison).

Long-running task ``run(ctx)``: a startup scan adopts everything left in
``claimed/`` and ``inbox/``, then ``watchfiles`` reports new files in any
``channels/agent/*/inbox/`` and the ticker rescans as a backstop.

Per envelope (ARCHITECTURE.md, "The agent bus"):
claim (rename ``inbox/x`` -> ``claimed/x``) -> validate (regular file, size cap
before reading, UTF-8 JSON, schema, ``to`` is the inbox owner; failures go to
``poison/`` with ``<name>.reason.json``) -> deliver (bracketed paste of the
``<channel>`` blocks, then Enter as a separate key after ``paste_settle_ms``) ->
ack (rename to ``delivered/``, journal, meta.db). Envelopes are claimed only for
an agent that is ready, so nothing is pasted into a pane still starting up.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus
from pydantic import ValidationError
from watchfiles import Change, awatch

from netskyd.context import Context
from netskyd.envelope import Envelope, render_channel
from netskyd.errors import EnvelopeRejected, TmuxError
from netskyd.ids import is_agent_id
from netskyd.maildir import atomic_write_bytes, now_rfc3339


def validate(path: Path, owner: str, max_bytes: int) -> Envelope:
    """Check one claimed file and return its envelope.

    Raises EnvelopeRejected with ``rule`` one of: not-regular-file, too-large,
    not-utf8, not-json, schema, wrong-recipient.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise EnvelopeRejected("not-regular-file", f"mode {stat.filemode(st.st_mode)}")
    if st.st_size > max_bytes:
        raise EnvelopeRejected("too-large", f"{st.st_size} bytes > envelope_max_bytes={max_bytes}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        raw = f.read(max_bytes + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EnvelopeRejected("not-utf8", str(e)) from e
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise EnvelopeRejected("not-json", str(e)) from e
    try:
        envelope = Envelope.model_validate(value)
    except ValidationError as e:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        )
        raise EnvelopeRejected("schema", details) from e
    if envelope.to != owner:
        raise EnvelopeRejected("wrong-recipient", f"to={envelope.to!r} but inbox of {owner}")
    return envelope


class Bus:
    """Moves envelopes from inboxes into panes; one drain at a time per agent."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._tg: TaskGroup | None = None
        self._draining: set[str] = set()
        self._again: set[str] = set()
        self.stop = anyio.Event()
        self.delivered_count = 0
        self.poisoned_count = 0

    def agents_with_channels(self) -> list[str]:
        root = self.ctx.paths.channels
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and is_agent_id(p.name))

    def in_flight(self) -> int:
        """Envelopes claimed but not yet acked or poisoned, across all agents."""
        total = 0
        for agent in self.agents_with_channels():
            claimed = self.ctx.paths.channel(agent, "claimed")
            total += sum(1 for _ in claimed.glob("*.json")) if claimed.exists() else 0
        return total

    def rescan(self) -> None:
        """Kick every agent with pending or claimed envelopes (startup and each tick)."""
        for agent in self.agents_with_channels():
            p = self.ctx.paths
            if any(p.channel(agent, "inbox").glob("*.json")) or any(
                p.channel(agent, "claimed").glob("*.json")
            ):
                self.kick(agent)

    def kick(self, agent: str) -> None:
        """Ask for ``agent``'s inbox to be drained soon (coalesces repeated kicks)."""
        if self._tg is None:
            return
        if agent in self._draining:
            self._again.add(agent)
            return
        self._draining.add(agent)
        self._tg.start_soon(self._drain_loop, agent)

    async def _drain_loop(self, agent: str) -> None:
        try:
            while True:
                self._again.discard(agent)
                await self.drain(agent)
                if agent not in self._again:
                    return
        finally:
            self._draining.discard(agent)

    async def drain(self, agent: str) -> int:
        """Claim, validate, deliver and ack what waits for ``agent``; return how many delivered."""
        sup = self.ctx.sup()
        st = sup.agents.get(agent)
        if st is None or not st.ready or not st.alive:
            return 0  # stays queued; the agent's readiness kicks the bus again
        paths = self.ctx.paths
        claimed_dir = paths.channel(agent, "claimed")
        claimed_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(paths.channel(agent, "inbox").glob("*.json")):
            try:
                os.rename(f, claimed_dir / f.name)
            except FileNotFoundError:
                continue
        batch: list[tuple[Path, Envelope]] = []
        for f in sorted(claimed_dir.glob("*.json")):
            try:
                batch.append((f, validate(f, agent, self.ctx.settings.envelope_max_bytes)))
            except EnvelopeRejected as e:
                await self.poison(agent, f, e.rule, e.detail)
            except OSError as e:
                await self.poison(agent, f, "unreadable", str(e))
        if not batch:
            return 0
        envelopes = [env for _, env in batch]
        try:
            await self.paste(agent, render_channel(envelopes))
        except TmuxError as e:
            for f, _ in batch:  # back to the queue, in order; the next kick retries
                os.rename(f, paths.channel(agent, "inbox") / f.name)
            await self.ctx.recorder.event(
                "envelope.delivery_failed",
                level="warning",
                agent=agent,
                count=len(batch),
                error=str(e),
            )
            return 0
        delivered_ts = now_rfc3339()
        for f, env in batch:
            duplicate = await self.ctx.store.was_delivered(env.id)
            os.rename(f, paths.channel(agent, "delivered") / f.name)
            await self.ctx.recorder.event(
                "envelope.delivered",
                agent=agent,
                envelope_id=env.id,
                sender=env.sender,
                kind=env.kind,
                via="pane",
                duplicate=duplicate,
            )
            await self.ctx.store.add_message(
                envelope_id=env.id,
                sender=env.sender,
                recipient=agent,
                kind=env.kind,
                envelope_ts=env.ts,
                file=f.name,
                status="delivered",
                delivered_ts=delivered_ts,
                via="pane",
                duplicate=duplicate,
            )
        st.last_delivery_ts = delivered_ts
        self.delivered_count += len(batch)
        return len(batch)

    async def paste(self, agent: str, text: str) -> None:
        """Bracketed paste into the agent's pane, then Enter as a separate key."""
        tmux = self.ctx.tmux
        await tmux.paste(agent, text, buffer=f"netsky-{agent}-{uuid.uuid4().hex[:8]}")
        await anyio.sleep(self.ctx.settings.paste_settle_ms / 1000)
        await tmux.send_keys(agent, "Enter")

    async def poison(self, agent: str, path: Path, rule: str, detail: str) -> None:
        """Move a bad file to ``poison/`` beside ``<name>.reason.json``; never raises."""
        poison_dir = self.ctx.paths.channel(agent, "poison")
        poison_dir.mkdir(parents=True, exist_ok=True)
        target = poison_dir / path.name
        reason = {"rule": rule, "detail": detail, "ts": now_rfc3339(), "file": path.name}
        try:
            atomic_write_bytes(
                poison_dir / f"{path.name}.reason.json",
                (json.dumps(reason, indent=2) + "\n").encode(),
            )
            os.rename(path, target)
        except OSError as e:
            reason["move_error"] = str(e)
        self.poisoned_count += 1
        await self.ctx.recorder.event("envelope.poisoned", level="warning", agent=agent, **reason)
        await self.ctx.store.add_message(
            envelope_id=None,
            sender=None,
            recipient=agent,
            kind=None,
            envelope_ts=None,
            file=path.name,
            status="poisoned",
            delivered_ts=None,
            via=None,
            reason=f"{rule}: {detail}",
        )


def _inbox_agent(path: str) -> str | None:
    p = Path(path)
    if p.parent.name == "inbox" and p.name.endswith(".json") and is_agent_id(p.parent.parent.name):
        return p.parent.parent.name
    return None


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: startup scan, then watch every inbox until cancelled."""
    bus = ctx.the_bus()
    root = ctx.paths.channels
    root.mkdir(parents=True, exist_ok=True)
    async with anyio.create_task_group() as tg:
        bus._tg = tg
        bus.rescan()
        task_status.started()
        async for changes in awatch(
            root,
            debounce=20,
            step=5,
            stop_event=bus.stop,
            rust_timeout=500,
            recursive=True,
            ignore_permission_denied=True,
        ):
            for change, path in changes:
                if change is not Change.deleted:
                    agent = _inbox_agent(path)
                    if agent is not None:
                        bus.kick(agent)
        tg.cancel_scope.cancel()
