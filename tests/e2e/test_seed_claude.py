"""End to end: seeding before asking, with the real Claude Code CLI.

netskyd spawns agent0 on the ``claude`` runtime with an empty HOME: nothing but
netsky's seeding (netskyd/agents/seeding.py) stands between Claude Code and its first-run
screens. With the default dialog policy (approve), the API-key question, the folder
trust dialog and onboarding never show (no ``dialog.answered``: the monitor had
nothing to answer) and the idle screen does not say "Not logged in". The working
directory is a symlink, so the trust entry must be for the physical cwd. A key the
owner rejected stays rejected: netsky never overrules it (``runtime.seed_left``). Offline like
tests/e2e/test_claude.py: a fake key, the API at a closed local port.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_claude import FAKE_API_KEY, _diagnostics, _wait, offline_claude
from tests.harness import EnvNetsky, Netsky

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.timeout(600)]
SUFFIX = FAKE_API_KEY[-20:]
SETUP_QUESTIONS = ("Detected a custom API key", "trust this folder", "Choose the text style")


@pytest.fixture
def bare_claude(netsky: Netsky, claude_bin: Path, tmp_path: Path) -> Iterator[EnvNetsky]:
    home = tmp_path / "user-home"
    home.mkdir()
    real = tmp_path / "work-real"
    real.mkdir()
    (tmp_path / "work").symlink_to(real)
    ns = offline_claude(netsky, home)
    ns.configure(
        runtime="claude",
        claude_command=str(claude_bin),
        clones=0,
        agent_runtimes={"agentinfinity": "demo"},
        ready_timeout_s=90,
        workdir=str(tmp_path / "work"),
    )
    try:
        yield ns
    finally:
        ns.cleanup()


def _events(ns: Netsky, name: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(ns.home / "meta.db")
    try:
        rows = db.execute("SELECT fields FROM events WHERE event = ? ORDER BY id", (name,))
        return [json.loads(f) for (f,) in rows.fetchall()]
    finally:
        db.close()


def _idle_screen(ns: EnvNetsky) -> str:
    _wait(ns, lambda: ns.agents().get("agent0", {}).get("ready"), 120, "agent0 ready")
    time.sleep(3)  # the footer's login status is drawn after the prompt
    return ns.pane_text("agent0")


def test_seeding_means_no_setup_question_and_logged_in(
    bare_claude: EnvNetsky, tmp_path: Path
) -> None:
    ns = bare_claude
    ns.start()
    screen = _idle_screen(ns)
    assert "Not logged in" not in screen, _diagnostics(ns)
    assert not any(q in screen for q in SETUP_QUESTIONS), _diagnostics(ns)
    assert _events(ns, "dialog.answered") == [], _diagnostics(ns)  # nothing was ever asked

    state = json.loads((tmp_path / "user-home" / ".claude.json").read_text())
    assert state["customApiKeyResponses"]["approved"] == [SUFFIX]
    physical = str((tmp_path / "work-real").resolve())
    assert state["projects"][physical]["hasTrustDialogAccepted"] is True
    rows = [json.loads(x) for x in (ns.home / "state" / "seeded.jsonl").read_text().splitlines()]
    assert {(r["key"], r["action"]) for r in rows} == {
        ("hasCompletedOnboarding", "set"),
        (f"projects[{json.dumps(physical)}].hasTrustDialogAccepted", "set"),
        ("customApiKeyResponses.approved", "set"),
    }
    assert SUFFIX not in (ns.home / "state" / "seeded.jsonl").read_text()


def test_a_key_the_owner_rejected_stays_rejected(bare_claude: EnvNetsky, tmp_path: Path) -> None:
    ns = bare_claude
    claude = tmp_path / "user-home" / ".claude.json"
    claude.write_text(json.dumps({"customApiKeyResponses": {"approved": [], "rejected": [SUFFIX]}}))
    ns.start()
    screen = _idle_screen(ns)
    # Claude remembers "no" (2.1.197 then says "Not logged in"; 2.1.332 does not).
    assert "Detected a custom API key" not in screen, _diagnostics(ns)
    assert json.loads(claude.read_text())["customApiKeyResponses"] == {
        "approved": [],
        "rejected": [SUFFIX],
    }
    (left,) = _events(ns, "runtime.seed_left")
    assert left["key"] == "customApiKeyResponses.approved" and "rejected" in left["note"]
