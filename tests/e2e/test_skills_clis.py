"""The skills netskyd installs at spawn, as the real CLIs list them (docs/notes.md):
Claude Code's ``/`` menu shows each role's set from netsky's plugin (agent0 all four,
a clone /up and /down only), and Codex lists netsky's skills with ``$``. Both CLIs run
offline (the fixtures of test_claude.py and test_codex.py), pinned and ``@latest``."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.e2e.test_claude import _ready, _wait, claude_netsky  # noqa: F401 - fixture
from tests.e2e.test_codex import codex_netsky  # noqa: F401 - fixture
from tests.harness import EnvNetsky

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ALL = ("up", "down", "restart", "spawn")


def typed(ns: EnvNetsky, agent: str, keys: str, expect: str, timeout_s: float = 30) -> str:
    """Type ``keys`` into ``agent``'s input (not submitted), wait until the pane shows
    ``expect``, return the pane, and clear the input again."""
    tmux = ["tmux", "-L", ns.socket_name]
    subprocess.run([*tmux, "send-keys", "-t", f"={agent}:", "-l", keys], check=True, timeout=10)
    deadline = time.monotonic() + timeout_s
    text = ""
    try:
        while time.monotonic() < deadline:
            text = ns.pane_text(agent)
            if expect in text:
                time.sleep(0.5)  # let the menu finish drawing
                return ns.pane_text(agent)
            time.sleep(0.3)
        raise AssertionError(f"{expect!r} never showed in {agent}'s pane:\n{text}")
    finally:
        subprocess.run([*tmux, "send-keys", "-t", f"={agent}:", "Escape"], timeout=10, check=False)
        subprocess.run([*tmux, "send-keys", "-t", f"={agent}:", "C-u"], timeout=10, check=False)


@pytest.mark.claude
def test_claude_code_lists_each_roles_skills(claude_netsky: EnvNetsky) -> None:  # noqa: F811
    ns = claude_netsky
    ns.start()
    _wait(ns, lambda: _ready(ns, "agent0"), 120, "agent0 ready")
    added = ns.ctl("agent", "1", "--runtime", "claude", "--timeout", "120", timeout=180)
    assert added.returncode == 0, added.stdout + added.stderr
    menu = typed(ns, "agent0", "/netsky:", "/netsky:up")
    for name in ALL:
        assert f"/netsky:{name}" in menu, menu
    clone = typed(ns, "agent1", "/netsky:", "/netsky:up")
    assert "/netsky:up" in clone and "/netsky:down" in clone, clone
    assert "/netsky:spawn" not in clone and "/netsky:restart" not in clone, clone
    # a re-spawn installs the same set again, no duplicates
    assert ns.ctl("kill", "agent1").returncode == 0
    again = ns.ctl("agent", "1", "--runtime", "claude", "--timeout", "120", timeout=180)
    assert again.returncode == 0, again.stderr
    clone = typed(ns, "agent1", "/netsky:", "/netsky:up")
    assert clone.count("/netsky:up") == 1, clone
    doctor = ns.ctl("doctor", "--json").stdout
    assert '"name": "skills"' in doctor and "/up, /down, /restart, /spawn" in doctor


def test_codex_finds_netskys_skills(codex_netsky: EnvNetsky) -> None:  # noqa: F811
    ns = codex_netsky
    ns.start()
    _wait(ns, lambda: _ready(ns, "agent0"), 120, "agent0 ready")
    listed = typed(ns, "agent0", "$netsky", "netsky-up")
    for name in ALL:
        assert f"netsky-{name}" in listed, listed
    assert "[Skill]" in listed
