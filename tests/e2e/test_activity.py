"""Activity classes end to end with a real daemon and demo agents: ``status`` shows the
class, ``why`` gives the evidence, a hang with work pending is marked and paged once,
and output that moves the pane clears the marker."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _why(netsky: Netsky, agent: str) -> dict[str, Any]:
    res = netsky.ctl("why", agent, "--json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _events(netsky: Netsky, name: str) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((netsky.home / "logs").glob("watchdog-events-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return [r for r in rows if r["event"] == name]


def test_status_why_and_a_hang_paged_once(netsky: Netsky) -> None:
    netsky.configure(clones=1, tick_interval_s=0.5, hang_after_s=3)
    netsky.start()
    netsky.wait_all_ready(["agent0", "agent1", "agentinfinity"], 30)
    wait_for(
        lambda: netsky.agents()["agent1"].get("activity") == "idle", 10, "agent1 idle in status"
    )
    text = netsky.ctl("status").stdout
    assert "ACTIVITY" in text and "idle" in text

    why = _why(netsky, "agent1")
    assert why["activity"] == "idle" and why["reason"] == "at its prompt, nothing pending"
    assert why["evidence"]["at_prompt"] is True and why["evidence"]["process"]["alive"] is True
    assert why["evidence"]["screen"] == ["agent1>"]
    human = netsky.ctl("why", "1")
    assert human.returncode == 0 and human.stdout.startswith("agent1: idle — at its prompt")

    # Told to hang, then given work: hung once the pane has been still for hang_after_s.
    for text in ("hang", "ping"):
        sent = netsky.ctl("channel", "send", "agent1", text, "--from", "agent0")
        assert sent.returncode == 0, sent.stderr
    wait_for(lambda: _why(netsky, "agent1")["activity"] == "hung", 30, "agent1 hung")
    why = _why(netsky, "agent1")
    assert "no answer to a delivery" in why["reason"]
    assert why["evidence"]["pending"]["unanswered_since"]
    wait_for(lambda: _why(netsky, "agent1")["hang_marker"]["paged"], 10, "the page delivered")
    assert "agent1: hanging (ignoring input)" in "\n".join(why["evidence"]["screen"])
    status = netsky.ctl("status").stdout
    assert "attention" in status and "agent1: hung" in status
    # More ticks: still one page.
    wait_for(lambda: len(_events(netsky, "tick")) > 10, 20, "more ticks")
    incidents = json.loads(netsky.ctl("incidents", "--json").stdout)["incidents"]
    assert [(i["key"], i["count"]) for i in incidents] == [("hang:agent1", 1)]
    assert len(_events(netsky, "hang.paged")) == 1

    # Output in the pane (here written to its terminal) clears the marker.
    tty = subprocess.run(
        [
            "tmux",
            "-L",
            netsky.socket_name,
            "display-message",
            "-p",
            "-t",
            "=agent1:",
            "#{pane_tty}",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.strip()
    with open(tty, "w") as f:
        f.write("\r\nthe agent printed something\r\n")
    marker = netsky.home / "state" / "hang" / "agent1.json"
    wait_for(lambda: not marker.exists(), 10, "the hang marker to clear")
    assert [e["by"] for e in _events(netsky, "hang.cleared")] == ["pane moved"]
    assert _why(netsky, "agent1")["activity"] == "busy"  # not at its prompt, still

    unknown = netsky.ctl("why", "agent7")
    assert unknown.returncode == 2 and "not part of the constellation" in unknown.stderr
