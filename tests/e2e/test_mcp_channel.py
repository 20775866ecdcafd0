"""End to end: ``netskyd channel-server`` as a real stdio MCP server, driven by the
``mcp`` SDK's own stdio client (``stdio_client`` + ``ClientSession``), and the
daemon delivering an envelope sent on the bus through it.

The SDK drops server notifications it does not know unless a
``NotificationBinding`` names the method; the tests bind
``notifications/claude/channel`` as a client would, and also tap the raw stream to
check the exact params and the wire order.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import mcp_types
import pytest
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.message import SessionMessage
from pydantic import BaseModel

from netsky_shared.errors import McpLinkError
from netsky_shared.maildir import now_rfc3339
from netsky_shared.paths import Paths
from netskyd.bus import mcp_link
from netskyd.bus.channel_server import CHANNEL_CAPABILITY, CHANNEL_METHOD
from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class Channel(BaseModel):
    content: str
    meta: dict[str, str]


class WireTap:
    """The client's read stream, passed through; channel notifications recorded in order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.params: list[dict[str, Any]] = []

    async def receive(self) -> SessionMessage | Exception:
        item: SessionMessage | Exception = await self.inner.receive()
        if isinstance(item, SessionMessage):
            msg = item.message
            if isinstance(msg, mcp_types.JSONRPCNotification) and msg.method == CHANNEL_METHOD:
                self.params.append(dict(msg.params or {}))
        return item

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __aiter__(self) -> WireTap:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> WireTap:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass
class ChannelClient:
    session: ClientSession
    socket: Path
    tap: WireTap
    bound: list[Channel] = field(default_factory=list)


async def until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; fail with ``what`` after ``timeout_s``."""
    try:
        with anyio.fail_after(timeout_s):
            for _ in itertools.count():
                if predicate():
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


@asynccontextmanager
async def channel_client(
    home: Path, agent: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ChannelClient]:
    """``netskyd channel-server --agent <agent>`` under the SDK's stdio client (not initialized).

    The server's stderr goes to ``<home>/channel-<agent>.stderr``; leaving the block
    closes its stdin and the SDK reaps it (killing it after a grace period).
    """
    await anyio.Path(home).mkdir(parents=True, exist_ok=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "netskyd", "channel-server", "--agent", agent],
        env={"NETSKY_HOME": str(home), **(extra_env or {})},
        cwd=str(home),
    )
    # The child's stderr needs a real file (a descriptor); opening one is instant.
    with open(home / f"channel-{agent}.stderr", "a") as errlog:  # noqa: ASYNC230
        async with stdio_client(params, errlog=errlog) as (read, write):
            tap = WireTap(read)
            bound: list[Channel] = []

            async def record(p: Channel) -> None:
                bound.append(p)

            binding = NotificationBinding(
                method=CHANNEL_METHOD, params_type=Channel, handler=record
            )
            async with ClientSession(tap, write, notification_bindings=[binding]) as session:
                yield ChannelClient(session, Paths(home).mcp_socket(agent), tap, bound)


def envelope(text: str, to: str = "agent1", sender: str = "agent0") -> dict[str, Any]:
    return {
        "v": 1,
        "id": uuid.uuid4().hex,
        "from": sender,
        "to": to,
        "ts": now_rfc3339(),
        "kind": "message",
        "text": text,
        "chat_id": sender,
        "in_reply_to": None,
    }


async def raw_exchange(path: Path, line: bytes) -> dict[str, Any]:
    """Send one raw line to a channel socket and return the parsed answer."""
    with anyio.fail_after(5):
        async with await anyio.connect_unix(path) as stream:
            await stream.send(line)
            answer = b""
            while not answer.endswith(b"\n"):
                answer += await stream.receive()
    return dict(json.loads(answer))


async def test_real_mcp_client_receives_the_channel_notification(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with anyio.fail_after(60):
        async with channel_client(home, "agent1") as client:
            result = await client.session.initialize()
            assert result.server_info.name == "agent"
            assert result.capabilities.experimental is not None
            assert CHANNEL_CAPABILITY in result.capabilities.experimental
            await until(lambda: mcp_link.is_connected(client.socket), 10, "the channel socket")
            assert stat.S_IMODE(os.stat(client.socket).st_mode) == 0o600

            # One envelope: the client gets exactly {content, meta: {chat_id, from, ts}}.
            env = envelope("hello from the bus\nsecond line ✓", sender="agent2")
            assert await mcp_link.deliver(client.socket, [env], 5.0) == [env["id"]]
            await until(lambda: client.bound, 5, "the bound notification")
            meta = {"chat_id": "agent2", "from": "agent2", "ts": env["ts"]}
            assert client.bound == [Channel(content=env["text"], meta=meta)]
            assert client.tap.params == [{"content": env["text"], "meta": meta}]

            # A batch arrives in order, one notification per envelope.
            batch = [envelope(f"message {i}") for i in range(5)]
            ids = await mcp_link.deliver(client.socket, batch, 5.0)
            assert ids == [e["id"] for e in batch]
            assert [p["content"] for p in client.tap.params[1:]] == [e["text"] for e in batch]

            # Malformed requests are refused; the server keeps serving.
            bad = await raw_exchange(client.socket, b"{not json\n")
            assert bad["ok"] is False and "not JSON" in bad["error"]
            wrong = await raw_exchange(
                client.socket, mcp_link.encode({"envelopes": [envelope("x", to="agent2")]})
            )
            assert wrong == {
                "ok": False,
                "error": "envelope 0 is for agent2, this is the channel of agent1",
                "written": 0,
            }
            with pytest.raises(McpLinkError, match="fails the schema"):
                await mcp_link.deliver(client.socket, [{"v": 1, "text": "no id"}], 5.0)
            last = envelope("still here")
            assert await mcp_link.deliver(client.socket, [last], 5.0) == [last["id"]]
            assert len(client.tap.params) == 7  # nothing emitted for the refused ones


async def test_refused_before_initialize_and_after_the_client_exits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    socket = Paths(home).mcp_socket("agent3")
    with anyio.fail_after(60):
        async with channel_client(home, "3") as client:  # the CLI takes "3" for agent3
            await client.session.send_ping()  # the server is up, but not initialized
            assert not mcp_link.is_connected(socket)
            with pytest.raises(McpLinkError, match="cannot reach"):
                await mcp_link.deliver(socket, [envelope("too early", to="agent3")], 2.0)

            await client.session.initialize()
            await until(lambda: mcp_link.is_connected(socket), 10, "the channel socket")
            env = envelope("in time", to="agent3")
            assert await mcp_link.deliver(socket, [env], 5.0) == [env["id"]]
        # The client went away: the server removed its socket and exited.
        assert not socket.exists()
        with pytest.raises(McpLinkError, match="cannot reach"):
            await mcp_link.deliver(socket, [envelope("too late", to="agent3")], 2.0)


def _start_raw(home: Path, agent: str) -> subprocess.Popen[bytes]:
    """A channel server on pipes, initialized by hand (JSON-RPC lines)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netskyd", "channel-server", "--agent", agent, "--home", str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    proc.stdin.write(json.dumps(init).encode() + b"\n")
    proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
    proc.stdin.flush()
    return proc


def test_server_exits_cleanly_when_stdin_closes_or_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    socket = Paths(home).mcp_socket("agent1")
    proc = _start_raw(home, "agent1")
    try:
        wait_for(lambda: mcp_link.is_connected(socket), 30, "the channel socket")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # the MCP client went away
        assert proc.wait(timeout=15) == 0
        assert not socket.exists()
        # stdout carried the MCP stream only: the initialize answer, nothing else.
        lines = proc.stdout.read().splitlines()
        assert [json.loads(line)["id"] for line in lines] == [1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    proc = _start_raw(home, "agent1")
    try:
        wait_for(lambda: mcp_link.is_connected(socket), 30, "the channel socket")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == -signal.SIGTERM
        assert not socket.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_daemon_delivers_through_the_connected_channel(netsky: Netsky) -> None:
    netsky.configure(clones=1)
    netsky.start()
    names = ["agent0", "agent1", "agentinfinity"]
    wait_for(lambda: netsky.all_ready(names), 60, "agents ready")

    async def body() -> None:
        env = {"NETSKY_CONFIG": str(netsky.config)}
        async with channel_client(netsky.home, "agent1", env) as client:
            await client.session.initialize()
            await until(lambda: mcp_link.is_connected(client.socket), 10, "the channel socket")

            text = f"hello over mcp {uuid.uuid4().hex[:8]}"
            sent = await anyio.to_thread.run_sync(
                lambda: netsky.ctl("channel", "send", "agent1", text, "--from", "agent0", "--json")
            )
            assert sent.returncode == 0, sent.stderr
            envelope_id = json.loads(sent.stdout)["id"]
            await until(lambda: client.bound, 30, "the channel notification from the daemon")
            assert client.bound[0].content == text
            assert client.bound[0].meta["from"] == "agent0"
            assert client.bound[0].meta["chat_id"] == "agent0"

            delivered = netsky.home / "channels/agent/agent1/delivered"
            await until(
                lambda: list(delivered.glob(f"*{envelope_id}.json")), 10, "the envelope acked"
            )
            # It went through the channel, not into the pane.
            pane = await anyio.to_thread.run_sync(netsky.pane_text, "agent1")
            assert text not in pane

    anyio.run(body)


# --- with the real Claude Code CLI (opt-in) --------------------------------------------

CHANNELS_OPT_IN = "NETSKY_TEST_CLAUDE_CHANNELS"


@pytest.mark.claude
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    os.environ.get(CHANNELS_OPT_IN) != "1",
    reason=f"set {CHANNELS_OPT_IN}=1: needs Claude Code's telemetry switched on (see docstring)",
)
def test_real_claude_code_shows_an_envelope_delivered_through_its_channel(
    netsky: Netsky, tmp_path: Path
) -> None:
    """agent0 runs Claude Code with ``claude_mcp_channel``; an envelope arrives as a turn.

    Channels hang on a GrowthBook flag that Claude Code reads only with telemetry on,
    so this test seeds the cached flag and leaves telemetry on, sending every HTTP
    request (API, telemetry, flags) to a closed local port through HTTP(S)_PROXY.
    It answers the development-channels consent dialog itself, as an operator would.
    """
    from tests.e2e.test_claude import CLAUDE_ENV_PREFIXES, CLAUDE_SPEC, FAKE_API_KEY, seed_home
    from tests.harness import EnvNetsky, closed_port
    from tests.npm_clis import find_or_install

    claude = find_or_install(CLAUDE_SPEC, "claude", "NETSKY_TEST_CLAUDE")
    home, workdir = tmp_path / "user-home", (tmp_path / "work").absolute()
    workdir.mkdir()
    seed_home(home, workdir, FAKE_API_KEY)
    state = json.loads((home / ".claude.json").read_text())
    state["cachedGrowthBookFeatures"] = {"tengu_harbor": True}
    (home / ".claude.json").write_text(json.dumps(state))
    nowhere = f"http://127.0.0.1:{closed_port()}"
    ns = EnvNetsky(
        netsky,
        {
            "HOME": str(home),
            "ANTHROPIC_API_KEY": FAKE_API_KEY,
            "ANTHROPIC_BASE_URL": nowhere,
            "HTTPS_PROXY": nowhere,
            "HTTP_PROXY": nowhere,
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
        },
        strip_prefixes=(*CLAUDE_ENV_PREFIXES, "DISABLE_", "DO_NOT_TRACK", "NO_PROXY", "no_proxy"),
    )
    debug_log = tmp_path / "claude-debug.log"
    ns.configure(
        runtime="claude",
        claude_command=str(claude),
        claude_args=["--debug-file", str(debug_log)],
        claude_mcp_channel=True,
        clones=0,
        agent_runtimes={"agentinfinity": "demo"},
        ready_timeout_s=120,
        workdir=str(workdir),
    )
    try:
        ns.start()

        def consent_or_ready() -> bool:
            if "Loading development channels" in ns.pane_text("agent0"):
                subprocess.run(
                    ["tmux", "-L", ns.socket_name, "send-keys", "-t", "=agent0:", "Enter"],
                    timeout=10,
                    check=False,
                )
                return False
            return bool(ns.agents().get("agent0", {}).get("ready"))

        wait_for(consent_or_ready, 180, "agent0 (Claude Code) past the consent dialog and ready")
        socket = Paths(ns.home).mcp_socket("agent0")
        wait_for(lambda: mcp_link.is_connected(socket), 60, "agent0's channel socket")

        text = f"hello through the channel {uuid.uuid4().hex[:8]}"
        sent = ns.ctl("channel", "send", "agent0", text, "--from", "agent1")
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: f"← agent: {text}" in ns.pane_text("agent0"), 60, "the turn in the pane")
        log = debug_log.read_text(errors="replace")
        assert "Channel notifications registered" in log
        assert f"notifications/claude/channel: {text}" in log  # the channel, not a paste
    finally:
        ns.cleanup()
