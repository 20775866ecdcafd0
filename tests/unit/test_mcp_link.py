"""The MCP channel's pieces in-process: request parsing, the daemon-side link against
small fake servers on a real Unix socket, the channel server over memory streams
with the SDK's own client, and the claude command line that loads it."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import socket
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.shared.message import SessionMessage
from pydantic import BaseModel

from netsky_shared.errors import McpLinkError
from netskyd.bus import mcp_link
from netskyd.bus.channel_server import (
    CHANNEL_CAPABILITY,
    CHANNEL_METHOD,
    ChannelServer,
    notification_params,
    parse_request,
)
from netskyd.bus.envelope import Envelope
from netskyd.config import Runtime, load_settings
from netskyd.runtimes import build_command, mcp_channel_config
from netskyd.runtimes.claude import CLONE_DISALLOWED

pytestmark = pytest.mark.timeout(30)


def envelope(text: str = "hello", to: str = "agent1", sender: str = "agent0") -> dict[str, Any]:
    return {
        "v": 1,
        "id": uuid.uuid4().hex,
        "from": sender,
        "to": to,
        "ts": "2026-11-21T10:00:00.123456Z",
        "kind": "message",
        "text": text,
        "chat_id": sender,
        "in_reply_to": None,
    }


# --- parsing and the notification shape ---------------------------------------------


def test_notification_params_carry_text_and_string_meta() -> None:
    env = Envelope.model_validate(envelope("two\nlines ✓", sender="agent2"))
    assert notification_params(env) == {
        "content": "two\nlines ✓",
        "meta": {"chat_id": "agent2", "from": "agent2", "ts": "2026-11-21T10:00:00.123456Z"},
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", '{"envelopes": [...]}'),
        (b'{"envelopes": {}}', '{"envelopes": [...]}'),
        (json.dumps({"envelopes": [{"v": 1}]}).encode(), "envelope 0 fails the schema"),
        (json.dumps({"envelopes": [envelope(to="agent2")]}).encode(), "is for agent2"),
        (
            json.dumps({"envelopes": [envelope(), envelope(text="<channel>x")]}).encode(),
            "envelope 1 fails the schema",
        ),
    ],
)
def test_bad_requests_are_refused_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_request(line, "agent1")


def test_a_good_request_keeps_its_order() -> None:
    sent = [envelope("one"), envelope("two"), envelope("three")]
    got = parse_request(json.dumps({"envelopes": sent}).encode(), "agent1")
    assert [e.id for e in got] == [e["id"] for e in sent]


# --- the daemon's side against fake servers ----------------------------------------


@asynccontextmanager
async def fake_server(
    path: Path, handler: Callable[[SocketStream], Awaitable[None]]
) -> AsyncIterator[list[bytes]]:
    """Listen on ``path``; each connection's request line is recorded, then ``handler`` runs."""
    requests: list[bytes] = []

    async def serve(stream: SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            requests.append(await reader.receive_until(b"\n", 1 << 20))
            await handler(stream)

    listener = await anyio.create_unix_listener(path)
    async with anyio.create_task_group() as tg, listener:
        tg.start_soon(listener.serve, serve)
        yield requests
        tg.cancel_scope.cancel()


def answering(line: bytes) -> Callable[[SocketStream], Awaitable[None]]:
    async def handler(stream: SocketStream) -> None:
        await stream.send(line)

    return handler


async def test_deliver_sends_one_line_and_returns_the_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.sock"
    sent = [envelope("one"), envelope("two\nlines")]
    answer = mcp_link.encode({"ok": True, "delivered": [e["id"] for e in sent]})
    async with fake_server(path, answering(answer)) as requests:
        assert mcp_link.is_connected(path)
        assert await mcp_link.deliver(path, sent, 2.0) == [e["id"] for e in sent]
    assert [json.loads(r) for r in requests] == [{"envelopes": sent}]
    assert b"\n" not in requests[0]  # one line; the newline in the text is escaped


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b'{"ok": false, "error": "MCP session not initialized"}\n', "refused: MCP session not"),
        (b"garbage\n", "not JSON"),
        (b'{"delivered": []}\n', "no boolean 'ok'"),
        (b'{"ok": true, "delivered": [1]}\n', "no list of ids"),
        (b'{"ok": true}', "without an answer"),  # no newline, then closed
        (b"", "without an answer"),
    ],
)
async def test_deliver_raises_on_refusal_and_bad_answers(
    tmp_path: Path, answer: bytes, match: str
) -> None:
    path = tmp_path / "a.sock"
    async with fake_server(path, answering(answer)):
        with pytest.raises(McpLinkError, match=match):
            await mcp_link.deliver(path, [envelope()], 2.0)


@pytest.mark.parametrize(
    ("answer", "maybe"),
    [
        (b'{"ok": false, "error": "MCP session not initialized", "written": 0}\n', False),
        (b'{"ok": false, "error": "client stalled (1 of 2 written)", "written": 1}\n', True),
        (b'{"ok": false, "error": "an older server"}\n', True),
        (b"garbage\n", True),
    ],
)
async def test_only_a_refusal_before_writing_is_surely_undelivered(
    tmp_path: Path, answer: bytes, maybe: bool
) -> None:
    path = tmp_path / "a.sock"
    async with fake_server(path, answering(answer)):
        with pytest.raises(McpLinkError) as exc:
            await mcp_link.deliver(path, [envelope()], 2.0)
    assert exc.value.maybe_delivered is maybe


async def test_deliver_times_out_on_a_silent_server(tmp_path: Path) -> None:
    path = tmp_path / "a.sock"
    async with fake_server(path, lambda stream: anyio.sleep(30)):
        with anyio.fail_after(5), pytest.raises(McpLinkError, match="no answer .* within 0.2s"):
            await mcp_link.deliver(path, [envelope()], 0.2)


async def test_deliver_raises_when_nothing_listens(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    assert not mcp_link.is_connected(missing)
    with pytest.raises(McpLinkError, match="cannot reach"):
        await mcp_link.deliver(missing, [envelope()], 1.0)

    stale = tmp_path / "stale.sock"  # a socket file whose server died without cleaning up
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    assert mcp_link.is_connected(stale)
    with pytest.raises(McpLinkError, match="cannot reach") as exc:
        await mcp_link.deliver(stale, [envelope()], 1.0)
    assert exc.value.maybe_delivered is False  # a stale socket never marks a repeat

    regular = tmp_path / "file.sock"
    regular.write_text("")
    assert not mcp_link.is_connected(regular)


# --- the channel server with the SDK's client, over memory streams --------------------


async def until(predicate: Callable[[], object], timeout_s: float = 10) -> None:
    """Poll ``predicate`` every 10 ms until it is truthy (TimeoutError after ``timeout_s``)."""
    with anyio.fail_after(timeout_s):
        for _ in itertools.count():
            if predicate():
                return
            await anyio.sleep(0.01)


def inode(path: Path) -> int:
    try:
        return path.lstat().st_ino
    except OSError:
        return -1


class Channel(BaseModel):
    content: str
    meta: dict[str, str]


@asynccontextmanager
async def in_process(
    tmp_path: Path, initialize: bool = True
) -> AsyncIterator[tuple[ChannelServer, ClientSession, list[Channel]]]:
    """A ChannelServer for agent1 wired to a ClientSession; yields (server, client, seen)."""
    to_server_send, to_server_recv = anyio.create_memory_object_stream[SessionMessage | Exception]()
    to_client_send, to_client_recv = anyio.create_memory_object_stream[SessionMessage | Exception]()
    channel = ChannelServer("agent1", tmp_path / "state" / "mcp" / "agent1.sock", 2.0)
    seen: list[Channel] = []

    async def record(params: Channel) -> None:
        seen.append(params)

    binding = NotificationBinding(method=CHANNEL_METHOD, params_type=Channel, handler=record)
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.run, to_server_recv, to_client_send)
        async with ClientSession(
            to_client_recv, to_server_send, notification_bindings=[binding]
        ) as client:
            if initialize:
                await client.initialize()
            yield channel, client, seen
        to_server_send.close()  # the client went away: the server's read side ends


async def test_in_process_delivery_and_refusals(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with in_process(tmp_path, initialize=False) as (channel, client, seen):
            # Before initialize: no socket, and a direct delivery is refused.
            env = Envelope.model_validate(envelope("early"))
            assert await channel.deliver([env]) == {
                "ok": False,
                "error": "MCP session not initialized",
                "written": 0,
            }
            assert not mcp_link.is_connected(channel.socket_path)

            result = await client.initialize()
            assert result.server_info.name == "agent"
            assert result.capabilities.experimental == {CHANNEL_CAPABILITY: {}}
            await until(lambda: mcp_link.is_connected(channel.socket_path))
            assert stat.S_IMODE(os.stat(channel.socket_path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(channel.socket_path.parent).st_mode) == 0o700

            sent = [envelope("one"), envelope("two\nlines")]
            assert await mcp_link.deliver(channel.socket_path, sent, 2.0) == [e["id"] for e in sent]
            await until(lambda: len(seen) == 2)
            assert sorted(s.content for s in seen) == ["one", "two\nlines"]
        # The client went away: the socket is gone and deliveries are refused.
        assert channel.closed
        assert not channel.socket_path.exists()
        assert (await channel.deliver([env]))["ok"] is False


async def test_a_successor_keeps_its_socket(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with in_process(tmp_path) as (first, _client, _seen):
            path = first.socket_path
            await until(lambda: mcp_link.is_connected(path))
            first_inode = path.lstat().st_ino
            async with in_process(tmp_path) as (_second, _client2, seen2):
                # The second server replaces the first one's socket...
                await until(lambda: mcp_link.is_connected(path) and inode(path) != first_inode)
                await mcp_link.deliver(path, [envelope("to second")], 2.0)
                await until(lambda: [s.content for s in seen2] == ["to second"])
                # ...and the first one, going away, leaves it in place.
                first.remove_socket()
                assert mcp_link.is_connected(path)


# --- the claude command line ----------------------------------------------------------


def test_claude_command_loads_the_channel_server_when_enabled(tmp_path: Path) -> None:
    env = {"NETSKY_HOME": str(tmp_path), "NETSKY_CLAUDE_ARGS": '["--model", "x"]'}
    pf = tmp_path / "state" / "prompts" / "agent3.md"
    pf.parent.mkdir(parents=True)
    pf.write_text("prompt")

    off = load_settings(None, env)
    assert shlex.split(build_command(off, Runtime.CLAUDE, "agent3", pf, tmp_path)) == [
        "claude",
        "--model",
        "x",
        "--disallowedTools",  # a clone's (netskyd.runtimes.claude.CLONE_DISALLOWED)
        *CLONE_DISALLOWED,
        "--append-system-prompt-file",
        str(pf),
    ]
    assert not pf.with_suffix(".mcp.json").exists()

    on = load_settings(None, {**env, "NETSKY_CLAUDE_MCP_CHANNEL": "true"})
    argv = shlex.split(build_command(on, Runtime.CLAUDE, "agent3", pf, tmp_path))
    config_file = pf.with_suffix(".mcp.json")
    assert argv == [
        "claude",
        "--model",
        "x",
        "--mcp-config",
        str(config_file),
        "--dangerously-load-development-channels",
        "server:agent",
        "--disallowedTools",
        *CLONE_DISALLOWED,
        "--append-system-prompt-file",
        str(pf),
    ]
    config = json.loads(config_file.read_text())
    assert config == mcp_channel_config(on, "agent3")
    assert config == {
        "mcpServers": {
            "agent": {
                "command": sys.executable,
                "args": ["-m", "netskyd", "channel-server", "--agent", "agent3"],
                "env": {"NETSKY_HOME": str(tmp_path)},
            }
        }
    }
