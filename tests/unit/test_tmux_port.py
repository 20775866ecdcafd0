"""The tmux port against a real tmux server on a private socket."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from netsky_shared.errors import TmuxTimeout
from netskyd.agents.tmux import Tmux
from tests.harness import kill_tmux_server, private_socket

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    sock = private_socket()
    try:
        yield Tmux(sock, timeout_s=3.0)
    finally:
        kill_tmux_server(sock)


async def test_session_lifecycle_exact_names(tmux: Tmux, tmp_path: Path) -> None:
    assert await tmux.list_panes() == {}  # no server yet
    pane = await tmux.new_session(
        "agent10", "cat", cwd=tmp_path, env={"X_TEST": "1"}, width=80, height=20
    )
    assert pane.session == "agent10" and pane.pane_pid > 0
    # "agent1" must not prefix-match "agent10".
    assert not await tmux.has_session("agent1")
    assert not await tmux.kill_session("agent1")
    assert await tmux.has_session("agent10")
    assert await tmux.show_env("agent10", "X_TEST") == "1"
    assert await tmux.show_env("agent10", "NOT_SET") is None
    await tmux.paste("agent10", "hello\nworld", buffer="b1")
    await tmux.send_keys("agent10", "Enter")
    with anyio.fail_after(5):
        while "world" not in await tmux.capture("agent10"):  # noqa: ASYNC110 - polling a pane
            await anyio.sleep(0.05)
    assert set(await tmux.list_panes()) == {"agent10"}
    assert await tmux.kill_session("agent10")


async def test_wedged_server_times_out(tmux: Tmux, tmp_path: Path) -> None:
    await tmux.new_session("agent1", "cat", cwd=tmp_path, env={}, width=80, height=20)
    pid = int(await tmux.run("display-message", "-p", "#{pid}"))
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(TmuxTimeout, match="did not answer"):
            await tmux.run("list-sessions", timeout_s=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await tmux.has_session("agent1")
