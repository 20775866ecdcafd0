"""What ``netskyctl cron`` and ``netskyctl loop`` ask of the scheduler (docs/schedule.md).

A mixin of ``netskyd.schedule.scheduler.Scheduler``. ``cron add|rm|pause|resume`` edit
cron.toml (through ``netskyd.schedule.crontab``: the owner's comments stay) with an
atomic write, then read it again at once; a cron.toml that is not valid is not edited
(the error names its line). Loops live in meta.db. Row shapes (docs/protocol.md):

- EntryRow: ``{name, schedule, tz, agent, text, catchup, paused, state, next: [RFC 3339,
  up to 3], last_fire: FireRow | null, pending: bool}``; ``state`` is ``ok``, ``paused``,
  ``pending`` (its last envelope waits in the inbox) or ``agent-missing``.
- LoopRow: a ``loops`` row plus ``fired`` (envelopes sent), ``next`` and ``pending``.
- FireRow: a ``fires`` row without the envelope copy.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

import anyio

from netsky_shared.errors import ScheduleFull, UnknownAgent, UnknownEntry
from netsky_shared.ids import is_agent_id, rfc3339
from netsky_shared.maildir import BadText, atomic_write_bytes, check_text, new_envelope
from netskyd.schedule import crontab, plan
from netskyd.schedule.crontab import CronEntry, CrontabError

if TYPE_CHECKING:
    from collections.abc import Callable

    from netsky_shared.paths import Paths
    from netskyd.ports import SettingsView
    from netskyd.schedule.plan import Fire
    from netskyd.schedule.scheduler import Slotted
    from netskyd.store.recorder import Recorder
    from netskyd.store.schedule import ScheduleRecords

#: Longest loop text (the same cap as a cron entry's).
MAX_LOOP_TEXT_BYTES = crontab.MAX_TEXT_BYTES


class ScheduleCommands:
    """The commands half of the Scheduler (module docstring); the host (Scheduler)
    provides the attributes below."""

    settings: SettingsView
    records: ScheduleRecords
    recorder: Recorder
    entries: dict[str, CronEntry]
    baselines: dict[str, dict[str, Any]]
    loops: dict[int, dict[str, Any]]
    slotted: dict[tuple[str, str], Slotted]
    crontab_error: dict[str, Any] | None
    crontab_loaded_ts: str | None
    fired_count: int
    coalesced_count: int
    refused_count: int
    _crontab_sig: tuple[int, int, int] | None
    _unsent: set[int]
    _edit_lock: anyio.Lock

    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...
        def now(self) -> float: ...
        def wake(self) -> None: ...
        def exists(self, agent: str) -> bool: ...
        def pending(self, s: Slotted) -> bool: ...
        def _signature(self) -> tuple[int, int, int] | None: ...
        def _text_of(self, path: Any) -> str: ...
        async def reload(self, *, start: bool = False) -> None: ...
        async def _end_loop(self, loop_id: int, state: str, reason: str) -> None: ...
        async def _send(self, fire_id: int, envelope: dict[str, Any]) -> bool: ...
        async def _record(self, s: Slotted, row: dict[str, Any]) -> int: ...
        @staticmethod
        def _row(
            s: Slotted, agent: str, fire: Fire, now: float, *, outcome: str,
            envelope: dict[str, Any] | None = None, reason: str | None = None,
            through: float | None = None,
        ) -> dict[str, Any]: ...  # fmt: skip

    # ----- cron -------------------------------------------------------------------------------

    async def cron_add(self, entry: CronEntry) -> dict[str, Any]:
        """Add ``entry`` to cron.toml. Raises CrontabError (a bad entry, a taken name, a
        cron.toml that is not valid now), UnknownAgent (no such agent in the
        constellation), ScheduleFull."""
        crontab.check_entry(crontab.fields_of(entry))
        self._check_agent(entry.agent)
        if len(self.entries) >= self.settings().schedule_max_entries:
            raise ScheduleFull(
                f"{len(self.entries)} cron entries already (schedule_max_entries)"
            )
        await self._edit(lambda text: crontab.add(text, entry))
        await self.recorder.event("schedule.cron_added", agent=entry.agent, entry=entry.name)
        return {"entry": self.entry_row(entry.name)}

    async def cron_rm(self, name: str) -> dict[str, Any]:
        """Remove entry ``name`` from cron.toml. Raises UnknownEntry, CrontabError."""
        entry = self._entry(name)
        await self._edit(lambda text: crontab.remove(text, name))
        await self.recorder.event("schedule.cron_removed", agent=entry.agent, entry=name)
        return {"removed": name}

    async def cron_pause(self, name: str, paused: bool) -> dict[str, Any]:
        """Pause or resume entry ``name``; a resumed entry counts its slots from now (the
        slots it was paused for are not missed). Raises UnknownEntry, CrontabError."""
        self._entry(name)
        await self._edit(lambda text: crontab.set_paused(text, name, paused))
        await self.recorder.event(
            "schedule.cron_paused" if paused else "schedule.cron_resumed", entry=name
        )
        return {"entry": self.entry_row(name)}

    async def cron_run(self, name: str) -> dict[str, Any]:
        """Fire entry ``name`` now (paused or not), outside its schedule: the slots it
        handles stay as they were. Returns ``{"entry", "fire": FireRow}``. Raises
        UnknownEntry, UnknownAgent."""
        from netskyd.schedule.scheduler import Slotted
        from netskyd.schedule.texts import cron_text

        entry = self._entry(name)
        self._check_agent(entry.agent)
        now = self.now()
        s = self.slotted.setdefault(("cron", name), Slotted(("cron", name)))
        through = s.handled if s.handled is not None else float(
            self.baselines[name]["baseline"]
        )
        fire = plan.Fire(now, 0.0, 0)
        body = cron_text(name, entry.text, fire, by_hand=True)
        envelope = new_envelope("agentcron", entry.agent, body, kind="cron")
        row = self._row(s, entry.agent, fire, now, outcome="persisted", envelope=envelope,
                        reason="run by hand", through=through)  # fmt: skip
        fire_id = await self._record(s, row)
        await self._send(fire_id, envelope)
        self.fired_count += 1
        await self.recorder.event(
            "schedule.fired", agent=entry.agent, kind="cron", entry=name, slot=rfc3339(now),
            late_s=0.0, missed=0, envelope_id=envelope["id"], by_hand=True,
        )  # fmt: skip
        fires = await self.records.fires(kind="cron", entry=name, limit=1)
        return {"entry": self.entry_row(name), "fire": fires[0] if fires else None}

    async def cron_ls(self) -> dict[str, Any]:
        """``{"entries": [EntryRow], "crontab": {path, error, loaded_ts, last_good}}``."""
        return {
            "entries": [self.entry_row(n) for n in self.entries],
            "crontab": {
                "path": str(self.paths.cron_toml),
                "error": self.crontab_error,
                "loaded_ts": self.crontab_loaded_ts,
                "last_good": str(self.paths.cron_last_good),
            },
        }

    def entry_row(self, name: str) -> dict[str, Any]:
        """EntryRow of entry ``name`` (module docstring)."""
        e = self._entry(name)
        s = self.slotted.get(("cron", name))
        pending = s is not None and self.pending(s)
        if e.paused:
            state = "paused"
        elif s is not None and s.missing or not self.exists(e.agent):
            state = "agent-missing"
        else:
            state = "pending" if pending else "ok"
        return {
            "name": e.name, "schedule": e.schedule, "tz": e.tz, "agent": e.agent,
            "text": e.text, "catchup": e.catchup, "paused": e.paused, "state": state,
            "next": [] if e.paused else [rfc3339(t, digits=0) for t in self._cron_next(e, 3)],
            "last_fire": _public(s.last) if s is not None and s.last else None,
            "pending": pending,
        }  # fmt: skip

    def _cron_next(self, e: CronEntry, n: int) -> list[float]:
        out: list[float] = []
        t = self.now()
        for _ in range(n):
            t = plan.next_slot(e.schedule, e.tz, t)
            out.append(t)
        return out

    def _entry(self, name: str) -> CronEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownEntry(f"no cron entry named {name!r} (netskyctl cron ls)")
        return entry

    def _check_agent(self, agent: str) -> None:
        if not is_agent_id(agent):
            raise UnknownAgent(f"not an agent id: {agent!r}")
        if not self.exists(agent):
            raise UnknownAgent(
                f"{agent} is not part of the constellation (agent0, agentinfinity and the "
                "clones of 'netskyctl up N'); a fire for it would have nowhere to go"
            )

    async def _edit(self, change: Callable[[str], str]) -> None:
        """Apply ``change(text) -> text`` to cron.toml, write it atomically, read it
        again. Raises CrontabError (nothing is written)."""
        async with self._edit_lock:
            path = self.paths.cron_toml
            text = await anyio.to_thread.run_sync(self._text_of, path)
            new = change(text)
            await anyio.to_thread.run_sync(lambda: atomic_write_bytes(path, new.encode()))
            self._crontab_sig = self._signature()
            await self.reload()
            if self.crontab_error is not None:  # pragma: no cover - checked before writing
                raise CrontabError(self.crontab_error["error"])
        self.wake()

    # ----- loops ------------------------------------------------------------------------------

    async def loop_create(
        self,
        agent: str,
        interval: str,
        text: str,
        *,
        count: int | None = None,
        until: str | None = None,
        by: str = "owner",
    ) -> dict[str, Any]:
        """A loop that fires ``text`` into ``agent`` every ``interval`` (``10m``), first
        one interval from now, ending after ``count`` fires or at ``until`` (RFC 3339, or
        a duration from now such as ``2h``). Returns ``{"loop": LoopRow}``. Raises
        ScheduleError / ValueError (bad interval, until, count or text), UnknownAgent,
        ScheduleFull."""
        self._check_agent(agent)
        interval_s = plan.parse_interval(interval)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        if len(text.encode()) > MAX_LOOP_TEXT_BYTES or not text.strip():
            raise ValueError(f"text must be 1 to {MAX_LOOP_TEXT_BYTES} bytes")
        try:
            text = check_text(text)
        except BadText as e:
            raise ValueError(str(e)) from e
        now = self.now()
        until_s = None if until is None else _until(until, now)
        if until_s is not None and until_s <= now:
            raise ValueError(f"until {until!r} is in the past")
        if len(self.loops) >= self.settings().schedule_max_entries:
            raise ScheduleFull(f"{len(self.loops)} loops already (schedule_max_entries)")
        ts = rfc3339(now)
        row: dict[str, Any] = {
            "ts": ts, "agent": agent, "created_by": by, "interval_s": interval_s,
            "text": text, "created": now, "count": count, "until": until_s,
            "state": "active", "state_ts": ts,
        }  # fmt: skip
        row["id"] = await self.records.add_loop(row)
        row["reason"] = None
        from netskyd.schedule.scheduler import Slotted

        key = ("loop", str(row["id"]))
        self.loops[row["id"]] = row
        self.slotted[key] = Slotted(key, next_at=now + interval_s)
        await self.recorder.event(
            "schedule.loop_created", agent=agent, loop=row["id"], interval_s=interval_s,
            count=count, until=until_s, by=by,
        )  # fmt: skip
        self.wake()
        return {"loop": self.loop_row(row)}

    async def loop_ls(self, *, every: bool = False) -> dict[str, Any]:
        """``{"loops": [LoopRow]}``: the active ones (``every``: all, oldest first)."""
        rows = await self.records.loops(active_only=not every)
        sent = {int(e): int(r["sent"] or 0) for e, r in (await self.records.latest("loop")).items()}
        return {"loops": [self.loop_row(r, sent.get(r["id"], 0)) for r in rows]}

    async def loop_rm(self, loop_id: int) -> dict[str, Any]:
        """End loop ``loop_id`` (state ``removed``). Raises UnknownEntry."""
        if loop_id not in self.loops:
            row = await self.records.loop(loop_id)
            if row is None:
                raise UnknownEntry(f"no loop {loop_id} (netskyctl loop ls)")
            return {"loop": self.loop_row(row)}  # already ended: nothing to do
        fired = self.slotted[("loop", str(loop_id))].sent
        await self._end_loop(loop_id, "removed", "loop rm")
        row = await self.records.loop(loop_id)
        assert row is not None
        return {"loop": self.loop_row(row, fired)}

    def loop_row(self, row: dict[str, Any], fired: int | None = None) -> dict[str, Any]:
        """LoopRow (module docstring); ``fired`` for a loop that ended (else the count kept
        while it runs)."""
        s = self.slotted.get(("loop", str(row["id"])))
        active = row["state"] == "active" and s is not None
        return {
            **row,
            "fired": s.sent if s is not None else fired,
            "next": [rfc3339(t, digits=0) for t in self._loop_next(row, s, 3)] if active else [],
            "pending": bool(active and s is not None and self.pending(s)),
        }

    def _loop_next(self, row: dict[str, Any], s: Slotted | None, n: int) -> list[float]:
        if s is None or not math.isfinite(s.next_at):
            return []
        out: list[float] = []
        t = max(s.next_at, self.now()) if s.next_at else self.now()
        step = float(row["interval_s"])
        grid = float(row["created"])
        k = max(1, math.ceil((t - grid) / step))
        fired = s.sent
        for i in range(n):
            at = grid + (k + i) * step
            if plan.loop_over(row["count"], row["until"], fired + i, at):
                break
            out.append(at)
        return out

    # ----- records and status -----------------------------------------------------------------

    async def fires(
        self, *, kind: str | None = None, entry: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """``{"fires": [FireRow, newest first]}``."""
        return {"fires": await self.records.fires(kind=kind, entry=entry, limit=limit)}

    def next_fires(self, n: int = 3) -> list[dict[str, Any]]:
        """The next ``n`` fires across cron entries and loops: ``[{kind, entry, agent,
        at}]``, soonest first."""
        soon = heapq.nsmallest(
            n,
            (s for s in self.slotted.values() if math.isfinite(s.next_at)),
            key=lambda s: s.next_at,
        )
        out: list[tuple[float, dict[str, Any]]] = []
        for s in soon:
            if s.key[0] == "cron":
                e = self.entries.get(s.key[1])
                if e is None or e.paused:
                    continue
                times, agent = self._cron_next(e, n), e.agent
            else:
                row = self.loops.get(int(s.key[1]))
                if row is None:
                    continue
                times, agent = self._loop_next(row, s, n), row["agent"]
            out += [(t, {"kind": s.key[0], "entry": s.key[1], "agent": agent}) for t in times]
        out.sort(key=lambda p: p[0])
        return [{**d, "at": rfc3339(t, digits=0)} for t, d in out[:n]]

    def summary(self) -> dict[str, Any]:
        """The ``schedule`` part of ``status``: ``{cron_entries, loops, next: [...],
        crontab_error, fired, coalesced, refused, unsent, agent_missing: [entry keys]}``."""
        return {
            "cron_entries": len(self.entries),
            "loops": len(self.loops),
            "next": self.next_fires(3),
            "crontab_error": self.crontab_error,
            "fired": self.fired_count,
            "coalesced": self.coalesced_count,
            "refused": self.refused_count,
            "unsent": len(self._unsent),
            "agent_missing": [f"{k}:{e}" for (k, e), s in self.slotted.items() if s.missing],
        }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("envelope_json", "envelope_file")}


def _until(text: str, now: float) -> float:
    """``until`` as epoch s: an RFC 3339 time, or a duration from ``now`` (``2h``)."""
    from netsky_shared.incidents import parse_rfc3339

    at = parse_rfc3339(text)
    if at is not None:
        return at
    try:
        return now + plan.parse_interval(text)
    except plan.ScheduleError as e:
        raise ValueError(
            f"until {text!r}: an RFC 3339 time (2026-12-24T18:00:00Z) or a duration (2h)"
        ) from e
