"""First-run dialogs of the real Claude Code CLI, answered by netskyd by label.

Claude Code comes from the npm registry (``tests/npm_clis.py``), runs offline with a
fake API key against a closed local port. Its HOME has finished onboarding but
has neither trusted the working directory nor approved the key: two start-up
dialogs, one of which preselects the answer netsky must not give ("No
(recommended)"). (The bypass-permissions warning cannot be reached here: Claude
Code refuses ``--dangerously-skip-permissions`` as root, which CI is.)
With seeding off, netsky must see each one as ``waiting`` under its catalogue name,
choose the configured option by its label, and bring the agent to its prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_claude import FAKE_API_KEY, offline_claude
from tests.harness import EnvNetsky, Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.timeout(600)]

SIZES = [(100, 30), (200, 50)]
#: What netsky must answer, and with which label.
EXPECTED = {
    "claude.folder-trust": "Yes, I trust this folder",
    "claude.api-key": "Yes",
}


def events(ns: Netsky, name: str) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((ns.home / "logs").glob("watchdog-events-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return [r for r in rows if r["event"] == name and r.get("agent") == "agent0"]


@pytest.fixture
def first_run(netsky: Netsky, claude_bin: Path, tmp_path: Path) -> Iterator[EnvNetsky]:
    home = tmp_path / "user-home"
    home.mkdir()
    workdir = (tmp_path / "work").absolute()
    workdir.mkdir()
    (home / ".claude.json").write_text(
        json.dumps({"hasCompletedOnboarding": True, "theme": "dark", "numStartups": 3})
    )
    ns = offline_claude(netsky, home)
    ns.configure(
        runtime="claude",
        claude_command=str(claude_bin),
        clones=0,
        agent_runtimes={"agentinfinity": "demo"},
        ready_timeout_s=120,
        workdir=str(workdir),
        seed_runtime_settings=False,
    )
    try:
        yield ns
    finally:
        ns.cleanup()


@pytest.mark.parametrize(("cols", "rows"), SIZES, ids=[f"{c}x{r}" for c, r in SIZES])
def test_first_run_dialogs_answered_by_label(first_run: EnvNetsky, cols: int, rows: int) -> None:
    ns = first_run
    ns.configure(session_width=cols, session_height=rows)
    ns.start()

    def diag() -> str:
        return f"\n--- pane:\n{ns.pane_text('agent0')}\n--- netskyd:\n{ns.stderr()[-4000:]}"

    try:
        wait_for(lambda: ns.agents().get("agent0", {}).get("ready"), 150, "agent0 ready", 0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}{diag()}") from None
    seen = {e["dialog"]: e for e in events(ns, "dialog.seen")}
    assert set(seen) == set(EXPECTED), diag()
    assert all(e["activity"] == "waiting" and e["policy"] == "approve" for e in seen.values())
    # The key question preselects the refusing answer: netsky moved the highlight first.
    assert seen["claude.api-key"]["highlighted"].startswith("No")
    answered = {e["dialog"]: e for e in events(ns, "dialog.answered")}
    assert {d: e["choice"] for d, e in answered.items()} == EXPECTED, diag()
    assert answered["claude.api-key"]["keys"][-1] == "Enter"
    assert answered["claude.api-key"]["keys"][:-1] in (["Up"], ["Down"])
    assert len(events(ns, "dialog.answered")) == len(EXPECTED)  # each once
    why = json.loads(ns.ctl("why", "agent0", "--json").stdout)
    assert why["activity"] == "idle", diag()
    # Claude Code recorded the answers in its own state, as if the owner had given them.
    state = json.loads((Path(ns.env["HOME"]) / ".claude.json").read_text())
    assert state["projects"][str(ns.settings["workdir"])]["hasTrustDialogAccepted"] is True
    assert FAKE_API_KEY[-20:] in state["customApiKeyResponses"]["approved"]
