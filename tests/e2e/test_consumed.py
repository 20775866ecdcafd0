""""Delivered" means the agent has it: a real netskyd, real demo agents in a private tmux
server, a real meta.db.

- an envelope to a demo agent is recorded consumed (``consumed_at`` set, after its
  ``submitted_at``; ``envelope.consumed`` in the journal);
- one pasted into a demo agent told to ``hang`` is not consumed: Enter is pressed once
  more, then it is reported (``channel ls`` counts it, ``--json`` lists its id, ``why``
  names it) and stays delivered, pasted once;
- the second unconsumed envelope in a row pages the owner (the desktop sentinel and one
  incident ``unconsumed:agent0``); the third joins that incident, no second page.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = {
    "clones": 0,
    "consume_timeout_s": 0.5,
    "unconsumed_page_after": 2,
    "escalation_spool_s": 0.1,
    "legs": {"tmux": {"enabled": False}},
}


def rows(home: Path, envelope_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "meta.db") as db:
        db.row_factory = sqlite3.Row
        return [
            dict(r)
            for r in db.execute(
                "SELECT * FROM messages WHERE envelope_id = ? AND status = 'delivered'",
                (envelope_id,),
            )
        ]


def send(ns: Netsky, text: str) -> str:
    res = ns.ctl("channel", "send", "agent0", text, "--from", "agent1", "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["id"])


def settled(ns: Netsky, envelope_id: str, state: str) -> dict[str, Any] | None:
    found = rows(ns.home, envelope_id)
    return found[0] if found and found[0]["consumption"] == state else None


def journal(home: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for f in sorted((home / "logs").glob("watchdog-events-*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            if row.get("event") == event:
                out.append(row)
    return out


def incidents(home: Path, key: str) -> list[dict[str, Any]]:
    found = []
    for f in (home / "state" / "escalations").glob("*.json"):
        value = json.loads(f.read_text())
        if value.get("key") == key:
            found.append(value)
    return found


def diag(ns: Netsky) -> str:
    return f"\n--- agent0 pane:\n{ns.pane_text('agent0')}\n--- netskyd:\n{ns.stderr()[-3000:]}"


def test_envelope_to_a_demo_agent_is_recorded_consumed(netsky: Netsky) -> None:
    netsky.configure(clones=0)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0"]), 60, "agent0 ready")
    envelope_id = send(netsky, "hello, are you there?")
    row = wait_for(lambda: settled(netsky, envelope_id, "consumed"), 20, "consumed" + diag(netsky))
    assert row["submitted_at"] and row["consumed_at"] >= row["submitted_at"], row
    assert row["enter_retries"] == 0
    assert "← agent1: hello, are you there?" in netsky.pane_text("agent0")
    [event] = [e for e in journal(netsky.home, "envelope.consumed")
               if e.get("envelope_id") == envelope_id]
    assert event["consumed_at"] == row["consumed_at"] and event["after_ms"] >= 0
    res = netsky.ctl("channel", "ls", "agent0", "--json")
    [agent0] = json.loads(res.stdout)["agents"]
    assert (agent0["delivered"], agent0["unconsumed"], agent0["unconsumed_ids"]) == (1, 0, [])


def test_unconsumed_envelopes_are_retried_reported_and_paged_once(netsky: Netsky) -> None:
    netsky.configure(**FAST)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0"]), 60, "agent0 ready")
    hang = send(netsky, "hang")
    # The drill itself is taken: the demo agent shows it, then hangs.
    wait_for(lambda: settled(netsky, hang, "consumed"), 20, "the hang consumed" + diag(netsky))
    wait_for(lambda: "hanging (ignoring input)" in netsky.pane_text("agent0"), 10, "hanging")

    first = send(netsky, "are you still there?")
    row = wait_for(lambda: settled(netsky, first, "unconsumed"), 20, "unconsumed" + diag(netsky))
    assert row["consumed_at"] is None and row["enter_retries"] == 1, row
    [event] = [e for e in journal(netsky.home, "envelope.unconsumed")
               if e.get("envelope_id") == first]
    assert event["retried"] is True and event["reason"]
    # Still delivered, pasted once: a flag on the record, not a redelivery.
    delivered = netsky.home / "channels" / "agent" / "agent0" / "delivered"
    assert list(delivered.glob(f"*{first}.json"))
    with sqlite3.connect(netsky.home / "meta.db") as db:
        [(attempts,)] = db.execute(
            "SELECT COUNT(*) FROM attempts WHERE envelope_id = ?", (first,)
        ).fetchall()
    assert attempts == 1

    res = netsky.ctl("channel", "ls", "agent0", "--json")
    [agent0] = json.loads(res.stdout)["agents"]
    assert agent0["unconsumed"] == 1 and agent0["unconsumed_ids"] == [first], agent0
    text = netsky.ctl("channel", "ls", "agent0").stdout.splitlines()
    assert text[0].split()[-1] == "UNCONSUMED" and text[1].split()[-1] == "1", text
    why = json.loads(netsky.ctl("why", "agent0", "--json").stdout)
    assert why["unconsumed"]["streak"] == 1
    assert [e["id"] for e in why["unconsumed"]["envelopes"]] == [first]
    assert first in netsky.ctl("why", "agent0").stdout
    # One in a row is reported, not paged.
    assert not incidents(netsky.home, "unconsumed:agent0")

    second = send(netsky, "hello?")
    wait_for(lambda: settled(netsky, second, "unconsumed"), 20, "second unconsumed")
    [incident] = wait_for(
        lambda: incidents(netsky.home, "unconsumed:agent0"), 10, "the unconsumed incident"
    )
    sentinel = netsky.home / "OWNER-PAGE.txt"
    wait_for(sentinel.exists, 10, "the desktop sentinel")
    assert "agent0 is not taking its envelopes" in sentinel.read_text()
    assert second in incident["body"]

    third = send(netsky, "anyone?")
    wait_for(lambda: settled(netsky, third, "unconsumed"), 20, "third unconsumed")
    [incident] = wait_for(
        lambda: [i for i in incidents(netsky.home, "unconsumed:agent0") if i["count"] == 2],
        10,
        "the third joining the incident",
    )
    assert incident["rounds"] == 1  # paged once
    why = json.loads(netsky.ctl("why", "agent0", "--json").stdout)
    assert [e["id"] for e in why["unconsumed"]["envelopes"]] == [first, second, third]
    res = netsky.ctl("channel", "ls", "agent0", "--json")
    assert json.loads(res.stdout)["agents"][0]["unconsumed_ids"] == [first, second, third]
