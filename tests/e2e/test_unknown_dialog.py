"""A dialog netsky does not know: the agent is ``waiting`` (never ``busy``), the owner is
paged once (key ``dialog:<agent>``), no key is ever sent, and the spawn failure names it.

agent0 runs on the ``claude`` runtime, but its command is ``tests/fake_tui.py``: a real
process in a real tmux pane that draws a menu of dialog shape found in no catalogue
entry (a highlighted row, siblings without numbers, a confirm footer) and logs every
byte it receives. The daemon, the monitor, the readiness wait and the escalation are
the real ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MENU = """\
 Claude Code v9.9.9

────────────────────────────────────────────────────────────
 A brand new question from a release netsky has not seen:
 how would you like to continue?

 ❯ Keep going the new way
   Go back to the old way
   Something else entirely

 Enter to confirm · Esc to cancel
"""


def _incidents(ns: Netsky, key: str) -> list[dict[str, Any]]:
    found = []
    for f in sorted((ns.home / "state" / "escalations").glob("*.json")):
        data = json.loads(f.read_text())
        if data.get("key") == key:
            found.append(data)
    return found


def _why(ns: Netsky, agent: str) -> dict[str, Any]:
    res = ns.ctl("why", agent, "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_unknown_dialog_waits_pages_once_and_gets_no_keys(netsky: Netsky, tmp_path: Path) -> None:
    screen = tmp_path / "menu.txt"
    screen.write_text(MENU, encoding="utf-8")
    keys = tmp_path / "keys.log"
    keys.touch()
    netsky.configure(
        runtime="claude",
        claude_command=sys.executable,
        claude_args=[
            str(REPO / "tests" / "fake_tui.py"),
            "--screen",
            str(screen),
            "--keys",
            str(keys),
        ],
        seed_runtime_settings=False,
        clones=0,
        agent_runtimes={"agentinfinity": "demo"},
        ready_timeout_s=12.0,
        dialog_unknown_page_after_s=1.0,
        restart_backoff_base_s=60.0,
    )
    netsky.start()

    why = wait_for(
        lambda: (w := _why(netsky, "agent0"))["activity"] == "waiting" and w,
        30,
        "agent0 classified waiting",
    )
    assert why["evidence"]["dialog"]["name"] == "unknown", why
    assert why["evidence"]["dialog"]["highlighted"] == "Keep going the new way", why
    assert "Enter to confirm · Esc to cancel" in "\n".join(why["evidence"]["screen"]), why

    opened = wait_for(lambda: _incidents(netsky, "dialog:agent0"), 20, "the dialog:agent0 page")
    assert len(opened) == 1, opened

    # The readiness wait gives up and says why: the dialog, not a bare timeout.
    def failure() -> str:
        agents = netsky.ctl("status", "--json")
        for a in json.loads(agents.stdout)["agents"]:
            if a["agent"] == "agent0" and a.get("last_error"):
                return str(a["last_error"])
        return ""

    error = wait_for(failure, 40, "agent0's spawn failure")
    assert "waiting on dialog unknown" in error, error
    assert "Keep going the new way" in error, error

    # Still one incident, one page, and not one key sent to the unknown dialog.
    incidents = _incidents(netsky, "dialog:agent0")
    assert len(incidents) == 1, incidents
    assert keys.read_bytes() == b"", keys.read_bytes()
    events = []
    for f in sorted((netsky.home / "logs").glob("watchdog-events-*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines()]
    assert not [e for e in events if e["event"].startswith("dialog.answer")], events
    assert [e for e in events if e["event"] == "dialog.paged"], events
