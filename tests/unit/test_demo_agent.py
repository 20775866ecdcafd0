"""The demo agent's drill commands: ``restart [handoff]``, ``hang``, ``--crash-at-start``.

In-process through ``DemoAgent.feed`` (what a paste into its pane becomes), and as a
real ``python -m netskyd.agents.demo_agent`` subprocess with pipes for stdin/stdout.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsky_shared.paths import Paths
from netskyd.agents.demo_agent import CRASH_EXIT_CODE, DemoAgent, main

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HANDOFF = "handoff from agent0: planned restart requested by the demo agent"


def block(text: str, sender: str = "agent1") -> str:
    """A channel block as the daemon pastes it (bracketed paste markers included)."""
    return (
        f'\x1b[200~<channel source="agent" chat_id="{sender}" from="{sender}" ts="t">\n'
        f"{text}\n</channel>\x1b[201~\r"
    )


def agent0(home: Path) -> tuple[DemoAgent, io.StringIO]:
    out = io.StringIO()
    return DemoAgent("agent0", Paths(home), out), out


def receipts(home: Path, agent: str = "agent0") -> list[dict[str, str]]:
    path = Paths(home).demo_receipts(agent)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_agent(home: Path, stdin: str, *argv: str, n: str = "0") -> subprocess.CompletedProcess[str]:
    env = {
        "AGENT_N": n,
        "NETSKY_HOME": str(home),
        "NETSKY_SESSION_ID": "feedc0de" * 4,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "netskyd.agents.demo_agent", *argv],
        input=stdin,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- restart -------------------------------------------------------------------------------


def test_restart_with_handoff_writes_the_request_and_exits_0(tmp_path: Path) -> None:
    agent, out = agent0(tmp_path)
    handoff = "restart carry on with task 7\nnotes: ✓ tests green"
    assert agent.feed(block(handoff, sender="agentinfinity")) == 0
    request = tmp_path / "state" / "restart-request"
    text = "carry on with task 7\nnotes: ✓ tests green"
    assert request.read_bytes() == text.encode("utf-8")
    n = len(text.encode("utf-8"))
    assert f"agent0: restart requested ({n} bytes of handoff)" in out.getvalue().splitlines()
    assert [p.name for p in request.parent.iterdir() if p.is_file()] == ["restart-request"]


def test_restart_typed_by_the_owner_uses_the_default_handoff(tmp_path: Path) -> None:
    agent, out = agent0(tmp_path)
    assert agent.feed("  Restart  \r") == 0
    assert (tmp_path / "state/restart-request").read_text() == DEFAULT_HANDOFF
    assert out.getvalue().splitlines()[-1] == (
        f"agent0: restart requested ({len(DEFAULT_HANDOFF)} bytes of handoff)"
    )


def test_restart_replaces_an_older_request(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state/restart-request").write_text("stale")
    agent, _ = agent0(tmp_path)
    assert agent.feed(block("restart fresh")) == 0
    assert (tmp_path / "state/restart-request").read_text() == "fresh"


@pytest.mark.parametrize("text", ["restarting soon", "please restart", "restart-request"])
def test_other_words_are_not_a_restart(tmp_path: Path, text: str) -> None:
    agent, out = agent0(tmp_path)
    assert agent.feed(block(text)) is None
    assert not (tmp_path / "state/restart-request").exists()
    assert f"← agent1: {text}" in out.getvalue()


def test_restart_as_a_process(tmp_path: Path) -> None:
    res = run_agent(tmp_path, "restart over to you\n")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "state/restart-request").read_text() == "over to you"
    assert res.stdout.splitlines()[-1] == "agent0: restart requested (11 bytes of handoff)"


# -- hang ----------------------------------------------------------------------------------


def test_hang_ignores_everything_after_it(tmp_path: Path) -> None:
    agent, out = agent0(tmp_path)
    assert agent.feed(block("ping")) is None
    assert "→ agent1: pong" in out.getvalue()
    inbox = tmp_path / "channels/agent/agent1/inbox"
    assert len(list(inbox.iterdir())) == 1
    assert agent.feed(block("hang", sender="owner")) is None
    assert out.getvalue().splitlines()[-1] == "agent0: hanging (ignoring input)"
    before_out, before_receipts = out.getvalue(), receipts(tmp_path)
    for text in ("ping", "crash", "restart now", "hello"):
        assert agent.feed(block(text)) is None
    assert agent.feed("crash\r") is None  # typed lines too
    assert out.getvalue() == before_out
    assert receipts(tmp_path) == before_receipts
    assert len(list(inbox.iterdir())) == 1  # no second pong
    assert not (tmp_path / "state/restart-request").exists()
    assert agent.buffer == ""  # input is dropped, not piled up


def test_hang_in_the_same_paste_drops_what_follows(tmp_path: Path) -> None:
    agent, out = agent0(tmp_path)
    assert agent.feed(block("hang") + block("ping")) is None
    assert "pong" not in out.getvalue()
    assert [r["text"] for r in receipts(tmp_path)] == ["hang"]


def test_hang_as_a_process_reads_until_stdin_closes(tmp_path: Path) -> None:
    stdin = "hang\n" + block("ping").replace("\r", "\n") + "crash\n" * 1000
    res = run_agent(tmp_path, stdin)
    assert res.returncode == 0, res.stderr  # stdin closed; the crash was ignored
    assert res.stdout.splitlines()[-1] == "agent0: hanging (ignoring input)"
    assert not (tmp_path / "channels/agent/agent1/inbox").exists()


# -- --crash-at-start ------------------------------------------------------------------------


def test_crash_at_start_exits_3_before_readiness(tmp_path: Path) -> None:
    res = run_agent(tmp_path, "ping\n", "--crash-at-start", n="4")
    assert res.returncode == CRASH_EXIT_CODE == 3
    assert res.stdout == "netsky demo agent agent4: crashing at start (exit 3)\n"
    assert not Paths(tmp_path).ready_file("agent4").exists()
    assert not (tmp_path / "state").exists()


def test_without_the_option_it_becomes_ready(tmp_path: Path) -> None:
    res = run_agent(tmp_path, "", n="4")
    assert res.returncode == 0, res.stderr
    record = json.loads(Paths(tmp_path).ready_file("agent4").read_text())
    assert record["agent"] == "agent4" and record["runtime"] == "demo"
    assert "'restart [handoff]'" in res.stdout


def test_unknown_argument_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"AGENT_N": "1", "NETSKY_HOME": str(tmp_path)}
    assert main(env, ["--crash-later"]) == 2
    assert "unknown argument '--crash-later'" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
