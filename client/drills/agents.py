"""Drills of faults in the agents: agent0 killed, a clone hung, a runtime that will not
start until the owner fixes it (stdlib only).

Each drill is ``fn(run, box)``: it configures its sandbox, starts the daemon, injects
the fault, records steps and timings, and raises DrillFailed with the reason when the
repair does not come (client.drills runs it and tears the sandbox down).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from typing import Any

from client.drills.run import DrillFailed, Run
from client.drills.sandbox import Sandbox
from netsky_shared import protocol
from netsky_shared.errors import NetskyError
from netsky_shared.incidents import parse_rfc3339

THREE = ["agent0", "agent1", "agentinfinity"]
#: The give-up marker (netskyd.supervision.restart.markers.MARKERS["gave-up"]; a unit test checks).
GAVE_UP_MARKER = "gave-up.json"


def event_ms(run: Run, name: str, row: dict[str, Any], since_wall: float, since: float) -> float:
    """Record ``timings_ms[name]`` from ``since_wall`` (unix s) to the journal ``row``'s
    own timestamp; from the monotonic ``since`` to now when the row has none."""
    ts = parse_rfc3339(str(row.get("ts", "")))
    if ts is None:
        return run.timing(name, since)
    ms = round(max(0.0, ts - since_wall) * 1000, 1)
    run.timings_ms[name] = ms
    return ms


def delivered_legs(incident: dict[str, Any]) -> list[str]:
    """The legs that delivered ``incident``'s current round."""
    legs = incident.get("legs") or {}
    return sorted(n for n, leg in legs.items() if (leg or {}).get("status") == "delivered")


def agent0_crash(run: Run, box: Sandbox) -> None:
    """kill -9 agent0's pane process; agent0 must come back in a new session, with the
    synthetic handoff delivered, and agentinfinity untouched."""
    box.configure(clones=1)
    box.start_daemon()
    rows = box.wait_ready(THREE)
    pid, infinity = rows["agent0"]["pane_pid"], rows["agentinfinity"]["pane_pid"]
    since_wall, since = time.time(), run.clock()
    os.kill(pid, signal.SIGKILL)
    run.step("fault", f"kill -9 agent0's pane process (pid {pid})")

    crash = run.wait(
        lambda: next((r for r in box.journal("agent.crashed") if r.get("agent") == "agent0"), None),
        "the daemon to record agent0's death (agent.crashed)",
        timeout_s=30,
    )
    ms = event_ms(run, "noticed_ms", crash, since_wall, since)
    run.step("noticed", f"after {ms:.0f} ms by {crash.get('noticed_by')}: {crash.get('reason')}")

    def back() -> dict[str, Any] | None:
        row = box.agents().get("agent0") or {}
        return row if row.get("ready") and row.get("pane_pid") not in (None, pid) else None

    row = run.wait(back, "agent0 ready in a new session", timeout_s=60, poll_s=0.2)
    ms = run.timing("ready_ms", since)
    run.step("ready", f"agent0 back after {ms:.0f} ms (pane pid {row['pane_pid']})")

    handoffs = run.wait(
        lambda: [r for r in box.receipts("agent0") if r.get("kind") == "handoff"],
        "the synthetic handoff delivered to the new agent0",
        timeout_s=60,
    )
    ms = run.timing("handoff_ms", since)
    text = str(handoffs[0].get("text", ""))
    if "died unexpectedly" not in text:
        raise DrillFailed(f"agent0's handoff does not say its predecessor died: {text[:200]!r}")
    run.step("handed off", f"after {ms:.0f} ms: {text.splitlines()[0][:100]}")

    def verified() -> bool:
        st = box.call(protocol.STATUS)
        machine = next((m for m in st["restarts"] if m["agent"] == "agent0"), None)
        last = st["last_restarts"].get("agent0") or {}
        return machine is not None and machine["state"] == "idle" and last.get("outcome") == "ok"

    run.wait(verified, "agent0's restart to be verified", timeout_s=30, poll_s=0.2)
    ms = run.timing("verified_ms", since)
    now = box.agents()
    if now.get("agentinfinity", {}).get("pane_pid") != infinity:
        raise DrillFailed("agentinfinity was restarted with agent0 (it must survive)")
    run.step("verified", f"restart verified after {ms:.0f} ms; agentinfinity untouched")


def hang(run: Run, box: Sandbox) -> None:
    """agent1 told to hang, then given work: the hang must be marked, shown by ``why``
    and paged (a leg delivered)."""
    box.configure(clones=1, hang_after_s=3.0)
    box.start_daemon()
    box.wait_ready(THREE)
    since = run.clock()
    for text in ("hang", "ping"):
        res = box.ctl("channel", "send", "agent1", text, "--from", "agent0")
        if res.returncode != 0:
            raise DrillFailed(f"channel send agent1 {text!r} failed: {res.stderr.strip()}")
    run.step("fault", "agent1 told 'hang', then sent 'ping' (work pending)")

    marker = box.paths.state / "hang" / "agent1.json"
    run.wait(marker.exists, "the hang marker state/hang/agent1.json", timeout_s=45)
    ms = run.timing("hung_ms", since)
    run.step("marked", f"state/hang/agent1.json after {ms:.0f} ms")

    def hung() -> dict[str, Any] | None:
        res = box.ctl("why", "agent1", "--json")
        if res.returncode != 0:  # "not yet": the screen may be mid-redraw
            raise NetskyError(f"netskyctl why exited {res.returncode}: {res.stderr.strip()}")
        why: dict[str, Any] = json.loads(res.stdout)
        return why if why.get("activity") == "hung" else None

    why = run.wait(hung, "netskyctl why agent1 to say hung", timeout_s=15, poll_s=0.5)
    run.step("why", f"agent1: {why['activity']} — {why.get('reason')}")

    def paged() -> dict[str, Any] | None:
        return next((i for i in box.incidents("hang:agent1") if delivered_legs(i)), None)

    incident = run.wait(paged, "the incident hang:agent1 delivered on a leg", timeout_s=30)
    ms = run.timing("paged_ms", since)
    audit = [r for r in box.owner_pages("hang:agent1") if r.get("status") == "delivered"]
    if not audit:
        raise DrillFailed("no delivered row for hang:agent1 in state/owner-pages.jsonl")
    sentinel = box.home / "OWNER-PAGE.txt"
    run.step(
        "paged",
        f"incident {incident['id']} after {ms:.0f} ms via {', '.join(delivered_legs(incident))}"
        + ("; OWNER-PAGE.txt written" if sentinel.exists() else ""),
    )


def gave_up_archive(run: Run, box: Sandbox) -> None:
    """agent1's runtime exits 3 until a flag file goes: the restarts give up (marker and
    page); once the owner removes the flag, the retry after the cooldown verifies agent1,
    archives the marker and resolves the incident."""
    flag = box.home / "drill-break-agent1"
    flag.write_text("agent1 exits 3 at start while this file exists\n")
    command = (
        f"test -e {shlex.quote(str(flag))} && exit 3; "
        f"exec {shlex.quote(sys.executable)} -m netskyd.agents.demo_agent"
    )
    box.configure(
        clones=1,
        agent_runtimes={"agent1": "custom"},
        custom_command=command,
        restart_max_attempts=2,
        restart_giveup_cooldown_s=4.0,
        crashloop_restarts=20,
    )
    since = run.clock()
    box.start_daemon()
    run.step("fault", "agent1's runtime exits 3 at start while the flag file exists")
    gave_up = box.paths.state / GAVE_UP_MARKER

    def marker_entry() -> dict[str, Any] | None:
        agents = json.loads(gave_up.read_text()).get("agents") or {}
        entry = agents.get("agent1")
        return entry if isinstance(entry, dict) else None

    entry = run.wait(
        lambda: gave_up.exists() and marker_entry(), f"state/{GAVE_UP_MARKER} for agent1"
    )
    ms = run.timing("gave_up_ms", since)
    run.step("gave up", f"after {ms:.0f} ms: {json.dumps(entry, sort_keys=True)[:160]}")

    def paged() -> dict[str, Any] | None:
        return next((i for i in box.incidents("agent1:gave-up") if delivered_legs(i)), None)

    incident = run.wait(paged, "the incident agent1:gave-up delivered on a leg", timeout_s=20)
    run.step("paged", f"incident {incident['id']} via {', '.join(delivered_legs(incident))}")

    fixed = run.clock()
    flag.unlink()
    run.step("repair", "flag file removed (the owner's fix)")

    def archived() -> list[dict[str, Any]]:
        return [
            a
            for p in sorted((box.paths.state / "archive").glob("gave-up-agent1-*.json"))
            if (a := json.loads(p.read_text())).get("why") == "verified"
        ]

    moved = run.wait(archived, "the gave-up marker archived after a verified restart")
    ms = run.timing("archived_ms", fixed)
    if gave_up.exists() and marker_entry() is not None:
        raise DrillFailed(f"agent1 is still in state/{GAVE_UP_MARKER} after it was archived")
    run.step("archived", f"after {ms:.0f} ms: state/archive/gave-up-agent1-* ({moved[0]['why']})")

    def resolved() -> dict[str, Any] | None:
        done = [i for i in box.incidents("agent1:gave-up") if i.get("resolved_ts")]
        return done[-1] if done else None

    incident = run.wait(resolved, "the incident agent1:gave-up resolved", timeout_s=20)
    ms = run.timing("recovered_ms", fixed)
    if not (box.agents().get("agent1") or {}).get("ready"):
        raise DrillFailed("agent1 is not ready although its restart was verified")
    run.step("recovered", f"after {ms:.0f} ms: agent1 ready; {incident.get('resolution')}")
