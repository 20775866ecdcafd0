"""End to end: a real netskyd process, real tmux on a private socket, demo agents."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
ALL = ["agent0", "agent1", "agent2", "agentinfinity"]


def test_constellation_lifecycle(netsky: Netsky) -> None:
    netsky.start()
    sock = netsky.home / "netskyd.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

    # All four agents come up in real tmux sessions and report ready.
    wait_for(lambda: netsky.all_ready(ALL), 60, "all four agents ready")
    assert set(ALL) <= netsky.sessions()
    for agent in ALL:
        prompt = (netsky.home / "state" / "prompts" / f"{agent}.md").read_text()
        assert agent in prompt
        record = json.loads((netsky.home / "state" / "ready" / f"{agent}.json").read_text())
        assert record["agent"] == agent and record["runtime"] == "demo"

    # agent0 pings agent1 over the bus; agent1's demo agent answers with a pong.
    sent = netsky.ctl("channel", "send", "agent1", "ping", "--from", "agent0", "--json")
    assert sent.returncode == 0, sent.stderr
    ping_id = json.loads(sent.stdout)["id"]
    delivered0 = netsky.home / "channels" / "agent" / "agent0" / "delivered"

    def pong_delivered() -> list[dict[str, object]]:
        found = [json.loads(p.read_text()) for p in delivered0.glob("*.json")]
        return [e for e in found if e["text"] == "pong" and e["from"] == "agent1"]

    pong = wait_for(pong_delivered, 30, "agent1's pong in agent0's delivered/")[0]
    assert pong["to"] == "agent0"
    wait_for(lambda: "← agent1: pong" in netsky.pane_text("agent0"), 10, "pong in agent0's pane")
    assert "← agent0: ping" in netsky.pane_text("agent1")
    assert list((netsky.home / "channels/agent/agent1/delivered").glob(f"*{ping_id}.json"))

    # Deliveries are recorded in meta.db (and journalled first).
    db = sqlite3.connect(netsky.home / "meta.db")
    rows = db.execute("SELECT envelope_id, recipient, status FROM messages").fetchall()
    assert (ping_id, "agent1", "delivered") in rows
    assert db.execute("SELECT COUNT(*) FROM ticks").fetchone()[0] >= 1
    db.close()
    journal = "".join(p.read_text() for p in (netsky.home / "logs").glob("watchdog-events-*.jsonl"))
    assert ping_id in journal

    # Kill agent0's session behind the daemon's back: it is respawned within a few ticks.
    old_pid = netsky.agents()["agent0"]["pane_pid"]
    netsky.tmux.kill_session("agent0")
    wait_for(
        lambda: (a := netsky.agents()["agent0"])["ready"] and a["pane_pid"] != old_pid,
        30,
        "agent0 respawned",
    )
    assert "agent0" in netsky.sessions()

    # down: no agent sessions remain, and the daemon does not bring them back.
    down = netsky.ctl("down", "--json")
    assert down.returncode == 0, down.stderr
    assert set(json.loads(down.stdout)["killed"]) == set(ALL)
    wait_for(lambda: not (netsky.sessions() & set(ALL)), 10, "no agent sessions")
    st = netsky.status()
    assert st["desired"]["state"] == "down"
    assert st["daemon"]["ticks"] >= 1

    # SIGTERM: exit 0, socket removed.
    assert netsky.stop() == 0
    assert not sock.exists()
    assert "stopped:" in netsky.stderr()


def test_down_is_remembered_and_envelopes_waiting_at_start_are_delivered(netsky: Netsky) -> None:
    netsky.start()
    wait_for(lambda: netsky.all_ready(ALL), 60, "agents ready")
    assert netsky.ctl("down").returncode == 0
    assert netsky.stop() == 0

    # With the daemon down, a message is queued; the last word was down, so nothing starts.
    sent = netsky.ctl("channel", "send", "agent2", "hello while you were out", "--from", "owner")
    assert sent.returncode == 0, sent.stderr
    netsky.start()
    st = netsky.status()
    assert st["desired"]["state"] == "down"
    assert not (netsky.sessions() & set(ALL))
    assert len(list((netsky.home / "channels/agent/agent2/inbox").glob("*.json"))) == 1

    # up brings it back, and the waiting envelope is delivered.
    res = netsky.ctl("up", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    assert json.loads(res.stdout)["ready"] is True
    wait_for(
        lambda: "← owner: hello while you were out" in netsky.pane_text("agent2"),
        20,
        "queued envelope delivered after up",
    )


def test_second_daemon_refuses(netsky: Netsky) -> None:
    netsky.start()
    res = subprocess.run(
        [sys.executable, "-m", "netskyd", "run", "--config", str(netsky.config)],
        env=netsky.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 1
    assert "already running" in res.stderr
    assert netsky.ctl("ping").returncode == 0


def test_agent_and_kill(netsky: Netsky) -> None:
    netsky.configure(clones=0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 60, "agent0 ready")
    res = netsky.ctl("agent", "3", "--runtime", "shell", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    row = json.loads(res.stdout)["agents"][0]
    assert row["agent"] == "agent3" and row["runtime"] == "shell" and row["ready"]
    assert "agent3" in netsky.sessions()

    res = netsky.ctl("kill", "agent3", "--json")
    assert json.loads(res.stdout) == {"agent": "agent3", "killed": True, "desired": False}
    wait_for(lambda: "agent3" not in netsky.sessions(), 10, "agent3 gone")
    assert "agent3" not in netsky.agents()

    bad = netsky.ctl("kill", "agent-x")
    assert bad.returncode == 2 and "not an agent id" in bad.stderr


def test_bad_envelope_is_poisoned_and_does_not_block_the_next(netsky: Netsky) -> None:
    netsky.configure(clones=1)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0", "agent1", "agentinfinity"]), 60, "agents ready")
    inbox = netsky.home / "channels/agent/agent1/inbox"
    (inbox / "0000000000000000001-agent0-bad.json").write_text("{this is not json")
    good = netsky.ctl("channel", "send", "agent1", "after the bad one", "--from", "agent0")
    assert good.returncode == 0
    wait_for(
        lambda: "← agent0: after the bad one" in netsky.pane_text("agent1"),
        20,
        "the good envelope delivered",
    )
    poison = netsky.home / "channels/agent/agent1/poison"
    reason = json.loads((poison / "0000000000000000001-agent0-bad.json.reason.json").read_text())
    assert reason["rule"] == "not-json"
    assert (poison / "0000000000000000001-agent0-bad.json").exists()
    assert netsky.status()["bus"]["poisoned"] == 1


def test_sigterm_leaves_agents_running_and_the_next_daemon_adopts_them(netsky: Netsky) -> None:
    netsky.configure(clones=1)
    names = ["agent0", "agent1", "agentinfinity"]
    netsky.start()
    wait_for(lambda: netsky.all_ready(names), 60, "agents ready")
    before = {a: row["pane_pid"] for a, row in netsky.agents().items()}

    # The spawn path put the contract's variables into each session's environment.
    session = netsky.tmux.sessions.get(session_name="agent1")
    env = session.show_environment()
    assert env["AGENT_N"] == "1"
    assert env["NETSKY_HOME"] == str(netsky.home)
    assert env["NETSKY_PROMPT_FILE"] == str(netsky.home / "state/prompts/agent1.md")
    assert env["NETSKY_SESSION_ID"]

    assert netsky.stop() == 0
    assert set(names) <= netsky.sessions()  # agents outlive the daemon

    netsky.start()
    wait_for(lambda: netsky.all_ready(names), 30, "adopted agents ready")
    after = netsky.agents()
    assert {a: after[a]["pane_pid"] for a in names} == {a: before[a] for a in names}
    assert all(after[a]["spawns"] == 0 for a in names)  # adopted, not respawned
    db = sqlite3.connect(netsky.home / "meta.db")
    adopted = db.execute("SELECT agent FROM events WHERE event = 'agent.adopted'").fetchall()
    db.close()
    assert sorted(a for (a,) in adopted) == sorted(names)
