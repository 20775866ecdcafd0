"""The session watcher, the hook client and the batched snapshot, against real tmux.

A private tmux server (``tmux -L netsky-test-...``) and a real Unix socket: a small
JSON-RPC listener stands in for netskyd and feeds ``session.event`` requests from the
hook client (run by tmux itself) into a SessionWatcher.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream
from hypothesis import given
from hypothesis import strategies as st

from client import hook
from netsky_shared import protocol
from netskyd.agents.sessions import SessionEvent, SessionWatcher, hook_command, parse_event
from netskyd.agents.tmux import HOOK_INDEX, Snapshot, Tmux
from netskyd.agents.tmux_format import split_captures
from tests.harness import kill_tmux_server, private_socket

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

EVENT_TIMEOUT_S = 10.0


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    sock = private_socket()
    try:
        yield Tmux(sock, timeout_s=5.0)
    finally:
        kill_tmux_server(sock)


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path that needs quoting at every level: spaces, a quote, ``#S`` (a tmux
    format: the session's name) and ``$x``."""
    base = Path(tempfile.mkdtemp(prefix="nsk-", dir="/tmp"))
    d = base / "it's a #S $x dir"
    d.mkdir()
    try:
        yield d / "d.sock"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@asynccontextmanager
async def fake_daemon(
    path: Path, on_event: Callable[[dict[str, Any]], bool]
) -> AsyncIterator[list[dict[str, Any]]]:
    """Serve JSON-RPC on ``path`` like netskyd: ``hello`` and ``session.event``.

    Yields the list of requests received, in order.
    """
    requests: list[dict[str, Any]] = []

    async def handle(stream: SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            while True:
                try:
                    line = await reader.receive_until(b"\n", protocol.MAX_LINE_BYTES)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                req = json.loads(line)
                requests.append(req)
                if req["method"] == protocol.HELLO:
                    result: Any = {"api_version": protocol.API_VERSION}
                else:
                    result = {"queued": on_event(req["params"])}
                await stream.send((json.dumps(protocol.result(req["id"], result)) + "\n").encode())

    listener = await anyio.create_unix_listener(path)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield requests
        finally:
            tg.cancel_scope.cancel()


@dataclass
class Watching:
    watcher: SessionWatcher
    events: MemoryObjectReceiveStream[SessionEvent]
    requests: list[dict[str, Any]]

    async def next_event(self) -> SessionEvent:
        with anyio.fail_after(EVENT_TIMEOUT_S):
            return await self.events.receive()


@asynccontextmanager
async def watching(tmux: Tmux, sock_path: Path) -> AsyncIterator[Watching]:
    """A fake daemon plus a running SessionWatcher whose notice collects events."""
    send, receive = anyio.create_memory_object_stream[SessionEvent](100)

    async def notice(event: SessionEvent) -> None:
        await send.send(event)

    watcher = SessionWatcher(
        tmux, hook_command(sys.executable, sock_path), reinstall_s=30.0, sweep_s=0.2
    )
    async with fake_daemon(sock_path, watcher.post_params) as requests:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, notice)
            try:
                yield Watching(watcher, receive, requests)
            finally:
                tg.cancel_scope.cancel()


async def start(tmux: Tmux, name: str, command: str, **kw: Any) -> None:
    await tmux.new_session(name, command, cwd=Path("/tmp"), env={}, width=80, height=20, **kw)


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 10.0
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what``."""
    try:
        with anyio.fail_after(timeout_s):
            while not (value := await predicate()):  # noqa: ASYNC110 - polling tmux
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None
    return value


# ----- (a) a process exits: pane-died with its status, the pane stays -----------------------


@pytest.mark.timeout(60)
async def test_exit_status_reported_and_dead_pane_kept(tmux: Tmux, sock_path: Path) -> None:
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)  # the server exists first
    async with watching(tmux, sock_path) as w:
        await start(tmux, "agent7", "printf 'last words\\n'; sleep 0.3; exit 7")
        event = await w.next_event()
        assert (event.agent, event.event, event.status) == ("agent7", "pane-died", 7)
        assert w.requests[0]["method"] == "session.event"
        assert w.requests[0]["params"] == {"event": "pane-died", "session": "agent7", "status": 7}
    pane = (await tmux.list_panes())["agent7"]
    assert pane.pane_dead and pane.dead_status == 7
    assert "last words" in await tmux.capture("agent7", 50)


@pytest.mark.timeout(90)
async def test_every_exit_is_reported_even_when_tmux_loses_sigchld(
    tmux: Tmux, sock_path: Path
) -> None:
    # A libutempter tmux < 3.5 loses about half of these SIGCHLDs; nothing else makes the
    # server reap (one agent at a time, no other child exits), so only the watcher's
    # nudge brings each status and hook.
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)
    async with watching(tmux, sock_path) as w:
        for i in range(1, 9):
            await start(tmux, f"agent{i}", f"sleep 0.3; exit {i}")
            event = await w.next_event()
            while event.agent != f"agent{i}":  # a late duplicate of an earlier one: allowed
                event = await w.next_event()
            assert (event.event, event.status) == ("pane-died", i)


# ----- (b) kill-session: session-closed ------------------------------------------------------


@pytest.mark.timeout(60)
async def test_killed_session_reports_session_closed(tmux: Tmux, sock_path: Path) -> None:
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)
    await start(tmux, "agentinfinity", "sleep 300")
    async with watching(tmux, sock_path) as w:
        assert await tmux.kill_session("agentinfinity")
        event = await w.next_event()
        assert (event.agent, event.event, event.status) == ("agentinfinity", "session-closed", None)


@pytest.mark.timeout(60)
async def test_last_session_closing_is_reported(tmux: Tmux, sock_path: Path) -> None:
    # tmux exits with its last session and SIGTERMs the hook's job: the sweep reports it.
    await start(tmux, "agent2", "sleep 300")
    async with watching(tmux, sock_path) as w:
        await wait_until(lambda: _true(w.watcher.hooked_pid is not None), "a first sweep")
        await anyio.sleep(0.5)
        assert await tmux.kill_session("agent2")
        event = await w.next_event()
        assert (event.agent, event.event) == ("agent2", "session-closed")


@pytest.mark.timeout(60)
async def test_sweep_reports_a_vanished_session_without_hooks(tmux: Tmux) -> None:
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)
    await start(tmux, "agent6", "sleep 300")
    send, receive = anyio.create_memory_object_stream[SessionEvent](10)

    async def notice(event: SessionEvent) -> None:
        await send.send(event)

    watcher = SessionWatcher(tmux, "true", sweep_s=0.1)  # the hooks report nothing
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run, notice)
        await anyio.sleep(0.5)  # a few sweeps have seen agent6
        assert await tmux.kill_session("agent6")
        with anyio.fail_after(EVENT_TIMEOUT_S):
            event = await receive.receive()
        tg.cancel_scope.cancel()
    assert (event.agent, event.event, event.source) == ("agent6", "session-closed", "sweep")


@pytest.mark.timeout(60)
async def test_hooks_arrive_with_a_server_started_later(tmux: Tmux, sock_path: Path) -> None:
    async with watching(tmux, sock_path) as w:
        assert w.watcher.hooked_pid is None  # no server yet: nothing installed
        await start(tmux, "agent4", "sleep 300")
        await wait_until(lambda: _true(w.watcher.hooked_pid is not None), "hooks installed")
        assert await tmux.kill_session("agent4")
        event = await w.next_event()
        assert (event.agent, event.event) == ("agent4", "session-closed")


async def _true(value: bool) -> bool:
    return value


@pytest.mark.timeout(60)
async def test_sweep_reports_a_dead_pane_without_hooks(tmux: Tmux) -> None:
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)
    send, receive = anyio.create_memory_object_stream[SessionEvent](10)

    async def notice(event: SessionEvent) -> None:
        await send.send(event)

    watcher = SessionWatcher(tmux, "true", sweep_s=0.1)  # the hooks report nothing
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run, notice)
        await start(tmux, "agent8", "sleep 0.3; exit 8")
        with anyio.fail_after(EVENT_TIMEOUT_S):
            event = await receive.receive()
        await anyio.sleep(0.5)  # more sweeps: reported once only
        tg.cancel_scope.cancel()
    assert (event.agent, event.event, event.status, event.source) == (
        "agent8",
        "pane-died",
        8,
        "sweep",
    )
    assert receive.statistics().current_buffer_used == 0


# ----- (c) other sessions: no event ----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_non_agent_sessions_send_nothing(tmux: Tmux, sock_path: Path) -> None:
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)
    others = ["work", "agent3x", "myagent1", "agent"]
    async with watching(tmux, sock_path) as w:
        for name in others:
            await start(tmux, name, "exit 5")

        async def all_reaped() -> bool:
            panes = await tmux.list_panes()
            return all(panes[n].dead_status == 5 for n in others)

        await wait_until(all_reaped, "the other sessions' panes reaped")
        for name in others:
            assert await tmux.kill_session(name)
        # An agent's death afterwards is the first and only event.
        await start(tmux, "agent5", "exit 9")
        event = await w.next_event()
        assert (event.agent, event.status) == ("agent5", 9)
        await anyio.sleep(1.0)
        assert [r["params"]["session"] for r in w.requests] == ["agent5"]


# ----- (d) install is idempotent and leaves the user's hooks alone ---------------------------


async def _hook_lines(tmux: Tmux) -> list[str]:
    out = await tmux.run("show-hooks", "-g") + await tmux.run("show-hooks", "-gw")
    return [line for line in out.splitlines() if "[" in line]


@pytest.mark.timeout(30)
async def test_install_hooks_twice_keeps_one_entry_each(tmux: Tmux) -> None:
    assert not await tmux.install_hooks("true")  # no server yet
    await start(tmux, "keep", "sleep 300", remain_on_exit=False)
    await tmux.run("set-hook", "-g", "pane-died", "display-message mine")
    assert await tmux.install_hooks(hook_command("/usr/bin/python3", Path("/a/b.sock")))
    assert await tmux.install_hooks(hook_command("/usr/bin/python3", Path("/a/b.sock")))
    lines = await _hook_lines(tmux)
    assert sum(line.startswith(f"pane-died[{HOOK_INDEX}]") for line in lines) == 1
    assert sum(line.startswith(f"session-closed[{HOOK_INDEX}]") for line in lines) == 1
    assert "pane-died[0] display-message mine" in lines
    assert await tmux.remove_hooks()
    assert await _hook_lines(tmux) == ["pane-died[0] display-message mine"]


@pytest.mark.timeout(30)
async def test_hook_with_no_daemon_stays_silent(tmux: Tmux, sock_path: Path) -> None:
    # Even an interpreter that does not exist must not surface in the user's panes
    # (run-shell shows a failing command's output and status in view mode).
    await start(tmux, "user", "sleep 300", remain_on_exit=False)
    assert await tmux.install_hooks(hook_command("/nonexistent/python3", sock_path))
    await start(tmux, "agent1", "exit 3")

    async def reported() -> bool:
        await tmux.nudge_unreaped()
        return (await tmux.list_panes())["agent1"].dead_status == 3

    await wait_until(reported, "agent1 reaped (its hook ran)")
    await anyio.sleep(1.0)
    modes = await tmux.run("list-panes", "-a", "-F", "#{session_name} #{pane_in_mode}")
    assert sorted(modes.split("\n")[:-1]) == ["agent1 0", "user 0"]


# ----- the hook client on its own ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--socket", "/s", "pane-died", "agent1", "7"], ("/s", "pane-died", "agent1", 7)),
        (["--socket=/s", "pane-died", "agent1", ""], ("/s", "pane-died", "agent1", None)),
        (["--socket", "/s", "session-closed", "agent2"], ("/s", "session-closed", "agent2", None)),
        (["pane-died", "agent1", "7"], None),
        (["--socket", "/s", "exploded", "agent1"], None),
        (["--socket", "/s", "pane-died"], None),
        (["--socket", "/s", "pane-died", "agent1", "7", "x"], None),
        (["--socket", "/s", "pane-died", 'agent"1', "7"], None),  # would break the JSON
        (["--socket", "/s", "pane-died", "", "7"], None),
    ],
)
def test_hook_arguments(argv: list[str], expected: tuple[Any, ...] | None) -> None:
    parsed = hook.parse_args(argv)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        path, params = parsed
        assert (path, params["event"], params["session"], params["status"]) == expected
        # The hand-built request line is the protocol's request, as JSON.
        line = hook.request_line(params)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert json.loads(line) == protocol.request(1, protocol.SESSION_EVENT, params)


def test_hook_exits_0_quietly_without_a_daemon(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "client.hook", "--socket", str(tmp_path / "none.sock"),
         "pane-died", "agent1", "7"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")


@pytest.mark.timeout(30)
async def test_hook_gives_up_on_a_daemon_that_never_answers(sock_path: Path) -> None:
    listener = await anyio.create_unix_listener(sock_path)
    accepted: list[SocketStream] = []

    async def hold(stream: SocketStream) -> None:
        accepted.append(stream)
        await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        t0 = time.monotonic()
        ok = await anyio.to_thread.run_sync(
            hook.send, str(sock_path), {"event": "pane-died", "session": "agent1", "status": 1}
        )
        elapsed = time.monotonic() - t0
        tg.cancel_scope.cancel()
    assert not ok and accepted
    assert elapsed < 5.0  # its deadline is 1 s; generous for a loaded machine


def test_parse_event_table() -> None:
    ok = parse_event({"event": "pane-died", "session": "agent3", "status": 7}, now=1.5)
    assert ok == SessionEvent("agent3", "pane-died", 7, 1.5)
    assert parse_event({"event": "session-closed", "session": "agentinfinity"}, 0.0) is not None
    for bad in (
        {"event": "pane-died", "session": "agent1000", "status": 1},  # beyond agent999
        {"event": "pane-died", "session": "work", "status": 1},
        {"event": "pane-died", "session": "agent1", "status": "7"},
        {"event": "pane-died", "session": "agent1", "status": True},
        {"event": "exploded", "session": "agent1"},
        {"session": "agent1"},
    ):
        assert parse_event(bad, 0.0) is None, bad


async def test_watcher_coalesces_and_survives_a_failing_notice(tmux: Tmux) -> None:
    seen: list[SessionEvent] = []

    async def notice(event: SessionEvent) -> None:
        seen.append(event)
        if event.agent == "agent1":
            raise RuntimeError("boom")

    watcher = SessionWatcher(tmux, "true", sweep_s=None)
    assert watcher.post(SessionEvent("agent1", "pane-died", 1, 0.0))
    assert not watcher.post(SessionEvent("agent1", "pane-died", 1, 0.1))  # coalesced
    assert not watcher.post(SessionEvent("bogus", "pane-died", 1, 0.1))
    assert watcher.post(SessionEvent("agent2", "session-closed", None, 0.2))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, notice)
            while watcher.delivered < 2:  # noqa: ASYNC110 - waiting on the task's counter
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert [(e.agent, e.event) for e in seen] == [
        ("agent1", "pane-died"),
        ("agent2", "session-closed"),
    ]


# ----- snapshot ------------------------------------------------------------------------------


async def _printed(tmux: Tmux, name: str, last: str) -> bool:
    return last in await tmux.capture(name)


@pytest.mark.timeout(60)
async def test_snapshot_matches_capture_in_one_client(
    tmux: Tmux, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await tmux.snapshot(["agent1"], 10) == Snapshot({}, {})  # no server
    names = ["agent1", "agent2", "agent3"]
    for i, name in enumerate(names, start=1):
        await start(tmux, name, f"seq {i * 100} {i * 100 + 60}; sleep 300")
    await start(tmux, "agent9", "printf 'dead one\\n'; exit 4")
    for i, name in enumerate(names, start=1):
        await wait_until(lambda n=name, i=i: _printed(tmux, n, str(i * 100 + 60)), name)

    calls: list[tuple[str, ...]] = []
    real_run = tmux.run

    async def counting_run(*args: str, **kw: Any) -> str:
        calls.append(args)
        return await real_run(*args, **kw)

    monkeypatch.setattr(tmux, "run", counting_run)
    snap = await tmux.snapshot([*names, "agent9"], 30)
    assert len(calls) == 1
    monkeypatch.undo()

    assert set(snap.captures) == {*names, "agent9"}
    for name in [*names, "agent9"]:
        assert snap.captures[name] == await tmux.capture(name, 30), name
    assert "160" in snap.captures["agent1"] and "130" in snap.captures["agent1"]
    assert snap.panes.keys() == (await tmux.list_panes()).keys()
    assert snap.panes["agent9"].pane_dead


@pytest.mark.timeout(60)
async def test_snapshot_with_a_missing_session_falls_back(
    tmux: Tmux, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start(tmux, "agent1", "echo one; sleep 300")
    await start(tmux, "agent2", "echo two; sleep 300")
    await wait_until(lambda: _printed(tmux, "agent2", "two"), "agent2 printed")
    calls: list[tuple[str, ...]] = []
    real_run = tmux.run

    async def counting_run(*args: str, **kw: Any) -> str:
        calls.append(args)
        return await real_run(*args, **kw)

    monkeypatch.setattr(tmux, "run", counting_run)
    snap = await tmux.snapshot(["agent1", "agent8", "agent2"], 10)
    assert len(calls) == 3  # the failed batch, list-panes, the captures that exist
    monkeypatch.undo()
    assert set(snap.panes) == {"agent1", "agent2"}
    assert snap.captures == {
        "agent1": await tmux.capture("agent1", 10),
        "agent2": await tmux.capture("agent2", 10),
    }
    assert "one" in snap.captures["agent1"]


@pytest.mark.timeout(30)
async def test_snapshot_without_names_lists_panes_only(tmux: Tmux) -> None:
    await start(tmux, "agent1", "sleep 300")
    snap = await tmux.snapshot([], 10)
    assert snap.captures == {}
    assert snap.panes == await tmux.list_panes()
    assert snap.panes["agent1"].dead_status is None and not snap.panes["agent1"].pane_dead


_lines = st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=20))


@given(
    head=_lines,
    captures=st.lists(_lines, max_size=5),
)
def test_split_captures_round_trips(head: list[str], captures: list[list[str]]) -> None:
    token = "netsky-snapshot-0123456789abcdef"
    names = [f"agent{i}" for i in range(len(captures))]
    out = "".join(line + "\n" for line in head)
    for i, lines in enumerate(captures):
        out += f"{token} {i}\n" + "".join(line + "\n" for line in lines)
    got_head, got = split_captures(out, token, names)
    assert got_head == "".join(line + "\n" for line in head)
    texts = ["".join(line + "\n" for line in c) for c in captures]
    assert got == dict(zip(names, texts, strict=True))
