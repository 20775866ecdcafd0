"""End to end: supervision with a real netskyd, real tmux on a private socket, demo agents.

Planned restarts with a handoff, crash recovery with a synthetic handoff, deaths
noticed by tmux hooks (not the tick), crash loops throttled and paged once, a
daemon killed mid-restart, and a stopped tmux server that must not wedge the tick.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
THREE = ["agent0", "agent1", "agentinfinity"]


def _receipts(netsky: Netsky, agent: str) -> list[dict[str, Any]]:
    path = netsky.home / "state" / "demo" / f"{agent}.received.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _handoffs(netsky: Netsky) -> list[dict[str, Any]]:
    return [r for r in _receipts(netsky, "agent0") if r.get("kind") == "handoff"]


def _machine(netsky: Netsky, agent: str) -> dict[str, Any] | None:
    return next((m for m in netsky.status()["restarts"] if m["agent"] == agent), None)


def _idle_after(netsky: Netsky, agent: str, restart_id: str) -> bool:
    m = _machine(netsky, agent)
    return m is not None and m["restart_id"] == restart_id and m["state"] == "idle"


def _query(netsky: Netsky, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(netsky.home / "meta.db")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _pids(netsky: Netsky) -> dict[str, int]:
    return {a: row["pane_pid"] for a, row in netsky.agents().items()}


def test_planned_restart_delivers_the_handoff_and_spares_agentinfinity(
    netsky: Netsky, tmp_path: Path
) -> None:
    netsky.configure(clones=1, restart_verify_s=1.0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(THREE), 60, "agents ready")
    before = _pids(netsky)

    handoff = tmp_path / "handoff.md"
    handoff.write_text("carry on with the release notes; agent1 was half way through\n")
    # "restart 2": agent0 and two clones now (agent2 is new).
    res = netsky.ctl("restart", "2", "--handoff", str(handoff), "--wait", "--json", timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    out = json.loads(res.stdout)
    assert out["outcome"] == "ok"
    assert netsky.all_ready([*THREE, "agent2"])
    assert netsky.status()["desired"]["agents"] == ["agent0", "agent1", "agent2", "agentinfinity"]

    after = _pids(netsky)
    assert after["agent0"] != before["agent0"] and after["agent1"] != before["agent1"]
    assert after["agentinfinity"] == before["agentinfinity"]  # survives every restart
    got = _handoffs(netsky)
    assert [r["text"] for r in got] == [handoff.read_text().strip()]
    assert got[0]["from"] == "netsky"

    rows = _query(
        netsky, "SELECT agent, cause, outcome FROM restarts WHERE restart_id = ?", out["restart_id"]
    )
    assert rows == [("agent0", "planned", "ok")]
    listing = netsky.ctl("restarts", "--json")
    assert listing.returncode == 0
    assert json.loads(listing.stdout)["restarts"][0]["restart_id"] == out["restart_id"]


def test_agent_side_restart_request_is_claimed_and_handed_off(netsky: Netsky) -> None:
    netsky.configure(clones=0, restart_verify_s=1.0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 60, "agents ready")
    old = _pids(netsky)["agent0"]

    # The demo agent writes state/restart-request (its handoff) and exits 0.
    sent = netsky.ctl(
        "channel", "send", "agent0", "restart the tests are green, ship it", "--from", "owner"
    )
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: _handoffs(netsky), 60, "the handoff delivered to the new agent0")
    assert [r["text"] for r in _handoffs(netsky)] == ["the tests are green, ship it"]
    assert _pids(netsky)["agent0"] != old
    assert not (netsky.home / "state" / "restart-request").exists()  # claimed by rename
    archived = list((netsky.home / "state" / "archive").glob("restart-request-*"))
    assert len(archived) == 1 and archived[0].read_text() == "the tests are green, ship it"
    rows = _query(netsky, "SELECT cause, reason FROM restarts WHERE agent = 'agent0'")
    assert rows == [("planned", "restart requested by agent0")]
    # the demo agent went the /restart skill's way: netskyctl restart --request
    actions = netsky.home / "state" / "demo" / "agent0.actions.jsonl"
    (done,) = [json.loads(line) for line in actions.read_text().splitlines()]
    assert (done["verb"], done["ok"]) == ("restart --request", True), done


def test_crash_of_agent0_gets_a_synthetic_handoff_and_a_dead_clone_is_respawned_alone(
    netsky: Netsky,
) -> None:
    # An hour between ticks: only the tmux hooks can notice these deaths in time.
    netsky.configure(clones=1, tick_interval_s=3600.0, restart_verify_s=1.0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(THREE), 60, "agents ready")
    before = _pids(netsky)

    # A clone dies: only it comes back, nobody gets a handoff.
    assert netsky.ctl("channel", "send", "agent1", "crash", "--from", "owner").returncode == 0
    wait_for(
        lambda: (a := netsky.agents()["agent1"])["ready"] and a["pane_pid"] != before["agent1"],
        30,
        "agent1 respawned by the hook, not the tick",
    )
    now = _pids(netsky)
    assert now["agent0"] == before["agent0"] and now["agentinfinity"] == before["agentinfinity"]
    crash = _query(netsky, "SELECT agent, exit_status, failure, noticed_by FROM crashes")
    # The hook tells, or (when this tmux lost the child's exit) the watcher's sweep.
    assert crash in (
        [("agent1", 3, "exit-3", "hook:pane-died")],
        [("agent1", 3, "exit-3", "sweep:pane-died")],
    )

    # agent0 dies: the fresh one is told so, with the last lines of its pane.
    assert netsky.ctl("channel", "send", "agent0", "crash", "--from", "owner").returncode == 0
    got = wait_for(lambda: _handoffs(netsky), 60, "the synthetic handoff")
    text = got[0]["text"]
    assert "died unexpectedly" in text and "exit status 3" in text
    assert "crashing on request (exit 3)" in text  # its pane's last lines
    assert "Wait for the owner" in text
    assert len(got) == 1
    wait_for(lambda: _machine(netsky, "agent0")["state"] == "idle", 30, "restart verified")
    rows = _query(netsky, "SELECT cause, outcome FROM restarts WHERE agent = 'agent0'")
    assert rows == [("crash", "ok")]
    assert netsky.status()["daemon"]["ticks"] == 1  # only the tick at start


def test_crash_looping_agent_is_throttled_and_paged_once(netsky: Netsky) -> None:
    crasher = f"{shlex.quote(sys.executable)} -m netskyd.agents.demo_agent --crash-at-start"
    netsky.configure(
        clones=1,
        agent_runtimes={"agent1": "custom"},
        custom_command=crasher,
        restart_backoff_base_s=0.2,
        restart_max_attempts=50,
        crashloop_restarts=3,
        crashloop_window_s=120.0,
        crashloop_cooldown_s=3600.0,
    )
    netsky.start()
    wait_for(
        lambda: (_machine(netsky, "agent1") or {}).get("state") == "crash_loop",
        60,
        "agent1 in CRASH_LOOP",
    )
    spawns = _query(netsky, "SELECT COUNT(*) FROM spawns WHERE agent = 'agent1'")[0][0]
    assert spawns <= 1 + 3  # the first start, then at most K restarts in the window
    time.sleep(3)  # several ticks: nothing more is tried during the cooldown
    assert _query(netsky, "SELECT COUNT(*) FROM spawns WHERE agent = 'agent1'")[0][0] == spawns
    m = _machine(netsky, "agent1")
    assert m is not None and m["retry_at"] > time.time() + 3000

    incidents = {
        i["key"]: i
        for i in (
            json.loads(p.read_text()) for p in (netsky.home / "state/escalations").glob("*.json")
        )
    }
    # One crash-loop page (critical), and the failed attempts before it as one quieter
    # incident (info: the desktop and tmux legs only, by default).
    assert set(incidents) == {"agent1:crash-loop", "agent1:restart-failed"}, incidents
    loop = incidents["agent1:crash-loop"]
    assert "exit-3" in loop["subject"] and loop["severity"] == "critical"
    assert loop["count"] == 1
    assert incidents["agent1:restart-failed"]["severity"] == "info"
    marker = json.loads((netsky.home / "state" / "crashloop.json").read_text())
    assert marker["agents"]["agent1"]["failure"] == "exit-3"
    shown = netsky.ctl("status")
    assert "agent1: crash_loop" in shown.stdout and "incidents: 2 open" in shown.stdout
    assert netsky.all_ready(["agent0", "agentinfinity"])  # the rest is untouched


def test_daemon_killed_mid_restart_finishes_it_without_duplicates(
    netsky: Netsky, tmp_path: Path
) -> None:
    # agent0 takes a couple of seconds to become ready, so the restart is caught mid-way.
    agent = f"exec {shlex.quote(sys.executable)} -m netskyd.agents.demo_agent"
    slow = f"sh -c {shlex.quote(f'sleep 2; {agent}')}"
    netsky.configure(
        clones=1, agent_runtimes={"agent0": "custom"}, custom_command=slow, restart_verify_s=1.0
    )
    netsky.start()
    wait_for(lambda: netsky.all_ready(THREE), 60, "agents ready")
    handoff = tmp_path / "handoff.txt"
    handoff.write_text("resume the migration at step 4")
    res = netsky.ctl("restart", "--handoff", str(handoff), "--json")
    assert res.returncode == 0, res.stderr
    rid = json.loads(res.stdout)["restart_id"]
    inflight = netsky.home / "state" / "restart-inflight.json"

    def awaiting_ready() -> bool:
        try:
            m = json.loads(inflight.read_text())["machines"]["agent0"]
        except (OSError, ValueError, KeyError):
            return False
        return bool(m["state"] == "awaiting_ready")

    wait_for(awaiting_ready, 30, "the restart in AWAITING_READY", step_s=0.02)
    assert netsky.proc is not None
    netsky.proc.kill()  # SIGKILL: no shutdown code runs
    netsky.proc.wait(timeout=10)

    netsky.start()
    wait_for(lambda: _idle_after(netsky, "agent0", rid), 60, "the resumed restart verified")
    assert [r["text"] for r in _handoffs(netsky)] == ["resume the migration at step 4"]
    spawned = _query(
        netsky,
        "SELECT COUNT(*) FROM spawns WHERE agent = 'agent0' AND reason LIKE ?",
        f"restart:planned:{rid[:8]}",
    )[0][0]
    assert spawned == 1  # adopted after the kill, not spawned twice
    assert _query(netsky, "SELECT outcome FROM restarts WHERE restart_id = ?", rid) == [("ok",)]
    events = _query(netsky, "SELECT agent FROM events WHERE event = 'restart.resumed'")
    assert events == [("agent0",)]
    assert {"agent0", "agent1", "agentinfinity"} <= netsky.sessions()


def test_stopped_tmux_server_does_not_wedge_the_tick(netsky: Netsky) -> None:
    netsky.configure(clones=0, tmux_timeout_s=1.0, tick_interval_s=1.0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 60, "agents ready")
    pid = int(
        subprocess.run(
            ["tmux", "-L", netsky.socket_name, "display-message", "-p", "#{pid}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    )
    ticks_before = netsky.status()["daemon"]["ticks"]
    os.kill(pid, signal.SIGSTOP)
    try:
        escalations = netsky.home / "state" / "escalations"
        found = wait_for(
            lambda: [json.loads(p.read_text()) for p in escalations.glob("*.json")],
            30,
            "an incident for the unresponsive tmux",
        )
        assert found[0]["key"] == "tmux:unresponsive"
        # Ticks keep finishing (each bounded by its deadline), and status still answers.
        wait_for(lambda: netsky.status()["daemon"]["ticks"] >= ticks_before + 2, 30, "ticks go on")
        rows = _query(netsky, "SELECT summary FROM ticks ORDER BY id DESC LIMIT 1")
        assert "did not answer" in json.loads(rows[0][0]).get("error", "")
        assert not _query(netsky, "SELECT 1 FROM crashes")  # silence is not death
    finally:
        os.kill(pid, signal.SIGCONT)
    # tmux answers again: nothing was restarted behind its back.
    wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 30, "agents still ready")
    assert _query(netsky, "SELECT COUNT(*) FROM restarts")[0][0] == 0


def test_stale_and_corrupt_markers_are_reconciled_and_foreign_sessions_reported(
    netsky: Netsky,
) -> None:
    state = netsky.home / "state"
    state.mkdir(parents=True)
    # Left by a previous daemon: agent0 "gave up", yet no machine says so any more.
    (state / "gave-up.json").write_text(
        json.dumps({"agents": {"agent0": {"failure": "exit-1", "retry_at": 4e9}}})
    )
    (state / "restart-inflight.json").write_text("{half a file")
    # A session with an agent's name that netsky did not spawn (no nonce, no home).
    subprocess.run(
        ["tmux", "-L", netsky.socket_name, "new-session", "-d", "-s", "agent7", "sleep 300"],
        check=True,
        timeout=10,
    )
    netsky.configure(clones=0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 60, "agents ready")
    assert not (state / "gave-up.json").exists()  # archived as stale, blocks nothing
    archived = [json.loads(p.read_text()) for p in (state / "archive").glob("gave-up-*.json")]
    assert archived and archived[0]["why"] == "stale" and archived[0]["agent"] == "agent0"
    assert list(state.glob("restart-inflight.json.corrupt-*"))  # moved aside, not reset
    events = {e for (e,) in _query(netsky, "SELECT event FROM events")}
    assert {"marker.stale", "restart.inflight_corrupt"} <= events
    st = netsky.status()
    assert "agent7" in st["unknown_sessions"]
    assert "agent7" not in {a["agent"] for a in st["agents"]}  # reported, not adopted
    assert "agent7" in netsky.sessions()  # and left alone


#: A custom runtime for one agent: an ordinary demo agent until ``<home>/fresh-dies``
#: exists; from then on each fresh session writes its readiness record, waits until its
#: own restart is VERIFYING (``state/restart-inflight.json``), and exits 3 at once.
DIES_WHILE_VERIFYING = """\
import json, os, sys, time
from pathlib import Path

home = Path(os.environ["NETSKY_HOME"])
agent = "agent" + os.environ["AGENT_N"]
if not (home / "fresh-dies").exists():
    os.execv(sys.executable, [sys.executable, "-m", "netskyd.agents.demo_agent"])
from netskyd.agents.readiness import write_ready_record

session = os.environ["NETSKY_SESSION_ID"]
ready = home / "state" / "ready" / f"{agent}.json"
write_ready_record(ready, agent, session, "custom", os.getpid())
print(f"{agent}: ready; dying as soon as my restart is verifying", flush=True)
inflight = home / "state" / "restart-inflight.json"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        state = json.loads(inflight.read_text())["machines"][agent]["state"]
    except (OSError, ValueError, KeyError, TypeError):
        state = None
    if state == "verifying":
        print(f"{agent}: dying while verifying (exit 3)", flush=True)
        sys.exit(3)
    time.sleep(0.02)
sys.exit(4)  # never saw VERIFYING: the failure class says so
"""


@pytest.mark.timeout(120)  # far below restart_verify_s: waiting the window out fails
@pytest.mark.parametrize("agent", ["agent0", "agent1"])
def test_a_death_while_verifying_fails_the_attempt_at_once(
    netsky: Netsky, tmp_path: Path, agent: str
) -> None:
    script = tmp_path / "dies_while_verifying.py"
    script.write_text(DIES_WHILE_VERIFYING)
    netsky.configure(
        clones=1,
        agent_runtimes={agent: "custom"},
        custom_command=f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}",
        tick_interval_s=3600.0,  # only the session watcher can notice in time
        restart_verify_s=300.0,
        restart_step_deadline_s=600.0,  # no stuck-verifying backstop either
        restart_backoff_base_s=0.2,
        restart_max_attempts=2,
    )
    netsky.start()
    wait_for(lambda: netsky.all_ready(THREE), 60, "agents ready")
    (netsky.home / "fresh-dies").touch()
    assert netsky.ctl("channel", "send", agent, "crash", "--from", "owner").returncode == 0

    # Both attempts' fresh sessions die while verifying: each fails when it dies, and
    # the second gives up, all well inside one 300 s verification window.
    wait_for(
        lambda: (_machine(netsky, agent) or {}).get("state") == "gave_up",
        60,
        f"{agent}'s restart to give up after two deaths while verifying",
    )
    rows = _query(
        netsky,
        "SELECT attempt, cause, outcome, failure FROM restarts WHERE agent = ? ORDER BY attempt",
        agent,
    )
    assert rows == [(1, "crash", "failed", "exit-3"), (2, "crash", "failed", "exit-3")]
    moves = [
        json.loads(f)
        for (f,) in _query(
            netsky,
            "SELECT fields FROM events WHERE event = 'restart.transition' AND agent = ? "
            "ORDER BY id",
            agent,
        )
    ]
    from_verifying = [(m["new"], m["on"]) for m in moves if m["old"] == "verifying"]
    assert from_verifying == [("failed", "Gone"), ("gave_up", "Gone")], moves
    crashes = _query(
        netsky,
        "SELECT exit_status, failure, noticed_by FROM crashes WHERE agent = ? ORDER BY id",
        agent,
    )
    assert [c[:2] for c in crashes] == [(3, "exit-3")] * 3  # the first death, then two fresh
    assert all(c[2].split(":")[0] in ("hook", "sweep") for c in crashes), crashes
    gave_up = json.loads((netsky.home / "state" / "gave-up.json").read_text())
    assert gave_up["agents"][agent]["failure"] == "exit-3"
    assert "died while verifying" in gave_up["agents"][agent]["detail"]
    others = [a for a in THREE if a != agent and not (agent == "agent0" and a == "agent1")]
    assert netsky.all_ready(others)  # agentinfinity (and agent0 for a clone) untouched
