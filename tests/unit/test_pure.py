"""Pure functions: ids, desired state, ticker grid, readiness, runtimes' command lines."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import pytest

from netsky_shared.errors import ConfigError
from netsky_shared.ids import agent_n, is_agent_id, parse_agent, role_of, sort_key
from netsky_shared.paths import Paths
from netskyd.activity.classify import read_screen
from netskyd.agents.demo_agent import CRASH_EXIT_CODE, DemoAgent
from netskyd.agents.readiness import record_counts
from netskyd.config import Runtime, load_settings
from netskyd.runtimes import build_command
from netskyd.runtimes.claude import CLONE_DISALLOWED
from netskyd.supervision import desired as d
from netskyd.timing import next_deadline


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("agent0", True),
        ("agent1", True),
        ("agent999", True),
        ("agentinfinity", True),
        ("agent01", False),
        ("agent1000", False),
        ("agent", False),
        ("Agent1", False),
        ("agent-1", False),
        ("owner", False),
        ("agent1 ", False),
    ],
)
def test_agent_ids(value: str, ok: bool) -> None:
    assert is_agent_id(value) is ok


def test_parse_agent_accepts_what_people_type() -> None:
    assert parse_agent("3") == "agent3"
    assert parse_agent("infinity") == "agentinfinity"
    assert parse_agent("agent12") == "agent12"
    with pytest.raises(ValueError, match="not an agent id"):
        parse_agent("agentfoo")


def test_roles_and_order() -> None:
    assert [role_of(a) for a in ("agent0", "agent4", "agentinfinity")] == [
        "orchestrator",
        "clone",
        "watchdog",
    ]
    assert agent_n("agentinfinity") == "infinity"
    names = ["agentinfinity", "agent10", "agent2", "agent0"]
    assert sorted(names, key=sort_key) == ["agent0", "agent2", "agent10", "agentinfinity"]


def test_desired_up_down_agent_kill() -> None:
    up2 = d.constellation(2)
    assert up2.wanted() == ["agent0", "agent1", "agent2", "agentinfinity"]
    typed = d.with_agent(up2, "agent5", "codex")
    assert typed.agents["agent5"] == "codex"
    assert d.constellation(1, typed).agents == {
        "agent0": None,
        "agent1": None,
        "agentinfinity": None,
    }
    assert "agent2" not in d.without_clone(up2, "agent2").agents
    assert d.without_clone(up2, "agent0") == up2  # agent0 is always wanted
    down = d.Desired(up=False, agents=up2.agents)
    assert down.wanted() == []
    assert d.Desired.from_json(down.to_json("down")) == down
    with pytest.raises(ValueError):
        d.Desired.from_json({"state": "sideways"})


@pytest.mark.parametrize(
    ("start", "interval", "now", "expect"),
    [
        (0.0, 60.0, 0.0, 60.0),
        (0.0, 60.0, 59.9, 60.0),
        (0.0, 60.0, 60.0, 120.0),
        (0.0, 60.0, 185.0, 240.0),  # an overrun skips missed slots instead of bunching
        (10.0, 1.0, 10.5, 11.0),
    ],
)
def test_ticks_stay_on_grid(start: float, interval: float, now: float, expect: float) -> None:
    assert next_deadline(start, interval, now) == pytest.approx(expect)


def test_readiness_record_must_name_current_session() -> None:
    rec = {"agent": "agent1", "session_id": "abc", "runtime": "demo", "pid": 1, "ts": "t"}
    assert record_counts(rec, "agent1", "abc")
    assert not record_counts(rec, "agent1", "def")  # a predecessor's record
    assert not record_counts(rec, "agent2", "abc")
    assert not record_counts(None, "agent1", "abc")
    assert not record_counts(rec, "agent1", None)


CLAUDE_IDLE = """ ▐▛███▜▌   Claude Code v2.1.197
────────────────────────────────────────
❯ \u00a0
────────────────────────────────────────
  ? for shortcuts
"""
CLAUDE_TYPING = CLAUDE_IDLE.replace("❯ \u00a0", "❯ half a message")
CODEX_IDLE = """  >_ OpenAI Codex (v0.169.0)
› Ask Codex to do anything
  GPT default · /tmp/work
"""


def test_idle_prompts_match_real_screens() -> None:
    assert read_screen(Runtime.CLAUDE, CLAUDE_IDLE).at_prompt
    assert not read_screen(Runtime.CLAUDE, CLAUDE_TYPING).at_prompt
    assert read_screen(Runtime.CODEX, CODEX_IDLE).at_prompt
    assert read_screen(Runtime.SHELL, "sh-5.2$ \n\n").at_prompt
    assert not read_screen(Runtime.SHELL, "compiling...\n").at_prompt
    assert read_screen(Runtime.DEMO, "netsky demo agent agent1 ready\nagent1> ").at_prompt
    assert not read_screen(Runtime.DEMO, "agent1> \nagent1: hanging (ignoring input)\n").at_prompt


def test_command_lines(tmp_path: Path) -> None:
    s = load_settings(
        None,
        {
            "NETSKY_HOME": str(tmp_path),
            "NETSKY_CLAUDE_ARGS": '["--model", "x"]',
            "NETSKY_CUSTOM_COMMAND": "mytool --id {{ agent }} {{ prompt_file }}",
        },
    )
    pf = tmp_path / "state" / "prompts" / "agent1.md"
    pf.parent.mkdir(parents=True)
    pf.write_text('say "hi"\nline two\n')
    claude = shlex.split(build_command(s, Runtime.CLAUDE, "agent1", pf, tmp_path))
    assert claude == ["claude", "--model", "x", "--disallowedTools", *CLONE_DISALLOWED,
                      "--append-system-prompt-file", str(pf)]  # fmt: skip
    codex = build_command(s, Runtime.CODEX, "agent1", pf, tmp_path)
    assert codex.startswith("codex -c ")
    sidecar = pf.with_suffix(".codex.toml")
    assert json.loads(sidecar.read_text()) == pf.read_text()  # a TOML basic string
    assert "developer_instructions=$(cat" in codex
    custom = shlex.split(build_command(s, Runtime.CUSTOM, "agent1", pf, tmp_path))
    assert custom == ["mytool", "--id", "agent1", str(pf)]
    assert "demo_agent" in build_command(s, Runtime.DEMO, "agent1", pf, tmp_path)


def test_custom_runtime_errors(tmp_path: Path) -> None:
    pf = tmp_path / "p.md"
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="custom_command"):
        build_command(s, Runtime.CUSTOM, "agent1", pf, tmp_path)
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path), "NETSKY_CUSTOM_COMMAND": "x {{ nope }}"})
    with pytest.raises(ConfigError, match="nope"):
        build_command(s, Runtime.CUSTOM, "agent1", pf, tmp_path)


def test_demo_agent_answers_ping_and_crashes_on_request(tmp_path: Path) -> None:
    out = io.StringIO()
    agent = DemoAgent("agent1", Paths(tmp_path), out)
    block = '\x1b[200~<channel source="agent" chat_id="agent0" from="agent0" ts="t">\nping\n'
    assert agent.feed(block) is None
    assert agent.feed("</channel>\x1b[201~\n") is None
    assert "← agent0: ping" in out.getvalue() and "→ agent0: pong" in out.getvalue()
    inbox = list((tmp_path / "channels/agent/agent0/inbox").glob("*.json"))
    assert len(inbox) == 1
    pong = json.loads(inbox[0].read_text())
    assert (pong["from"], pong["to"], pong["text"]) == ("agent1", "agent0", "pong")
    crash = '<channel source="agent" chat_id="owner" from="owner" ts="t">\ncrash\n</channel>\n'
    assert agent.feed(crash) == CRASH_EXIT_CODE
    assert re.search(r"crashing on request", out.getvalue())
