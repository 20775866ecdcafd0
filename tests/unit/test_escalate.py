"""escalate() on a real NETSKY_HOME (files, journal, meta.db), and the incident commands.

The daemon side pages through ``netskyd.escalation.spool.escalate``; netskyctl's ``incidents``
and ``ack`` work on the same files with no daemon (client.incidents).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.incidents import INCIDENT_COMMANDS, add_parsers, summary_line
from netsky_shared import incidents
from netsky_shared.errors import CorruptMarker, UnknownIncident
from netskyd.config import Settings
from netskyd.escalation.spool import Incident, Spool
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder
from tests.unit.test_client import HEAVY

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Spool]:
    # Only the desktop leg (a file in home): the tmux leg is covered in test_legs.py.
    s = Settings.model_validate(
        {
            "home": tmp_path / "home",
            "tmux_socket": "netsky-test-unused",
            "legs": {"tmux": {"enabled": False}},
        }
    )
    for d in (s.paths.state, s.paths.logs):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(s.paths.db)
    try:
        yield Spool(
            settings=lambda: s,
            environ={},
            store=store,
            recorder=Recorder(Journal(s.paths.logs), store),
            clock=Clock(T0),
        )
    finally:
        await store.close()


def journal(ctx: Spool, prefix: str = "escalation.") -> list[dict[str, Any]]:
    rows = []
    for f in sorted(ctx.paths.logs.glob("watchdog-events-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return [r for r in rows if r["event"].startswith(prefix)]


def db_events(ctx: Spool) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(ctx.paths.db) as conn:
        rows = conn.execute("SELECT event, fields FROM events ORDER BY id").fetchall()
    return [(e, json.loads(f)) for e, f in rows if e.startswith("escalation.")]


def files(ctx: Spool) -> list[str]:
    return sorted(p.name for p in ctx.paths.escalations.iterdir() if not p.name.startswith("."))


def tick(ctx: Spool, seconds: float) -> None:
    clock = ctx.clock
    assert isinstance(clock, Clock)
    clock.now += seconds


# -- escalate ------------------------------------------------------------------------------


async def test_escalate_writes_an_incident_and_records_the_page(ctx: Spool) -> None:
    inc = await ctx.escalate("agent0 crash loop", "3 restarts in 600 s", "agent0.crash-loop")
    assert isinstance(inc, Incident) and inc.paged
    assert inc.path == ctx.paths.escalations / f"{inc.id}.json"
    assert files(ctx) == [f"{inc.id}.json"]  # no tmp file left behind
    on_disk = json.loads(inc.path.read_text())
    desktop = on_disk["legs"].pop("desktop")
    assert desktop["status"] == "delivered" and desktop["tries"] == 1
    assert on_disk == {
        "id": inc.id,
        "key": "agent0.crash-loop",
        "subject": "agent0 crash loop",
        "body": "3 restarts in 600 s",
        "severity": "warning",
        "opened_ts": incidents.rfc3339(T0),
        "last_ts": incidents.rfc3339(T0),
        "count": 1,
        "acked": False,
        "acked_ts": None,
        "resolved_ts": None,
        "resolution": None,
        "rounds": 1,
        "paged_ts": incidents.rfc3339(T0),
        "legs": {},
        "next_retry_ts": None,
        "round_ts": None,
        "exclude_legs": [],
    }
    assert inc.delivered == ["desktop"]
    stamp = datetime.fromtimestamp(T0, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    assert inc.id.startswith(stamp + "-") and len(inc.id) == len(stamp) + 9
    row, sent = journal(ctx)
    assert row["event"] == "escalation.opened" and sent["event"] == "escalation.sent"
    assert sent["delivered"] == ["desktop"] and sent["incident"] == inc.id
    assert (row["incident"], row["key"], row["subject"]) == (inc.id, inc.key, inc.subject)
    assert row["body"] == "3 restarts in 600 s" and row["file"] == str(inc.path)
    assert [e for e, _ in db_events(ctx)] == ["escalation.opened", "escalation.sent"]


async def test_same_key_while_open_bumps_instead_of_paging(ctx: Spool) -> None:
    first = await ctx.escalate("agent0 crash loop", "first", "agent0.crash-loop")
    tick(ctx, 90)
    again = await ctx.escalate("agent0 crash loop", "second", "agent0.crash-loop")
    assert not again.paged
    assert (again.id, again.count, again.body) == (first.id, 2, "first")
    assert again.opened_ts == first.opened_ts and again.last_ts == incidents.rfc3339(T0 + 90)
    assert files(ctx) == [f"{first.id}.json"]
    assert json.loads(first.path.read_text())["count"] == 2
    other = await ctx.escalate("agent3 hung", "pane still", "agent3.hang")
    assert other.paged and other.id != first.id
    events = [(r["event"], r.get("count")) for r in journal(ctx) if r["event"] != "escalation.sent"]
    assert events == [("escalation.opened", 1), ("escalation.repeat", 2), ("escalation.opened", 1)]
    assert [e for e, _ in db_events(ctx) if e != "escalation.sent"] == [e for e, _ in events]


async def test_after_ack_the_same_key_opens_a_new_incident(ctx: Spool) -> None:
    first = await ctx.escalate("gave up on agent0", "5 attempts", "agent0.gave-up")
    acked = incidents.ack(ctx.paths, first.id, now_s=T0 + 10)
    assert acked["acked"] is True and acked["acked_ts"] == incidents.rfc3339(T0 + 10)
    tick(ctx, 60)
    second = await ctx.escalate("gave up on agent0", "5 attempts again", "agent0.gave-up")
    assert second.paged and second.id != first.id and second.count == 1
    assert [i["id"] for i in incidents.list_incidents(ctx.paths)] == [second.id]
    every = incidents.list_incidents(ctx.paths, include_acked=True)
    assert [i["id"] for i in every] == [first.id, second.id]  # by opened_ts
    opened = [r["event"] for r in journal(ctx) if r["event"] != "escalation.sent"]
    assert opened == ["escalation.opened", "escalation.opened"]


async def test_concurrent_escalations_of_one_key_page_once(ctx: Spool) -> None:
    results: list[Incident] = []

    async def page() -> None:
        results.append(await ctx.escalate("agentinfinity gone", "x", "agentinfinity.gone"))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(page)
    assert sorted(r.paged for r in results) == [False, False, False, False, True]
    assert len(files(ctx)) == 1
    assert json.loads((ctx.paths.escalations / files(ctx)[0]).read_text())["count"] == 5


async def test_corrupt_incident_files_are_moved_aside_and_reported(ctx: Spool) -> None:
    d = ctx.paths.escalations
    d.mkdir(parents=True)
    garbled = d / "20261101T000000Z-deadbeef.json"
    garbled.write_text('{"id": "20261101T000000Z-dead')
    wrong = d / "20261101T000001Z-0badf00d.json"
    wrong_body = {"id": "20261101T000001Z-0badf00d", "key": "agent0.crash-loop", "acked": False}
    wrong.write_text(json.dumps(wrong_body))
    inc = await ctx.escalate("agent0 crash loop", "again", "agent0.crash-loop")
    # The half-written incident with the same key did not swallow the page.
    assert inc.paged
    assert not garbled.exists() and not wrong.exists()
    asides = sorted(d.glob("*.corrupt-*"))
    assert [a.name.split(".corrupt-")[0] for a in asides] == [garbled.name, wrong.name]
    assert asides[0].read_text() == '{"id": "20261101T000000Z-dead'
    assert json.loads(asides[1].read_text()) == wrong_body
    corrupt = [r for r in journal(ctx) if r["event"] == "escalation.corrupt"]
    assert [(r["file"], r["aside"]) for r in corrupt] == [
        (garbled.name, str(asides[0])),
        (wrong.name, str(asides[1])),
    ]
    assert "not JSON" in corrupt[0]["error"] and "missing field" in corrupt[1]["error"]
    assert [e for e, _ in db_events(ctx)].count("escalation.corrupt") == 2
    assert files(ctx) == sorted([f"{inc.id}.json", *(a.name for a in asides)])


async def test_escalate_needs_a_key_and_a_subject(ctx: Spool) -> None:
    with pytest.raises(ValueError, match="key"):
        await ctx.escalate("subject", "body", " ")
    with pytest.raises(ValueError, match="subject"):
        await ctx.escalate("", "body", "k")
    assert not ctx.paths.escalations.exists()


# -- netsky_shared.incidents -----------------------------------------------------------------------


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_rfc3339_round_trips(now_s: float) -> None:
    ts = incidents.rfc3339(now_s)
    assert ts == datetime.fromtimestamp(int(now_s * 1e6) / 1e6, tz=UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    parsed = incidents.parse_rfc3339(ts)
    assert parsed is not None and abs(parsed - now_s) < 2e-6


@pytest.mark.parametrize("ts", ["", "2026-11-21 10:00:00Z", "2026-13-01T00:00:00Z", "soon"])
def test_parse_rfc3339_rejects_other_shapes(ts: str) -> None:
    assert incidents.parse_rfc3339(ts) is None


def test_lock_times_out_while_held(tmp_path: Path) -> None:
    d = str(tmp_path / "escalations")
    with incidents.IncidentsLock(d):
        with pytest.raises(incidents.IncidentsBusy, match="stayed locked"):
            with incidents.IncidentsLock(d, timeout_s=0.05):
                pass
    with incidents.IncidentsLock(d, timeout_s=0.05):  # released on exit
        pass


def write(home: Path, key: str, subject: str, now_s: float, **extra: Any) -> dict[str, Any]:
    inc = incidents.new_incident(incidents.new_incident_id(now_s), key, subject, "body", now_s)
    inc.update(extra)
    incidents.write_incident(str(home), inc)
    return inc


def test_ack_finds_by_prefix_or_suffix_and_refuses_unknown_or_ambiguous(tmp_path: Path) -> None:
    a = write(tmp_path, "k1", "one", T0)
    b = write(tmp_path, "k2", "two", T0 + 1)
    assert incidents.find(tmp_path.as_posix(), a["id"].split("-")[1]) == a["id"]
    assert incidents.find(str(tmp_path), b["id"][:16]) == b["id"]  # ...T<hhmmss> of b
    with pytest.raises(UnknownIncident, match="matches 2 incidents"):
        incidents.find(str(tmp_path), a["id"][:8])
    with pytest.raises(UnknownIncident, match="no incident matches"):
        incidents.ack(str(tmp_path), "ffffffff")
    with pytest.raises(UnknownIncident, match="there are no incidents"):
        incidents.ack(str(tmp_path / "elsewhere"), "ffffffff")
    assert not (tmp_path / "elsewhere").exists()
    done = incidents.ack(str(tmp_path), a["id"], now_s=T0 + 5)
    again = incidents.ack(str(tmp_path), a["id"], now_s=T0 + 50)
    assert done == again and again["acked_ts"] == incidents.rfc3339(T0 + 5)


def test_ack_of_a_corrupt_file_fails_and_leaves_it_for_the_daemon(tmp_path: Path) -> None:
    d = tmp_path / "state" / "escalations"
    d.mkdir(parents=True)
    (d / "20261101T000000Z-deadbeef.json").write_text("nope")
    with pytest.raises(CorruptMarker, match="not JSON"):
        incidents.ack(str(tmp_path), "deadbeef")
    assert (d / "20261101T000000Z-deadbeef.json").read_text() == "nope"


# -- netskyctl incidents / ack -----------------------------------------------------------------


def run(home: Path, *argv: str) -> int:
    """Parse like netskyctl (``--json`` on every subcommand) and run the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="netskyctl", parents=[common])
    sub = parser.add_subparsers(dest="command")
    add_parsers(sub, common)
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    environ: Mapping[str, str] = {"NETSKY_HOME": str(home)}
    return INCIDENT_COMMANDS[args.command](args, environ)


def run_json(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert run(home, *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_incidents_lists_open_ones_and_all_with_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "incidents") == 0
    assert capsys.readouterr().out == "no open incidents\n"
    old = write(tmp_path, "agent0.gave-up", "gave up on agent0", T0, acked=True, acked_ts="x")
    new = write(tmp_path, "agent0.crash-loop", "agent0 crash loop", T0 + 60, count=4)
    res = run_json(tmp_path, capsys, "incidents")
    assert res["incidents"] == [new] and res["unreadable"] == []
    res = run_json(tmp_path, capsys, "incidents", "--all")
    assert res["incidents"] == [old, new]
    assert run(tmp_path, "incidents", "--all") == 0
    lines = capsys.readouterr().out.splitlines()
    header = ["ID", "STATE", "SEVERITY", "COUNT", "OPENED", "LAST", "LEGS", "KEY", "SUBJECT"]
    assert lines[0].split() == header
    assert lines[1].split()[:4] == [old["id"], "acked", "warning", "1"]
    assert lines[2].split()[:4] == [new["id"], "open", "warning", "4"]
    assert lines[2].endswith("agent0.crash-loop  agent0 crash loop")
    # A resolved incident is closed too; LEGS shows each leg's last outcome.
    done = write(tmp_path, "hang:agent3", "agent3 hung", T0 + 90, resolved_ts="y",
                 legs={"email": {"status": "delivered", "tries": 1},
                       "hook": {"status": "failed", "tries": 3}})  # fmt: skip
    assert run_json(tmp_path, capsys, "incidents")["incidents"] == [new]
    assert run(tmp_path, "incidents", "--all") == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.split()[:2] == [done["id"], "resolved"]
    assert "email:ok hook:failed×3" in last


def test_incidents_shows_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "state" / "escalations"
    d.mkdir(parents=True)
    (d / "20261101T000000Z-deadbeef.json").write_text("[1]")
    res = run_json(tmp_path, capsys, "incidents")
    assert res["incidents"] == []
    assert res["unreadable"] == [
        {
            "file": "20261101T000000Z-deadbeef.json",
            "error": "not a JSON object (list)",
            "aside": None,
        }
    ]
    assert run(tmp_path, "incidents") == 0
    out = capsys.readouterr().out
    assert "no open incidents" in out and "20261101T000000Z-deadbeef.json: not a JSON" in out
    assert (d / "20261101T000000Z-deadbeef.json").exists()  # the client moves nothing


def test_ack_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inc = write(tmp_path, "agent3.hang", "agent3 hung", T0)
    res = run_json(tmp_path, capsys, "ack", inc["id"].split("-")[1])
    assert res["id"] == inc["id"] and res["acked"] is True and res["already_acked"] is False
    on_disk = json.loads((tmp_path / "state/escalations" / f"{inc['id']}.json").read_text())
    assert on_disk["acked"] is True and on_disk["acked_ts"] == res["acked_ts"]
    assert "already_acked" not in on_disk
    res = run_json(tmp_path, capsys, "ack", inc["id"])
    assert res["already_acked"] is True and res["acked_ts"] == on_disk["acked_ts"]
    assert run(tmp_path, "ack", inc["id"]) == 0
    assert "already acknowledged" in capsys.readouterr().out
    assert run_json(tmp_path, capsys, "incidents")["incidents"] == []


def test_summary_line(tmp_path: Path) -> None:
    assert summary_line(str(tmp_path)) is None
    write(tmp_path, "k.acked", "old news", T0 - 3600, acked=True, acked_ts="x")
    assert summary_line(str(tmp_path)) is None
    write(tmp_path, "agent3.hang", "agent3 hung", T0 - 600)
    write(tmp_path, "agent0.crash-loop", "agent0 crash loop", T0 - 200)
    assert (
        summary_line(str(tmp_path), now_s=T0)
        == 'incidents: 2 open (newest: "agent0 crash loop", 3m ago)'
    )
    from netsky_shared.paths import Paths

    assert summary_line(Paths(tmp_path), now_s=T0) == summary_line(str(tmp_path), now_s=T0)
    (tmp_path / "state/escalations/20261101T000000Z-deadbeef.json").write_text("{")
    line = summary_line(str(tmp_path), now_s=T0)
    assert line is not None and line.endswith("; 1 unreadable file in state/escalations")


def test_client_incidents_module_imports_nothing_heavy(tmp_path: Path) -> None:
    write(tmp_path, "agent0.crash-loop", "agent0 crash loop", T0)
    code = (
        "import sys; before = set(sys.modules); "
        "import client.incidents as ci; "
        f"assert ci.summary_line({str(tmp_path)!r}) is not None; "
        f"assert ci.scan({str(tmp_path)!r})[0]; "
        "import json; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    new = json.loads(res.stdout)
    assert {"client.incidents", "netsky_shared.incidents"} <= set(new)
    assert not set(new) & set(HEAVY)
