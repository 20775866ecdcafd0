"""End to end with the real Claude Code CLI: netskyd spawns agent0 on the ``claude``
runtime in a private tmux server, and delivers an envelope into its pane.

Claude Code comes from the npm registry in two tiers (``tests/npm_clis.py``: the
pinned release, and ``@latest`` installed fresh with ``--latest-clis``; the
``claude_bin`` fixture is in tests/conftest.py); ``NETSKY_TEST_CLAUDE`` may name an
existing executable for the pinned tier. It runs offline and logged out: a temporary HOME holds a
``.claude.json`` that skips onboarding, the trust dialog and the API-key prompt,
and the API base URL points at a closed local port, so the submitted envelope
never leaves the machine (Claude Code just reports a connection error).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import EnvNetsky, Netsky, closed_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.timeout(900)]

#: Fake, never sent anywhere: the base URL below is a closed local port.
FAKE_API_KEY = "sk-ant-netsky-test-" + "x" * 24 + "0123456789abcdefghij"
#: Variables of the test runner's environment that must not reach Claude Code.
CLAUDE_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "CLAUDECODE")


def seed_home(home: Path, workdir: Path, api_key: str) -> None:
    """A HOME where Claude Code starts at its input prompt: onboarded, trusted, key approved."""
    home.mkdir(parents=True, exist_ok=True)
    state = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "numStartups": 5,
        "customApiKeyResponses": {"approved": [api_key[-20:]], "rejected": []},
        "projects": {
            str(workdir): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True},
        },
    }
    (home / ".claude.json").write_text(json.dumps(state, indent=2))


def offline_claude(netsky: Netsky, home: Path) -> EnvNetsky:
    """``netsky`` with Claude Code's environment: ``home`` as HOME, the fake key, the API
    at a closed local port, no updater or telemetry, nothing of the runner's own."""
    return EnvNetsky(
        netsky,
        {
            "HOME": str(home),
            "ANTHROPIC_API_KEY": FAKE_API_KEY,
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{closed_port()}",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        },
        strip_prefixes=CLAUDE_ENV_PREFIXES,
    )


@pytest.fixture
def claude_netsky(netsky: Netsky, claude_bin: Path, tmp_path: Path) -> Iterator[EnvNetsky]:
    home = tmp_path / "user-home"
    workdir = (tmp_path / "work").absolute()
    workdir.mkdir()
    seed_home(home, workdir, FAKE_API_KEY)
    ns = offline_claude(netsky, home)
    ns.configure(
        runtime="claude",
        claude_command=str(claude_bin),
        clones=0,
        agent_runtimes={"agentinfinity": "demo"},
        ready_timeout_s=90,
        paste_settle_ms=300,
        workdir=str(workdir),
    )
    try:
        yield ns
    finally:
        ns.cleanup()  # this daemon (the netsky fixture does not know it) and the tmux server


def _diagnostics(ns: Netsky, agent: str = "agent0") -> str:
    agents: Any
    try:
        agents = ns.agents()
    except Exception as e:  # the daemon may be gone
        agents = f"(status failed: {e})"
    return (
        f"\n--- status: {agents}\n--- {agent} pane:\n{ns.pane_text(agent)}"
        f"\n--- netskyd stderr:\n{ns.stderr()}"
    )


def _ready(ns: Netsky, agent: str) -> bool:
    if ns._died():
        raise AssertionError(f"netskyd exited:{_diagnostics(ns, agent)}")
    return bool(ns.agents().get(agent, {}).get("ready"))


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (/proc where there is one, else kill 0)."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(ns: Netsky, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """``wait_for``, failing with the pane, the daemon's status and its stderr."""
    try:
        return wait_for(predicate, timeout_s, what, step_s=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}{_diagnostics(ns)}") from None


def test_envelope_reaches_real_claude_code(claude_netsky: EnvNetsky) -> None:
    ns = claude_netsky
    ns.start()

    # agent0 runs Claude Code and is ready at its idle prompt; the watchdog stays on demo.
    _wait(ns, lambda: _ready(ns, "agent0"), 120, "agent0 (Claude Code) ready")
    agent0 = ns.agents()["agent0"]
    assert agent0["runtime"] == "claude", _diagnostics(ns)
    assert "Claude Code" in ns.pane_text("agent0"), _diagnostics(ns)
    prompt = ns.home / "state" / "prompts" / "agent0.md"
    assert prompt.is_file() and "agent0" in prompt.read_text(), _diagnostics(ns)

    # An envelope from agent1 is pasted into the pane; Claude Code renders the
    # <channel source="agent"> block as "← agent: <text>".
    text = f"hello claude {uuid.uuid4().hex[:12]}"
    sent = ns.ctl("channel", "send", "agent0", text, "--from", "agent1", "--json")
    assert sent.returncode == 0, sent.stderr + sent.stdout
    envelope_id = json.loads(sent.stdout)["id"]
    _wait(
        ns,
        lambda: f"← agent: {text}" in ns.pane_text("agent0"),
        60,
        "the envelope rendered in agent0's pane",
    )

    channel = ns.home / "channels" / "agent" / "agent0"
    moved = _wait(
        ns,
        lambda: list((channel / "delivered").glob(f"*{envelope_id}.json")),
        10,
        "the envelope in agent0's delivered/",
    )
    assert json.loads(moved[0].read_text())["text"] == text
    assert not list((channel / "inbox").glob("*.json")), _diagnostics(ns)
    # "Delivered" means Claude Code has it: netsky saw it taken and recorded it consumed.
    row = _wait(ns, lambda: ns.consumed(envelope_id), 30, "the envelope recorded consumed")
    assert row["consumed_at"] >= row["submitted_at"], row

    # Stop the daemon, then the private tmux server: Claude Code and the watchdog's
    # demo agent end with it, and nothing is left running.
    panes = [a["pane_pid"] for a in ns.agents().values() if a.get("pane_pid")]
    assert panes, _diagnostics(ns)
    assert ns.stop() == 0, ns.stderr()
    ns.cleanup()
    wait_for(
        lambda: not [p for p in panes if _running(p)],
        20,
        f"the agents' pane processes {panes} to exit",
    )

