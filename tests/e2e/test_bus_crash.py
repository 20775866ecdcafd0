"""kill -9 of the real daemon at random (seeded) moments while envelopes flow: after the
restarts every envelope sent is in ``delivered/`` (or ``poison/``), none is lost, and
every one that reached an agent twice is recorded as a repeat.

The demo agents write a receipt line for every message they read, so "reached the
agent twice" is observed at the agent, not inferred from the daemon's own records.
A long ``paste_settle_ms`` widens the window between the paste and the ack, where a
kill leaves a pasted-but-unacknowledged envelope behind.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from netsky_shared.maildir import new_envelope, send
from netsky_shared.paths import Paths
from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AGENTS = ["agent0", "agent1", "agent2", "agentinfinity"]
KILLS = 5


def _ids(box: Path) -> set[str]:
    out = set()
    for p in box.glob("*.json"):
        if p.name.endswith(".reason.json"):
            continue
        out.add(json.loads(p.read_text())["id"])
    return out


def _receipts(paths: Paths) -> Counter[str]:
    seen: Counter[str] = Counter()
    for agent in AGENTS:
        f = paths.demo_receipts(agent)
        if f.exists():
            for line in f.read_text().splitlines():
                seen[json.loads(line)["text"]] += 1
    return seen


def _settled(paths: Paths) -> bool:
    return not any(
        any(paths.channel(a, box).iterdir())
        for a in AGENTS
        for box in ("inbox", "claimed")
        if paths.channel(a, box).exists()
    )


@pytest.mark.parametrize("seed", [7, 2026])
def test_kill_9_while_envelopes_flow_loses_nothing_and_marks_repeats(
    netsky: Netsky, seed: int
) -> None:
    rng = random.Random(seed)
    netsky.configure(clones=2, paste_settle_ms=150)
    netsky.start()
    wait_for(lambda: netsky.all_ready(AGENTS), 60, "agents ready")
    paths = Paths(netsky.home)

    sent: dict[str, str] = {}  # envelope id -> text
    stop = threading.Event()
    sender_rng = random.Random(seed + 1)

    def sender() -> None:
        i = 0
        while not stop.is_set():
            text = f"s{seed}-m{i}"
            env = new_envelope("owner", sender_rng.choice(AGENTS), text)
            send(paths, env)
            sent[str(env["id"])] = text
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.9))
            assert netsky.proc is not None
            netsky.proc.kill()  # SIGKILL: no shutdown path runs
            netsky.proc.wait(timeout=10)
            netsky.start()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert len(sent) > 50

    wait_for(lambda: _settled(paths), 90, "every inbox and claim to drain")
    delivered: set[str] = set()
    poisoned: set[str] = set()
    for a in AGENTS:
        delivered |= _ids(paths.channel(a, "delivered"))
        poisoned |= _ids(paths.channel(a, "poison"))
    lost = set(sent) - delivered - poisoned
    assert not lost, f"{len(lost)} envelopes lost"
    assert not poisoned, f"valid envelopes were poisoned: {sorted(poisoned)[:5]}"

    # Every envelope reached its agent; the ones that reached it twice are marked.
    texts = {text: i for i, text in sent.items()}
    wait_for(
        lambda: set(_receipts(paths)) >= set(texts), 30, "every message in a demo agent's receipts"
    )
    db = sqlite3.connect(netsky.home / "meta.db")
    try:
        rows = db.execute(
            "SELECT envelope_id, duplicate FROM messages WHERE status = 'delivered'"
        ).fetchall()
    finally:
        db.close()
    recorded = {i for i, _ in rows}
    marked = {i for i, dup in rows if dup}
    assert set(sent) <= recorded
    repeats = {texts[t] for t, n in _receipts(paths).items() if n > 1 and t in texts}
    unmarked = repeats - marked
    assert not unmarked, f"repeats that the records do not mark: {sorted(unmarked)}"
