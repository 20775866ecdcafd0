"""The scheduler in the daemon: cron entries and loops fired on time (docs/schedule.md).

``Scheduler.run`` sleeps until the soonest due time (not the 60 s tick), and at most
``cron_watch_s`` (cron.toml is looked at that often for an owner's edit; a command that
edits it, or creates a loop, wakes the scheduler at once). For each due entry it asks the
pure decisions (``netskyd.schedule.plan``) what to fire, then, per fire:

1. **agent gone?** The target is not agent0, agentinfinity or a clone of the desired
   constellation: the fire is recorded ``refused`` and reported once (journal
   ``schedule.agent_missing``, ``cron ls``, ``status``).
2. **still pending?** The entry's previous envelope is still in the target's ``inbox/``
   or ``claimed/`` (the agent is down, parked on a limit, hung): the slot is folded into
   that fire (``fires.coalesced``, journal ``schedule.coalesced``); never two pending.
   (``catchup = "all"`` waits instead: each missed slot goes, one at a time.)
3. **persist, then send.** The fire's row, with the whole envelope, is committed first
   (the slot is handled from then on: a crash can never fire it again), then the
   envelope goes into the inbox and the row is marked ``sent``. A row still
   ``persisted`` at start (or after an inbox was full) is sent again with the same
   envelope id, unless its envelope is already in a box or the bus's records: the
   at-least-once of the bus's envelope ids, never a second slot.

Journal events: ``schedule.fired`` (kind, entry, agent, slot, late_s, missed, envelope),
``schedule.skipped``, ``schedule.coalesced``, ``schedule.agent_missing``,
``schedule.crontab_loaded`` / ``schedule.crontab_invalid``, ``schedule.loop_created`` /
``schedule.loop_ended``, ``schedule.resent``, ``schedule.send_deferred``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from netsky_shared.errors import NetskyError
from netsky_shared.ids import ROOT, WATCHDOG, rfc3339
from netsky_shared.maildir import (
    atomic_write_bytes,
    envelope_filename,
    fsync_dir,
    new_envelope,
    publish,
    stage,
)
from netsky_shared.paths import Paths
from netskyd.faults import crash_point
from netskyd.ports import AgentView, Clock, SettingsView
from netskyd.schedule import crontab, plan
from netskyd.schedule.commands import ScheduleCommands
from netskyd.schedule.crontab import CronEntry, CrontabError
from netskyd.schedule.plan import Fire
from netskyd.schedule.texts import cron_text, loop_text
from netskyd.store.recorder import Recorder
from netskyd.store.schedule import ScheduleRecords

#: Sender of each kind of fire (ARCHITECTURE.md, "Scheduling").
SENDERS = {"cron": "agentcron", "loop": "agentloop"}
#: A ``catchup = "all"`` entry whose previous fire is still pending looks again this soon.
PENDING_RECHECK_S = 2.0
#: After a pass failed (a store error, a full disk), the next waits this long.
FAILED_PASS_BACKOFF_S = 5.0
#: Deadline of one pass over what is due (store writes, inbox files).
PASS_DEADLINE_S = 60.0


@dataclass
class Slotted:
    """What the scheduler keeps of one cron entry or loop between passes. ``key`` is
    ``("cron", name)`` or ``("loop", str(id))``; ``handled`` the newest slot a fire row
    stands for; ``sent`` how many fires put an envelope on its way; ``last`` the newest
    sending fire (its row: id, agent, outcome, envelope_file, coalesced); ``next_at`` when
    to look again (epoch s, inf: never)."""

    key: tuple[str, str]
    handled: float | None = None
    sent: int = 0
    last: dict[str, Any] | None = None
    next_at: float = 0.0
    missing: bool = False


class Scheduler(ScheduleCommands):
    """Fires cron entries (cron.toml) and loops (meta.db) into agents' inboxes."""

    def __init__(
        self,
        *,
        settings: SettingsView,
        records: ScheduleRecords,
        recorder: Recorder,
        agents: AgentView,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.records = records
        self.recorder = recorder
        self.agents = agents
        self._clock = clock
        #: The cron entries in force (the last good cron.toml), by name.
        self.entries: dict[str, CronEntry] = {}
        #: Each entry's baseline row (``cron_entries``), by name.
        self.baselines: dict[str, dict[str, Any]] = {}
        #: Active loops (``loops`` rows), by id.
        self.loops: dict[int, dict[str, Any]] = {}
        self.slotted: dict[tuple[str, str], Slotted] = {}
        #: ``{"error", "ts", "running": "last-good" | "none"}`` while cron.toml is not
        #: valid; None when it is.
        self.crontab_error: dict[str, Any] | None = None
        self.crontab_loaded_ts: str | None = None
        self._crontab_sig: tuple[int, int, int] | None = None
        self._next_watch = 0.0
        self._unsent: set[int] = set()
        self._wake = anyio.Event()
        self._edit_lock = anyio.Lock()
        self.fired_count = 0
        self.coalesced_count = 0
        self.refused_count = 0
        self.passes = 0

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    def now(self) -> float:
        """The scheduler's clock: the daemon's, plus ``debug_clock_offset_s`` (tests)."""
        return self._clock() + self.settings().debug_clock_offset_s

    def wake(self) -> None:
        """Look at what is due now (after an edit, a new loop)."""
        self._wake.set()

    # ----- the task ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[Scheduler]) -> None:
        """Load, send what a crash left persisted, say started, then fire forever."""
        await self.load()
        task_status.started(self)
        while True:
            wait = await self.one_pass()
            with anyio.move_on_after(wait):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def one_pass(self) -> float:
        """Watch cron.toml, resend what waits, fire what is due; returns how long to sleep
        (s). A pass that fails is logged and retried after a back-off: the scheduler
        never takes the daemon down."""
        self.passes += 1
        try:
            with anyio.fail_after(PASS_DEADLINE_S):
                now = self.now()
                if now >= self._next_watch:
                    self._next_watch = now + self.settings().cron_watch_s
                    await self.watch_crontab()
                if self._unsent:
                    await self.resend(sorted(self._unsent))
                await self.fire_due(now)
        except Exception as e:  # noqa: BLE001 - a pass must not end the daemon
            await self.recorder.event(
                "schedule.pass_failed", level="error", error=f"{type(e).__name__}: {e}"
            )
            return FAILED_PASS_BACKOFF_S
        now = self.now()
        soonest = min((s.next_at for s in self.slotted.values()), default=math.inf)
        until = min(soonest, self._next_watch)
        if self._unsent:
            until = min(until, now + PENDING_RECHECK_S)
        return max(0.0, until - now)

    async def load(self) -> None:
        """At start: cron.toml (or the last good copy), baselines, active loops, each
        entry's fires so far; then every fire a crash left ``persisted`` is sent."""
        self.baselines = await self.records.cron_entries()
        for row in await self.records.loops(active_only=True):
            self.loops[row["id"]] = row
        latest = {("cron", e): r for e, r in (await self.records.latest("cron")).items()}
        latest |= {("loop", e): r for e, r in (await self.records.latest("loop")).items()}
        for key, r in latest.items():
            s = self.slotted.setdefault(key, Slotted(key))
            s.handled, s.sent = r["handled"], int(r["sent"] or 0)
            s.last = await self.records.last_sending(*key)
        await self.watch_crontab(start=True)
        for loop_id in self.loops:
            self.slotted.setdefault(("loop", str(loop_id)), Slotted(("loop", str(loop_id))))
        unsent = await self.records.unsent()
        if unsent:
            await self.resend([r["id"] for r in unsent], rows=unsent)

    # ----- cron.toml --------------------------------------------------------------------------

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.paths.cron_toml)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def watch_crontab(self, *, start: bool = False) -> None:
        """Read cron.toml again when its stat changed (or at ``start``)."""
        sig = self._signature()
        if sig == self._crontab_sig and not start:
            return
        self._crontab_sig = sig
        await self.reload(start=start)

    async def reload(self, *, start: bool = False) -> None:
        """Read cron.toml; keep the last good entries when it is not valid (and say so
        once per version of the file). At start, the last good copy stands in for a
        cron.toml that is not valid."""
        try:
            entries = await anyio.to_thread.run_sync(self._read_file, self.paths.cron_toml)
        except CrontabError as e:
            fresh = self.crontab_error is None or self.crontab_error["error"] != str(e)
            running = "last-good"
            if start:
                try:
                    last_good = await anyio.to_thread.run_sync(
                        self._read_file, self.paths.cron_last_good
                    )
                except CrontabError:
                    last_good = []
                    running = "none"
                await self._adopt(last_good)
            self.crontab_error = {"error": str(e), "ts": rfc3339(self.now()), "running": running}
            if fresh:
                await self.recorder.event(
                    "schedule.crontab_invalid", level="warning", error=str(e),
                    running=running, entries=len(self.entries),
                )  # fmt: skip
            return
        self.crontab_error = None
        await self._adopt(entries)
        self.crontab_loaded_ts = rfc3339(self.now())
        text = await anyio.to_thread.run_sync(self._text_of, self.paths.cron_toml)
        await anyio.to_thread.run_sync(self._save_last_good, text)
        await self.recorder.event("schedule.crontab_loaded", entries=len(entries))

    def _read_file(self, path: Any) -> list[CronEntry]:
        """The entries of a cron file; a missing file has none. Raises CrontabError (a
        file that is too large is refused before it is read whole)."""
        return crontab.read(self._text_of(path))

    def _text_of(self, path: Any) -> str:
        try:
            with open(path, "rb") as f:
                data = f.read(crontab.MAX_BYTES + 1)
        except FileNotFoundError:
            return ""
        except OSError as e:
            raise CrontabError(f"cannot read {path}: {e.strerror or e}") from e
        if len(data) > crontab.MAX_BYTES:
            raise CrontabError(f"cron.toml is over {crontab.MAX_BYTES} bytes; not read")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CrontabError(f"cron.toml is not UTF-8 (byte {e.start}: {e.reason})") from e

    def _save_last_good(self, text: str) -> None:
        target = self.paths.cron_last_good
        try:
            if target.read_text(encoding="utf-8") == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        atomic_write_bytes(target, text.encode())

    async def _adopt(self, entries: list[CronEntry]) -> None:
        """Make ``entries`` the ones in force: a new entry, one whose schedule or zone
        changed, or one resumed counts its slots from now (its baseline); an entry gone
        from the file is forgotten (its fires stay on record)."""
        now = self.now()
        new = {e.name: e for e in entries[: self.settings().schedule_max_entries]}
        for name in set(self.entries) - set(new):
            self.slotted.pop(("cron", name), None)
            self.baselines.pop(name, None)
            await self.records.forget_cron_entry(name)
        for e in new.values():
            b = self.baselines.get(e.name)
            key = ("cron", e.name)
            renewed = (
                b is None
                or (b["schedule"], b["tz"]) != (e.schedule, e.tz)
                or (bool(b["paused"]) and not e.paused)
            )
            if renewed or (b is not None and bool(b["paused"]) != e.paused):
                baseline = now if renewed else float(b["baseline"]) if b else now
                await self.records.set_cron_entry(
                    e.name, e.schedule, e.tz, e.paused, baseline, rfc3339(now)
                )
                self.baselines[e.name] = {
                    "name": e.name, "schedule": e.schedule, "tz": e.tz,
                    "paused": int(e.paused), "baseline": baseline,
                }  # fmt: skip
            s = self.slotted.setdefault(key, Slotted(key))
            s.next_at = 0.0  # decide again
        self.entries = new

    # ----- firing -----------------------------------------------------------------------------

    async def fire_due(self, now: float) -> None:
        """Every cron entry and loop due at ``now``, soonest first; the journal rows of
        the pass go in one batch."""
        due = sorted(
            (s for s in self.slotted.values() if s.next_at <= now), key=lambda s: s.next_at
        )
        batch: list[tuple[Slotted, dict[str, Any], dict[str, Any]]] = []
        for s in due:
            try:
                if s.key[0] == "cron":
                    await self._cron_due(s, now, batch)
                else:
                    await self._loop_due(s, now, batch)
            except plan.ScheduleError as e:  # checked when added; a zone database change
                s.next_at = math.inf
                await self.recorder.event(
                    "schedule.entry_failed", level="error", kind=s.key[0], entry=s.key[1],
                    error=str(e),
                )  # fmt: skip
        if batch:
            await self._persist_and_send(batch)

    async def _persist_and_send(
        self, batch: list[tuple[Slotted, dict[str, Any], dict[str, Any]]]
    ) -> None:
        """The fires of one pass: their rows committed together (each slot handled from
        then on), then their envelopes into the inboxes (one fsync per inbox), then the
        rows marked sent; one journal batch."""
        ids = await self.records.add_fires([row for _, row, _ in batch])
        for (_, row, _), fire_id in zip(batch, ids, strict=True):
            row["id"] = fire_id  # the same dict the entry keeps as its last fire
        crash_point(self.settings(), "schedule.persisted")
        await self._send_many([(row["id"], env) for _, row, env in batch])
        await self.recorder.events(
            "schedule.fired",
            [
                {
                    "agent": row["agent"], "kind": row["kind"], "entry": row["entry"],
                    "slot": row["slot_ts"], "late_s": row["late_s"], "missed": row["missed"],
                    "envelope_id": row["envelope"],
                }  # fmt: skip
                for _, row, _ in batch
            ],
        )

    async def _cron_due(self, s: Slotted, now: float, batch: list[Any]) -> None:
        e = self.entries.get(s.key[1])
        if e is None:
            self.slotted.pop(s.key, None)
            return
        if e.paused:
            s.next_at = math.inf
            return
        baseline = float(self.baselines[e.name]["baseline"])
        last = s.handled if s.handled is not None and s.handled > baseline else None
        d = plan.decide(e.schedule, e.tz, e.catchup, last, baseline, now)
        s.next_at = d.next_at
        if d.skipped:
            assert d.handled is not None
            fire = Fire(d.handled, now - d.handled, d.skipped)
            await self._record(s, self._row(s, e.agent, fire, now, outcome="skipped",
                                            reason="catchup = none"))  # fmt: skip
            await self.recorder.event(
                "schedule.skipped", agent=e.agent, entry=e.name, slots=d.skipped
            )
        for fire in d.fires:
            body = cron_text(e.name, e.text, fire)
            went = await self._fire(s, e.agent, fire, now, body, batch, wait=e.catchup == "all")
            if went == "waiting":
                s.next_at = now + PENDING_RECHECK_S

    async def _loop_due(self, s: Slotted, now: float, batch: list[Any]) -> None:
        loop_id = int(s.key[1])
        row = self.loops.get(loop_id)
        if row is None:
            self.slotted.pop(s.key, None)
            return
        count, until = row["count"], row["until"]
        if plan.loop_over(count, until, s.sent, now):
            await self._end_loop(loop_id, "done", self._end_reason(row, s.sent))
            return
        d = plan.loop_decide(float(row["created"]), float(row["interval_s"]), s.handled, now)
        s.next_at = d.next_at
        for fire in d.fires:
            body = loop_text(loop_id, row["text"], fire, s.sent + 1, count)
            await self._fire(s, row["agent"], fire, now, body, batch)
        if plan.loop_over(count, until, s.sent, s.next_at):
            await self._end_loop(loop_id, "done", self._end_reason(row, s.sent))

    @staticmethod
    def _end_reason(row: dict[str, Any], sent: int) -> str:
        if row["count"] is not None and sent >= row["count"]:
            return f"fired {sent} of {row['count']}"
        return f"until {rfc3339(float(row['until']), digits=0)} reached ({sent} fired)"

    async def _end_loop(self, loop_id: int, state: str, reason: str) -> None:
        row = self.loops.pop(loop_id, None)
        self.slotted.pop(("loop", str(loop_id)), None)
        await self.records.end_loop(loop_id, state, rfc3339(self.now()), reason)
        await self.recorder.event(
            "schedule.loop_ended", agent=row["agent"] if row else None, loop=loop_id,
            state=state, reason=reason,
        )  # fmt: skip

    def exists(self, agent: str) -> bool:
        """True for agent0, agentinfinity and the agents of the desired constellation
        (also while it is down: a fire waits in the inbox for them)."""
        return agent in (ROOT, WATCHDOG) or agent in self.agents.desired.agents

    def pending(self, s: Slotted) -> bool:
        """True while the entry's newest envelope has not left the target's inbox (not
        yet sent, or in ``tmp/``, ``inbox/`` or ``claimed/``)."""
        last = s.last
        if last is None:
            return False
        if last["outcome"] == "persisted":
            return True
        name = last.get("envelope_file")
        if not name:
            return False
        return any(
            os.path.exists(self.paths.channel(last["agent"], box) / name)
            for box in ("inbox", "claimed", "tmp")
        )

    async def _fire(
        self,
        s: Slotted,
        agent: str,
        fire: Fire,
        now: float,
        body: str,
        batch: list[tuple[Slotted, dict[str, Any], dict[str, Any]]],
        *,
        wait: bool = False,
    ) -> str:
        """One fire of ``s`` (module docstring): ``refused``, ``waiting`` (``wait`` and
        the previous one pending), ``coalesced``, or ``sent`` (its row and envelope
        added to the pass's ``batch``, persisted and sent together at the end of the
        pass: ``_persist_and_send``)."""
        if not self.exists(agent):
            why = f"{agent} is not part of the constellation"
            await self._record(s, self._row(s, agent, fire, now, outcome="refused", reason=why))
            self.refused_count += 1
            if not s.missing:
                s.missing = True
                await self.recorder.event(
                    "schedule.agent_missing", level="warning", agent=agent, kind=s.key[0],
                    entry=s.key[1],
                )  # fmt: skip
            return "refused"
        s.missing = False
        if self.pending(s):
            if wait:
                return "waiting"
            assert s.last is not None
            await self.records.coalesce(s.last["id"], fire.slot)
            s.last["coalesced"] = int(s.last.get("coalesced") or 0) + 1
            s.handled = max(s.handled or fire.slot, fire.slot)
            self.coalesced_count += 1
            await self.recorder.event(
                "schedule.coalesced", agent=agent, kind=s.key[0], entry=s.key[1],
                slot=rfc3339(fire.slot), into=s.last.get("envelope"),
            )  # fmt: skip
            return "coalesced"
        envelope = new_envelope(SENDERS[s.key[0]], agent, body, kind=s.key[0])
        row = self._row(s, agent, fire, now, outcome="persisted", envelope=envelope)
        self._keep(s, row)
        batch.append((s, row, envelope))
        self.fired_count += 1
        return "sent"

    async def _record(self, s: Slotted, row: dict[str, Any]) -> int:
        """Persist one fire row (``_row``) now, one committed statement, and keep it as
        ``s``'s state; returns its id."""
        row["id"] = await self.records.add_fire(row)
        self._keep(s, row)
        return int(row["id"])

    @staticmethod
    def _row(
        s: Slotted,
        agent: str,
        fire: Fire,
        now: float,
        *,
        outcome: str,
        envelope: dict[str, Any] | None = None,
        reason: str | None = None,
        through: float | None = None,
    ) -> dict[str, Any]:
        """A ``fires`` row (netskyd.store.schedule) for one fire of ``s``."""
        row: dict[str, Any] = {
            "kind": s.key[0], "entry": s.key[1], "agent": agent, "slot": fire.slot,
            "through": fire.slot if through is None else through,
            "slot_ts": rfc3339(fire.slot), "fired_at": rfc3339(now),
            "late_s": round(fire.late_s, 3), "missed": fire.missed, "outcome": outcome,
            "reason": reason, "coalesced": 0,
        }  # fmt: skip
        if envelope is not None:
            row |= {
                "envelope": envelope["id"],
                "envelope_file": envelope_filename(envelope),
                "envelope_json": json.dumps(envelope),
            }
        return row

    @staticmethod
    def _keep(s: Slotted, row: dict[str, Any]) -> None:
        """What ``s`` remembers of a fire row: the newest slot handled; for a sending row
        (one with an envelope) the count and the row itself (to see whether it is still
        pending)."""
        s.handled = max(s.handled or row["through"], row["through"])
        if row.get("envelope") is not None:
            s.sent += 1
            s.last = row

    async def _send(self, fire_id: int, envelope: dict[str, Any]) -> bool:
        """``_send_many`` of one fire; True when its envelope is in the inbox."""
        return not await self._send_many([(fire_id, envelope)])

    async def _send_many(self, fires: list[tuple[int, dict[str, Any]]]) -> set[int]:
        """Put persisted fires' envelopes in their inboxes (one worker thread, each inbox
        fsynced once) and mark their rows sent. One that cannot go (an inbox full, a
        disk error) stays persisted and is sent again on a later pass. Returns the ids
        of those that did not go."""
        st = self.settings()

        def put() -> dict[int, str]:
            failed: dict[int, str] = {}
            inboxes: set[Path] = set()
            for fire_id, envelope in fires:
                try:
                    tmp = stage(
                        st.paths, envelope, inbox_max_pending=st.inbox_max_pending,
                        envelope_max_bytes=max(st.envelope_max_bytes, 1 << 20),
                    )  # fmt: skip
                    inboxes.add(publish(tmp, sync=False).parent)
                except (NetskyError, OSError) as e:
                    failed[fire_id] = str(e)
            for d in inboxes:
                fsync_dir(d)
            return failed

        failed = await anyio.to_thread.run_sync(put)
        for fire_id, error in failed.items():
            if fire_id not in self._unsent:
                await self.recorder.event(
                    "schedule.send_deferred", level="warning", fire=fire_id, error=error
                )
            self._unsent.add(fire_id)
        went = [fire_id for fire_id, _ in fires if fire_id not in failed]
        await self.records.mark_sent(went, rfc3339(self.now()))
        for fire_id in went:
            self._unsent.discard(fire_id)
        sent = set(went)
        for s in self.slotted.values():
            if s.last is not None and s.last.get("id") in sent:
                s.last["outcome"] = "sent"
        return set(failed)

    async def resend(self, fire_ids: list[int], rows: list[dict[str, Any]] | None = None) -> None:
        """Send the fires still ``persisted`` (a crash between persist and send, a full
        inbox) with their own envelope, unless it is already in one of the target's
        boxes or in the bus's records (then the row is only marked sent)."""
        if rows is None:
            wanted = set(fire_ids)
            rows = [r for r in await self.records.unsent() if r["id"] in wanted]
        for r in rows:
            envelope = json.loads(r["envelope_json"])
            if await self._already_there(r):
                await self.records.mark_sent([r["id"]], rfc3339(self.now()))
                self._unsent.discard(r["id"])
                continue
            (self.paths.channel(r["agent"], "tmp") / r["envelope_file"]).unlink(missing_ok=True)
            if await self._send(r["id"], envelope):
                await self.recorder.event(
                    "schedule.resent", agent=r["agent"], fire=r["id"], envelope=r["envelope"]
                )

    async def _already_there(self, row: dict[str, Any]) -> bool:
        for box in ("inbox", "claimed", "delivered", "poison"):
            if (self.paths.channel(row["agent"], box) / row["envelope_file"]).exists():
                return True
        return await self.records.delivered(row["envelope"])
