"""netskyctl without a daemon: exit codes, the bus with the daemon down, import weight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.netskyctl import main

HEAVY = (
    "pydantic",
    "anyio",
    "libtmux",
    "structlog",
    "aiosqlite",
    "watchfiles",
    "jinja2",
    "click",
    "uvloop",
)


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        env={"NETSKY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("cmd", [["status"], ["ping"], ["up"], ["down"], ["kill", "agent1"]])
def test_exit_3_with_a_hint_when_no_daemon(tmp_path: Path, cmd: list[str]) -> None:
    res = _run(tmp_path, *cmd)
    assert res.returncode == 3
    assert "not running" in res.stderr and "netskyd run" in res.stderr


def test_exit_3_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"], {"NETSKY_HOME": str(tmp_path)}) == 3
    assert json.loads(capsys.readouterr().out)["exit_code"] == 3


def test_stale_socket_file_is_not_running(tmp_path: Path) -> None:
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "netskyd.sock"))
    s.close()  # bound but nobody listens: connection refused
    assert _run(tmp_path, "status").returncode == 3


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["kill"],
        ["up", "many"],
        ["agent", "x"],
        ["channel"],
        ["channel", "send", "agent1", "hi"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str]) -> None:
    assert _run(tmp_path, *argv).returncode == 2


def test_channel_send_works_with_daemon_down(tmp_path: Path) -> None:
    res = _run(tmp_path, "channel", "send", "agent2", "hello", "--from", "agent1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    path = Path(out["path"])
    assert path.parent == tmp_path / "channels/agent/agent2/inbox"
    env = json.loads(path.read_text())
    assert env["text"] == "hello" and env["from"] == "agent1" and env["id"] == out["id"]
    assert path.name.endswith(f"-agent1-{env['id']}.json")
    assert not list((tmp_path / "channels/agent/agent2/tmp").iterdir())


def test_channel_send_reads_stdin(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "channel",
            "send",
            "agent0",
            "-",
            "--from",
            "owner",
            "--json",
        ],
        input="multi\nline\n",
        env={"NETSKY_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(Path(json.loads(res.stdout)["path"]).read_text())["text"] == "multi\nline\n"


def test_full_inbox_exits_75(tmp_path: Path) -> None:
    for i in range(2):
        assert (
            _run(
                tmp_path,
                "channel",
                "send",
                "agent1",
                f"m{i}",
                "--from",
                "agent0",
                NETSKY_INBOX_MAX_PENDING="2",
            ).returncode
            == 0
        )
    res = _run(
        tmp_path,
        "channel",
        "send",
        "agent1",
        "m2",
        "--from",
        "agent0",
        NETSKY_INBOX_MAX_PENDING="2",
    )
    assert res.returncode == 75
    assert "inbox of agent1 is full" in res.stderr
    assert len(list((tmp_path / "channels/agent/agent1/inbox").iterdir())) == 2


def test_bad_agent_ids_exit_2(tmp_path: Path) -> None:
    res = _run(tmp_path, "channel", "send", "agentx", "hi", "--from", "agent0")
    assert res.returncode == 2 and "not an agent id" in res.stderr
    res = _run(tmp_path, "channel", "send", "agent1", "hi", "--from", "bob")
    assert res.returncode == 2


def test_client_imports_nothing_heavy() -> None:
    code = (
        "import sys, client.netskyctl, client.rpc; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert res.stdout.strip() == "[]"


def test_format_status_shows_agents_and_the_bus() -> None:
    from client.netskyctl import format_status

    row = {
        "agent": "agent0", "role": "orchestrator", "runtime": "demo", "spawning": False,
        "alive": True, "wanted": True, "ready": True, "pane_pid": 42, "inbox_pending": 3,
        "last_delivery_ts": "2026-11-21T10:00:05.000000Z", "last_error": None,
    }
    st = {
        "daemon": {"version": "0.1.0", "pid": 7, "uptime_s": 65, "last_tick_age_s": 2.0,
                   "tick_interval_s": 60.0},
        "desired": {"state": "up", "agents": ["agent0"]},
        "agents": [row],
        "unknown_sessions": [],
        "bus": {"delivered": 12, "duplicates": 1, "poisoned": 2, "forwarded": 0, "in_flight": 0},
    }
    text = format_status(st)
    assert "up 1m05s" in text and "desired: up (1 agents)" in text
    assert any(line.split()[:5] == ["agent0", "orchestrator", "demo", "alive", "yes"]
               for line in text.splitlines())
    assert "12 delivered (1 marked repeats), 2 poisoned" in text
