"""The scheduler's effects on a simulated clock (netskyd.schedule.scheduler): real meta.db,
real inbox files, real cron.toml; no daemon. Fires go into the inbox, a crash between
persist and send neither loses nor repeats a slot, a pending fire coalesces the next,
downtime follows the entry's catch-up policy, and a bad cron.toml keeps the last good one.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netsky_shared.errors import UnknownAgent, UnknownEntry
from netskyd.config import Settings
from netskyd.schedule import scheduler as scheduler_mod
from netskyd.schedule.crontab import CronEntry, CrontabError
from netskyd.schedule.scheduler import Scheduler
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder
from netskyd.store.schedule import ScheduleRecords
from netskyd.supervision.desired import Desired
from tests.busctx import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

#: Sunday 2026-12-06 10:00:30 UTC.
T0 = datetime(2026, 12, 6, 10, 0, 30, tzinfo=UTC).timestamp()
MINUTE = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Crew:
    """The AgentView port as far as the scheduler reads it: the desired constellation."""

    desired: Desired = field(
        default_factory=lambda: Desired(up=True, agents={"agent0": None, "agent1": None,
                                                         "agentinfinity": None})
    )  # fmt: skip
    agents: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    home: Path
    settings: Settings
    store: Store
    recorder: Recorder
    clock: FakeClock
    crew: Crew

    def scheduler(self) -> Scheduler:
        """A fresh scheduler over the same files: what a restarted daemon builds."""
        return Scheduler(
            settings=lambda: self.settings,
            records=ScheduleRecords(self.store),
            recorder=self.recorder,
            agents=self.crew,  # type: ignore[arg-type]
            clock=self.clock,
        )

    def box(self, agent: str, box: str = "inbox") -> list[dict[str, Any]]:
        d = self.settings.paths.channel(agent, box)
        if not d.is_dir():
            return []
        return [json.loads((d / n).read_text()) for n in sorted(os.listdir(d))]

    def take(self, agent: str) -> int:
        """The agent takes what waits: inbox/ -> delivered/ (what the bus does)."""
        inbox = self.settings.paths.channel(agent, "inbox")
        done = self.settings.paths.channel(agent, "delivered")
        done.mkdir(parents=True, exist_ok=True)
        names = os.listdir(inbox) if inbox.is_dir() else []
        for n in names:
            os.rename(inbox / n, done / n)
        return len(names)

    def write_crontab(self, text: str) -> None:
        path = self.settings.paths.cron_toml
        path.write_text(text)
        st = path.stat()  # a new mtime even within the same clock tick
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    async def events(self, name: str) -> list[dict[str, Any]]:
        rows = await self.store.rows("SELECT * FROM events WHERE event = ?", (name,))
        return [json.loads(r["fields"]) | {"agent": r["agent"]} for r in rows]


@asynccontextmanager
async def world(tmp_path: Path, **settings: Any) -> AsyncIterator[World]:
    s = Settings(home=tmp_path, cron_watch_s=1.0, **settings)
    for d in (s.paths.state, s.paths.logs, s.paths.channels):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(s.paths.db)
    try:
        yield World(tmp_path, s, store, Recorder(Journal(s.paths.logs), store),
                    FakeClock(T0), Crew())  # fmt: skip
    finally:
        await store.close()


def entry(name: str = "tick", schedule: str = "* * * * *", agent: str = "agent0",
          **kw: Any) -> CronEntry:  # fmt: skip
    return CronEntry(name, schedule, agent, f"do the {name} thing", **kw)


async def started(w: World) -> Scheduler:
    sched = w.scheduler()
    await sched.load()
    return sched


async def at(sched: Scheduler, w: World, t: float) -> float:
    """Move the clock to ``t`` and run one pass; returns how long the scheduler would sleep."""
    w.clock.now = t
    return await sched.one_pass()


async def fires(w: World, entry: str | None = None) -> list[dict[str, Any]]:
    rows = await ScheduleRecords(w.store).fires(entry=entry, limit=1000)
    return list(reversed(rows))


async def test_an_every_minute_entry_fires_into_the_inbox_at_the_minute(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry())
        minute = T0 - 30 + MINUTE  # 10:01:00
        sleep = await at(sched, w, T0 + 1)
        assert sleep == pytest.approx(min(minute - (T0 + 1), w.settings.cron_watch_s))
        assert w.box("agent0") == []
        await at(sched, w, minute + 0.25)
        (env,) = w.box("agent0")
        assert (env["from"], env["kind"], env["to"]) == ("agentcron", "cron", "agent0")
        assert env["text"] == "[cron tick]\ndo the tick thing"
        (row,) = await fires(w)
        assert row["outcome"] == "sent" and row["envelope"] == env["id"]
        assert row["late_s"] == pytest.approx(0.25) and row["slot"] == minute
        # the same minute does not fire twice, however often the scheduler wakes
        await at(sched, w, minute + 0.5)
        await at(sched, w, minute + 59)
        assert len(w.box("agent0")) == 1
        assert sched.summary()["next"][0] == {
            "kind": "cron", "entry": "tick", "agent": "agent0", "at": "2026-12-06T10:02:00Z"
        }  # fmt: skip


async def test_a_pending_fire_coalesces_the_next_slots_until_the_agent_takes_it(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry())
        base = T0 - 30 + MINUTE
        await at(sched, w, base + 0.1)
        await at(sched, w, base + MINUTE + 0.1)  # the agent has not taken the first
        await at(sched, w, base + 2 * MINUTE + 0.1)
        assert len(w.box("agent0")) == 1
        (row,) = await fires(w)
        assert row["coalesced"] == 2 and row["through"] == base + 2 * MINUTE
        assert sched.entry_row("tick")["state"] == "pending"
        assert sched.summary()["coalesced"] == 2
        assert w.take("agent0") == 1
        await at(sched, w, base + 3 * MINUTE + 0.1)
        assert len(w.box("agent0")) == 1
        assert [r["outcome"] for r in await fires(w)] == ["sent", "sent"]


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        # one: a single late fire that stands for the 179 other missed slots
        ("one", [("sent", 180 * MINUTE, 179)]),
        # none: the missed slots are recorded as skipped, nothing is sent
        ("none", [("skipped", 180 * MINUTE, 180)]),
    ],
)
async def test_catch_up_after_three_hours_down(
    tmp_path: Path, catchup: str, expected: list[tuple[str, float, int]]
) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry(catchup=catchup))
        base = T0 - 30 + MINUTE
        await at(sched, w, base + 0.1)
        w.take("agent0")
        # netskyd is down for three hours; a new one starts over the same files
        w.clock.now = base + 180 * MINUTE + 20
        again = await started(w)
        await again.one_pass()
        got = [(r["outcome"], r["through"] - base, r["missed"]) for r in (await fires(w))[1:]]
        assert got == expected
        sent = w.box("agent0")
        if catchup == "one":
            (env,) = sent
            assert "late by 0m20s" not in env["text"] and "late by 20s" in env["text"]
            assert "it stands for 179 earlier slots missed while netskyd was down" in env["text"]
        else:
            assert sent == []
        # never a burst: the next pass sends nothing more until the next minute
        await at(again, w, base + 180 * MINUTE + 30)
        assert len(w.box("agent0")) == len(sent)


async def test_catch_up_all_sends_each_missed_slot_one_at_a_time(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry(schedule="0 * * * *", catchup="all"))
        w.clock.now = T0 + 3 * 3600  # 13:00:30: 11:00, 12:00 and 13:00 were missed
        again = await started(w)
        sent: list[str] = []
        for _ in range(6):
            await again.one_pass()
            for env in w.box("agent0"):
                sent.append(env["text"])
            assert len(w.box("agent0")) <= 1  # never two pending
            w.take("agent0")
            w.clock.now += 1
        assert [t.split("slot ")[1][:20] for t in sent] == [
            "2026-12-06T11:00:00Z", "2026-12-06T12:00:00Z", "2026-12-06T13:00:00Z"
        ]  # fmt: skip
        assert len(await fires(w)) == 3


async def test_a_crash_between_persist_and_send_fires_the_slot_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        pass

    def die(settings: Settings, name: str) -> None:
        if name == "schedule.persisted":
            raise Killed

    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry())
        monkeypatch.setattr(scheduler_mod, "crash_point", die)
        with pytest.raises(Killed):
            await at(sched, w, T0 + 30.1)
        assert w.box("agent0") == []
        (row,) = await fires(w)
        assert row["outcome"] == "persisted"
        monkeypatch.undo()
        # the next daemon sends the persisted envelope (the same id), and the slot is
        # not fired again
        again = await started(w)
        (env,) = w.box("agent0")
        assert env["id"] == row["envelope"]
        await at(again, w, T0 + 31)
        assert len(w.box("agent0")) == 1
        assert [r["outcome"] for r in await fires(w)] == ["sent"]
        assert len(await w.events("schedule.resent")) == 1


async def test_a_persisted_fire_the_bus_already_has_is_not_sent_again(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry())
        await at(sched, w, T0 + 30.1)
        (row,) = await fires(w)
        # as if the daemon died after the send and before the row was marked sent
        await w.store.write("UPDATE fires SET outcome = 'persisted', envelope_json = ? "
                            "WHERE id = ?", (json.dumps(w.box("agent0")[0] | {"_ts_ns": 1}),
                                             row["id"]))  # fmt: skip
        w.take("agent0")
        await started(w)
        assert w.box("agent0") == []
        assert [r["outcome"] for r in await fires(w)] == ["sent"]


async def test_a_full_inbox_defers_the_fire_and_loses_nothing(tmp_path: Path) -> None:
    async with world(tmp_path, inbox_max_pending=1) as w:
        sched = await started(w)
        await sched.cron_add(entry())
        inbox = w.settings.paths.channel("agent0", "inbox")
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "1-agent1-x.json").write_text("{}")  # someone else's envelope waits
        sleep = await at(sched, w, T0 + 30.1)
        assert sleep <= scheduler_mod.PENDING_RECHECK_S
        assert [r["outcome"] for r in await fires(w)] == ["persisted"]
        assert sched.summary()["unsent"] == 1
        (inbox / "1-agent1-x.json").unlink()
        await at(sched, w, T0 + 32)
        (env,) = w.box("agent0")
        assert env["kind"] == "cron"
        assert [r["outcome"] for r in await fires(w)] == ["sent"]
        assert len(await w.events("schedule.send_deferred")) == 1


async def test_agents_that_do_not_exist_are_refused_at_add_and_reported_when_gone(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        with pytest.raises(UnknownAgent, match="agent7 is not part of the constellation"):
            await sched.cron_add(entry(agent="agent7"))
        with pytest.raises(UnknownAgent):
            await sched.loop_create("agent7", "10m", "x")
        await sched.cron_add(entry(agent="agent1"))
        w.crew.desired = Desired(up=True, agents={"agent0": None, "agentinfinity": None})
        for k in range(1, 4):
            await at(sched, w, T0 - 30 + k * MINUTE + 0.1)
        assert w.box("agent1") == []
        assert [r["outcome"] for r in await fires(w)] == ["refused"] * 3
        assert len(await w.events("schedule.agent_missing")) == 1  # reported once
        assert sched.entry_row("tick")["state"] == "agent-missing"
        assert sched.summary()["agent_missing"] == ["cron:tick"]


async def test_a_bad_crontab_keeps_the_last_good_schedule_also_across_a_restart(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        await sched.cron_add(entry())
        good = w.settings.paths.cron_toml.read_text()
        for bad, why in [
            (good + "\n[[cron]\n", "line"),
            (good.replace("* * * * *", "61 * * * *"), "Bad minute"),
            (good.replace('"UTC"', '"Mars/Olympus"'), "unknown time zone"),
            ('[[cron]]\nname = "x"\ntext = "' + "a" * (10 << 20) + '"\n', "bytes; not read"),
        ]:
            w.write_crontab(bad)
            await at(sched, w, w.clock.now + 1.5)
            assert sched.crontab_error is not None, why
            assert why in sched.crontab_error["error"]
            assert list(sched.entries) == ["tick"]
            with pytest.raises(CrontabError):
                await sched.cron_add(entry("other"))
        # a new daemon with the bad file runs the last good copy
        again = await started(w)
        assert list(again.entries) == ["tick"] and again.crontab_error is not None
        assert again.crontab_error["running"] == "last-good"
        await at(again, w, T0 + 30.1)
        assert len(w.box("agent0")) == 1
        # fixing the file clears the error
        w.write_crontab(good)
        await at(again, w, T0 + 32)
        assert again.crontab_error is None
        assert len(await w.events("schedule.crontab_invalid")) >= 4


async def test_edits_keep_comments_pause_skips_slots_and_rm_forgets(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.write_crontab("# mine, keep me\n")
        sched = await started(w)
        await sched.cron_add(entry())
        await sched.cron_pause("tick", True)
        text = w.settings.paths.cron_toml.read_text()
        assert "# mine, keep me" in text and "paused = true" in text
        for k in range(1, 4):  # paused: nothing fires
            await at(sched, w, T0 - 30 + k * MINUTE + 0.1)
        assert w.box("agent0") == []
        await sched.cron_pause("tick", False)
        await at(sched, w, w.clock.now + 1)  # the paused slots are not "missed"
        assert w.box("agent0") == []
        await at(sched, w, T0 - 30 + 4 * MINUTE + 0.1)
        (env,) = w.box("agent0")
        assert "late" not in env["text"]
        ran = await sched.cron_run("tick")
        assert ran["fire"]["reason"] == "run by hand"
        assert "run by hand" in w.box("agent0")[-1]["text"]
        await sched.cron_rm("tick")
        assert "# mine, keep me" in w.settings.paths.cron_toml.read_text()
        assert sched.entries == {}
        with pytest.raises(UnknownEntry):
            await sched.cron_rm("tick")


async def test_a_loop_with_count_three_fires_three_times_and_ends(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        made = await sched.loop_create("agent1", "1s", "check the build", count=3,
                                       by="agent1")  # fmt: skip
        loop_id = made["loop"]["id"]
        assert len(made["loop"]["next"]) == 3
        texts = []
        for k in range(1, 6):
            await at(sched, w, T0 + k + 0.05)
            texts += [e["text"] for e in w.box("agent1")]
            w.take("agent1")
        assert texts == [f"[loop {loop_id}, fire {n} of 3]\ncheck the build" for n in (1, 2, 3)]
        assert (await sched.loop_ls())["loops"] == []
        (row,) = (await sched.loop_ls(every=True))["loops"]
        assert (row["state"], row["reason"]) == ("done", "fired 3 of 3")
        assert row["created_by"] == "agent1" and row["fired"] == 3
        # a restarted daemon does not bring it back
        assert (await started(w)).loops == {}


async def test_loops_end_at_until_and_by_rm_and_refuse_bad_input(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sched = await started(w)
        made = await sched.loop_create("agent0", "10s", "x", until="25s")
        for k in range(1, 5):
            await at(sched, w, T0 + 10 * k + 0.1)
            w.take("agent0")
        (row,) = (await sched.loop_ls(every=True))["loops"]
        assert row["id"] == made["loop"]["id"] and row["state"] == "done"
        assert len(await fires(w)) == 2
        other = await sched.loop_create("agent0", "10m", "y")
        await sched.loop_rm(other["loop"]["id"])
        assert (await sched.loop_ls())["loops"] == []
        with pytest.raises(UnknownEntry):
            await sched.loop_rm(999)
        for args, kw in [
            (("agent0", "0.5s", "x"), {}),
            (("agent0", "ten", "x"), {}),
            (("agent0", "10m", "x"), {"count": 0}),
            (("agent0", "10m", "x"), {"until": "2001-01-01T00:00:00Z"}),
            (("agent0", "10m", "a</channel>b"), {}),
        ]:
            with pytest.raises(ValueError):
                await sched.loop_create(*args, **kw)
