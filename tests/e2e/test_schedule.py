"""Scheduling with a real daemon and demo agents (docs/schedule.md): an every-minute entry
fires within a second of the minute, kill -9 between persist and send fires no slot twice
and loses none, a loop with ``--count 3`` fires three times and ends, and hostile input
gets clear errors while the daemon keeps its last good schedule.

The scheduler's clock runs ``debug_clock_offset_s`` ahead of the wall clock, so the next
minute boundary is seconds away rather than up to a minute.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

from netsky_shared.paths import Paths
from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

AGENTS = ["agent0", "agent1", "agentinfinity"]
#: Seconds from now to the minute boundary the scheduler will see.
LEAD_S = 20.0


def offset_for(lead_s: float) -> float:
    """A clock offset that puts a minute boundary ``lead_s`` seconds from now."""
    now = time.time()
    boundary = math.floor(now / 60) * 60 + 60 * math.ceil((lead_s + 1) / 60) + 60
    return boundary - (now + lead_s)


def receipts(netsky: Netsky, agent: str, starts: str) -> list[dict[str, Any]]:
    path = Paths(netsky.home).demo_receipts(agent)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["text"].startswith(starts)]


def fire_rows(netsky: Netsky) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{netsky.home / 'meta.db'}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM fires ORDER BY id")]
    finally:
        db.close()


def ok(netsky: Netsky, *args: str) -> dict[str, Any]:
    res = netsky.ctl(*args, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(json.loads(res.stdout))


def start(netsky: Netsky, **settings: Any) -> float:
    """Start the daemon with a clock a minute boundary ``LEAD_S`` away; returns the offset."""
    offset = offset_for(LEAD_S)
    netsky.configure(clones=1, debug_clock_offset_s=offset, cron_watch_s=0.5, **settings)
    netsky.start()
    wait_for(lambda: netsky.all_ready(AGENTS), 60, "agents ready")
    return offset


def test_an_every_minute_entry_fires_within_a_second_of_the_minute(netsky: Netsky) -> None:
    offset = start(netsky)
    added = ok(netsky, "cron", "add", "tick", "* * * * *", "0", "say the time")
    assert added["entry"]["agent"] == "agent0" and len(added["entry"]["next"]) == 3
    status = ok(netsky, "status")
    assert status["schedule"]["next"][0]["entry"] == "tick"
    assert "schedule: 1 cron entries, 0 loops; next: " in netsky.ctl("status").stdout
    got = wait_for(lambda: receipts(netsky, "agent0", "[cron tick]"), LEAD_S + 30,
                   "the cron fire at agent0")  # fmt: skip
    (row,) = [r for r in fire_rows(netsky) if r["outcome"] == "sent"]
    assert row["slot"] % 60 == 0  # a whole minute on the scheduler's clock
    assert 0 <= row["late_s"] < 1.0  # fired within a second of due
    assert got[0]["from"] == "agentcron" and got[0]["text"] == "[cron tick]\nsay the time"
    # the agent had it (the demo agent's receipt) soon after the slot, on the wall clock
    had_it = got[0]["ts_ns"] / 1e9 - (row["slot"] - offset)
    assert 0 < had_it < 15
    listed = ok(netsky, "cron", "ls")["entries"][0]
    assert listed["last_fire"]["envelope"] == row["envelope"] and listed["state"] == "ok"


def test_kill_9_between_persist_and_send_fires_no_slot_twice(netsky: Netsky) -> None:
    start(netsky, debug_crash_at="schedule.persisted")
    ok(netsky, "cron", "add", "tick", "* * * * *", "1", "every minute, once")
    assert netsky.proc is not None
    wait_for(lambda: netsky.proc is not None and netsky.proc.poll() is not None, LEAD_S + 30,
             "netskyd to die at the crash point")  # fmt: skip
    assert netsky.proc.returncode == -signal.SIGKILL
    (row,) = fire_rows(netsky)
    assert row["outcome"] == "persisted" and row["envelope_json"]
    assert receipts(netsky, "agent1", "[cron tick]") == []
    # a new daemon (no crash point) sends the persisted envelope, once
    netsky.configure(debug_crash_at="")
    netsky.start()
    got = wait_for(lambda: receipts(netsky, "agent1", "[cron tick]"), 60, "the fire at agent1")
    assert len(got) == 1
    rows = fire_rows(netsky)
    assert rows[0]["outcome"] == "sent" and rows[0]["id"] == row["id"]
    assert len({r["slot"] for r in rows}) == len(rows)  # no slot fired twice
    time.sleep(3)
    assert len(receipts(netsky, "agent1", "[cron tick]")) == len(
        [r for r in fire_rows(netsky) if r["outcome"] == "sent"]
    )


def test_a_loop_with_count_three_fires_three_times_and_ends(netsky: Netsky) -> None:
    start(netsky)
    made = ok(netsky, "loop", "create", "1", "2s", "loop ping", "--count", "3")["loop"]
    assert made["count"] == 3 and made["created_by"] == "owner"
    mark = f"[loop {made['id']}, fire"
    wait_for(lambda: len(receipts(netsky, "agent1", mark)) == 3, 60, "three loop fires")
    wait_for(lambda: ok(netsky, "loop", "ls")["loops"] == [], 10, "the loop to end")
    (ended,) = ok(netsky, "loop", "ls", "--all")["loops"]
    assert (ended["state"], ended["fired"]) == ("done", 3)
    time.sleep(5)
    texts = [r["text"] for r in receipts(netsky, "agent1", mark)]
    assert texts == [f"{mark} {n} of 3]\nloop ping" for n in (1, 2, 3)]
    # an agent makes its own loop from its pane: AGENT self and --from are AGENT_N
    env = {**netsky.env, "AGENT_N": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "client", "loop", "create", "self", "10m", "mine", "--json"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    mine = json.loads(res.stdout)["loop"]
    assert (mine["agent"], mine["created_by"]) == ("agent1", "agent1")
    assert ok(netsky, "loop", "rm", str(mine["id"]))["loop"]["state"] == "removed"


def test_hostile_input_gets_clear_errors_and_the_last_good_schedule_runs(netsky: Netsky) -> None:
    start(netsky)
    ok(netsky, "cron", "add", "good", "*/7 * * * *", "0", "keep me", "--tz", "Europe/Berlin")
    for args, code, says in [
        (("cron", "add", "x", "61 * * * *", "0", "t"), 2, "Bad minute"),
        (("cron", "add", "x", "* * *", "0", "t"), 2, "5 fields"),
        (("cron", "add", "x", "* * * * *", "7", "t"), 2, "agent7 is not part of the constellation"),
        (("cron", "add", "x", "* * * * *", "0", "t", "--tz", "Mars/Olympus"), 2, "time zone"),
        (("cron", "add", "good", "* * * * *", "0", "t"), 2, "exists"),
        (("cron", "rm", "nope"), 2, "no cron entry named 'nope'"),
        (("loop", "create", "0", "0.1s", "t"), 2, "shorter than 1 s"),
        (("loop", "create", "9", "1m", "t"), 2, "agent9 is not part of"),
        (("loop", "rm", "42"), 2, "no loop 42"),
    ]:
        res = netsky.ctl(*args)
        assert res.returncode == code, (args, res.stdout, res.stderr)
        assert says in res.stderr, (args, res.stderr)
    crontab = netsky.home / "cron.toml"
    good = crontab.read_text()
    for bad, says in [
        (good + "\n[[cron]\nname = 'broken'\n", "line"),
        ('[[cron]]\nname = "big"\ntext = "' + "x" * (10 << 20) + '"\n', "not read"),
    ]:
        crontab.write_text(bad)
        def shown(says: str = says) -> dict[str, Any] | None:
            r = ok(netsky, "cron", "ls")
            error = r["crontab"]["error"]
            return r if error and says in error["error"] else None

        listed = wait_for(shown, 10, f"the error ({says}) to show")
        assert [e["name"] for e in listed["entries"]] == ["good"]  # the last good one runs
        assert ok(netsky, "status")["schedule"]["crontab_error"] is not None
        text = netsky.ctl("cron", "ls").stdout
        assert "cron.toml is not valid" in text and "last good version" in text
        doctor = json.loads(netsky.ctl("doctor", "--json").stdout)
        (finding,) = [c for c in doctor["checks"] if c["name"] == "cron"]
        assert finding["status"] == "warn" and says in finding["detail"]
    assert netsky.ctl("ping").returncode == 0
    crontab.write_text(good)
    wait_for(lambda: ok(netsky, "cron", "ls")["crontab"]["error"] is None, 10, "the fix")
    doctor = json.loads(netsky.ctl("doctor", "--json").stdout)
    assert [c["status"] for c in doctor["checks"] if c["name"] == "cron"] == ["ok"]
