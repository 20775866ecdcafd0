"""The README's first command: the demo constellation and its guided tour, run for real
(``netskyd demo --once``) on a private tmux socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import kill_tmux_server, private_socket

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_demo_tour_runs_every_step_and_stops_cleanly(tmp_path: Path) -> None:
    socket_name = private_socket()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSKY_")}
    env["NETSKY_TMUX_SOCKET"] = socket_name
    try:
        res = subprocess.run(
            [sys.executable, "-m", "netskyd", "demo", "--once", "--home", str(tmp_path / "home")],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    finally:
        kill_tmux_server(socket_name)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "← agent1: pong" in out  # step 2: a ping/pong round trip over the bus
    assert "agent0 is back" in out  # step 3: a killed session is respawned
    assert "rule 'wrapper-injection'" in out  # step 4: a hostile envelope is quarantined
    assert "netskyd stopped (exit 0)" in out
