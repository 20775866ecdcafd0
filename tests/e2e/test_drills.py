"""``netskyctl drill`` end to end: each drill as a real ``python -m client drill NAME
--json`` process, which builds its own sandbox (a temporary NETSKY_HOME, a private
``netsky-drill-*`` tmux socket, a real daemon), injects its fault and must pass; its
report is saved in the caller's NETSKY_HOME, and nothing it started is left behind.
Also: an unknown drill is a usage error, a drill that runs out of time fails with the
reason, and a drill stopped by SIGTERM still tears its sandbox down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client.drills import DRILLS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
RUN_TIMEOUT_S = 180


def _env(owner_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSKY_")}
    env["NETSKY_HOME"] = str(owner_home)
    return env


def _drill(owner_home: Path, *args: str) -> tuple[int, str, str]:
    """Run ``netskyctl drill ARGS``; on a timeout, SIGTERM it (it tears its sandbox
    down) before failing the test."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", "drill", *args],
        env=_env(owner_home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
        pytest.fail(f"drill {args} ran past {RUN_TIMEOUT_S}s:\n{out}\n{err}")
    return proc.returncode, out, err


def _alive_netskyd(pid: int) -> bool:
    res = subprocess.run(
        ["ps", "-p", str(pid), "-o", "stat=,args="],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    line = res.stdout.strip()
    return bool(line) and not line.startswith("Z") and "netskyd" in line


def _server_up(socket_name: str) -> bool:
    res = subprocess.run(
        ["tmux", "-L", socket_name, "list-sessions"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return res.returncode == 0


def assert_nothing_left(report: dict[str, Any]) -> None:
    """The drill's daemons are gone, its tmux server is down, its home removed."""
    socket_name = report["tmux_socket"]
    assert socket_name and socket_name.startswith("netsky-drill-"), socket_name
    try:
        assert report["daemon_pids"], "the report names no daemon"
        left = [p for p in report["daemon_pids"] if _alive_netskyd(p)]
        assert not left, f"daemons left running: {left}"
        assert not _server_up(socket_name), f"tmux server {socket_name} left running"
        assert not Path(report["home"]).exists(), "the sandbox home was not removed"
        assert any(s["step"] == "teardown" for s in report["steps"])
    finally:  # whatever the drill left, the test run does not keep it
        subprocess.run(
            ["tmux", "-L", socket_name, "kill-server"], capture_output=True, timeout=10, check=False
        )


@pytest.fixture
def owner_home(tmp_path: Path) -> Path:
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/test installs it)")
    return tmp_path / "owner"


@pytest.mark.parametrize("name", list(DRILLS))
def test_each_drill_passes_reports_and_cleans_up(owner_home: Path, name: str) -> None:
    code, out, err = _drill(owner_home, name, "--json")
    report = json.loads(out)
    assert report["verdict"] == "pass", f"{report['reason']}\n{err}\n{json.dumps(report, indent=1)}"
    assert code == 0 and report["reason"] == ""
    for key in DRILLS[name].timings:
        assert report["timings_ms"][key] > 0, (key, report["timings_ms"])
    assert [s["step"] for s in report["steps"]][:2] == ["sandbox", "daemon"]
    saved = list((owner_home / "drills").glob(f"*-{name}.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text()) == report
    assert_nothing_left(report)
    if name == "escalate-fail":
        assert report["counts"] == {"tries": 3, "posts": 3}


def test_an_unknown_drill_is_a_usage_error(owner_home: Path) -> None:
    code, out, err = _drill(owner_home, "no-such-drill", "--json")
    assert code == 2
    assert "unknown drill 'no-such-drill'" in err and "agent0-crash" in err
    assert json.loads(out)["exit_code"] == 2
    assert not (owner_home / "drills").exists()


def test_a_drill_out_of_time_fails_with_the_reason_and_still_cleans_up(owner_home: Path) -> None:
    # One second is not enough to bring agents up, let alone repair agent0.
    code, out, _ = _drill(owner_home, "agent0-crash", "--json", "--deadline", "1")
    report = json.loads(out)
    assert code == 1 and report["verdict"] == "fail"
    assert "timed out" in report["reason"] and "deadline" in report["reason"]
    assert any(s["step"] == "failed" for s in report["steps"])
    assert list((owner_home / "drills").glob("*-agent0-crash.json"))
    if report["daemon_pids"]:
        assert_nothing_left(report)
    else:
        assert not Path(report["home"]).exists()


def test_a_drill_stopped_by_sigterm_tears_its_sandbox_down(owner_home: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", "drill", "hang"],
        env=_env(owner_home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:  # the human output streams one line per step
            lines.append(line)
            if " fault " in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = "".join(lines) + rest
    assert proc.returncode == 1, text
    assert "FAIL hang" in text and "interrupted" in text
    [saved] = (owner_home / "drills").glob("*-hang.json")
    assert_nothing_left(json.loads(saved.read_text()))
