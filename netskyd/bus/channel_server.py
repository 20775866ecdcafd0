"""``netskyd channel-server --agent agentN``: the agent's MCP channel, for Claude Code.

A stdio MCP server (the ``mcp`` SDK's low-level ``Server``, named ``agent``) that
declares the experimental ``claude/channel`` capability, so Claude Code can load
it as a channel and show what it pushes as ``<channel source="agent" ...>`` turns.
Once the MCP session is initialized it listens on ``state/mcp/<agent>.sock``
(mode 0600, peer uid checked) for deliveries from the
daemon; the wire contract is in ``netskyd.bus.mcp_link``. For each envelope it sends
the client

    {"jsonrpc": "2.0", "method": "notifications/claude/channel",
     "params": {"content": <text>, "meta": {"chat_id": ..., "from": ..., "ts": ...}}}

through the SDK's ``Connection.notify`` (raw method and params on the
connection's own channel; the typed ``ServerSession.send_notification`` takes
spec notifications only), then a ``ping``; the answer is ``ok`` once the client
answered it, i.e. read everything before it. Claude Code 2.1.x wants ``meta``
values to be strings and keys to be identifiers, which ``chat_id``, ``from`` and
``ts`` are; it shows each one as ``← agent: <text>`` (seen with 2.1.197; how it
is loaded: ``netskyd.runtimes``).

The server speaks the handshake (``initialize``) era of MCP, which is what
Claude Code uses. stdout is the MCP stream: everything else goes to stderr.
It exits when stdin closes (the client went away), removing its socket; on
SIGTERM, SIGINT or SIGHUP it removes the socket and dies by the signal (the
SDK reads stdin in a thread that cannot be cancelled). One delivery at a time;
every wait has the deadline ``mcp_timeout_s``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_connection
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from pydantic import ValidationError

from netskyd import __version__
from netskyd.bus.envelope import Envelope
from netskyd.bus.mcp_link import MAX_REQUEST_BYTES, encode, is_connected, refusal
from netskyd.unixsock import listen_private, peer_uid

if TYPE_CHECKING:
    from mcp.shared._stream_protocols import ReadStream, WriteStream
    from mcp.shared.message import SessionMessage

SERVER_NAME = "agent"
CHANNEL_CAPABILITY = "claude/channel"
CHANNEL_METHOD = "notifications/claude/channel"
INSTRUCTIONS = (
    "Messages from other netsky agents arrive as "
    '<channel source="agent" chat_id="..." from="..." ts="..."> blocks. '
    "Answer the agent named in `from` with: "
    'netskyctl channel send <AGENT> "<text>" --from {agent}'
)

log = structlog.get_logger("netskyd.channel")


def notification_params(envelope: Envelope) -> dict[str, Any]:
    """The ``notifications/claude/channel`` params of one envelope: content and string meta."""
    return {
        "content": envelope.text,
        "meta": {"chat_id": envelope.chat_id, "from": envelope.sender, "ts": envelope.ts},
    }


def parse_request(line: bytes, agent: str) -> list[Envelope]:
    """Parse one request line ``{"envelopes": [...]}`` for ``agent``'s channel.

    Returns the envelopes in order. Raises ValueError with a one-line reason when
    the line is not JSON, not that shape, or an envelope fails the schema or is
    addressed to another agent (the whole request is refused; nothing is sent).
    """
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"request is not JSON: {e}") from e
    if not isinstance(request, dict) or not isinstance(request.get("envelopes"), list):
        raise ValueError('request must be {"envelopes": [...]}')
    envelopes = []
    for i, raw in enumerate(request["envelopes"]):
        try:
            envelope = Envelope.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise ValueError(f"envelope {i} fails the schema: {where}: {first['msg']}") from e
        if envelope.to != agent:
            raise ValueError(f"envelope {i} is for {envelope.to}, this is the channel of {agent}")
        envelopes.append(envelope)
    return envelopes


class ChannelServer:
    """One agent's channel: an MCP session on a stream pair, plus the delivery socket."""

    def __init__(self, agent: str, socket_path: Path, timeout_s: float) -> None:
        self.agent = agent
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.server: Server[dict[str, Any]] = Server(
            SERVER_NAME, version=__version__, instructions=INSTRUCTIONS.format(agent=agent)
        )
        self.connection: Connection | None = None
        self.closed = False
        self._lock = anyio.Lock()
        #: (st_dev, st_ino) of the socket this server bound, so it never removes a successor's.
        self._bound: tuple[int, int] | None = None

    def initialization_options(self) -> InitializationOptions:
        """What ``initialize`` answers: server ``agent``, ``experimental: {claude/channel: {}}``."""
        return self.server.create_initialization_options(
            experimental_capabilities={CHANNEL_CAPABILITY: {}}
        )

    async def run(
        self,
        read_stream: ReadStream[SessionMessage | Exception],
        write_stream: WriteStream[SessionMessage],
    ) -> None:
        """Serve the MCP session until its read stream ends; listen for deliveries meanwhile."""
        # The loop driver of Server.run's handshake era, built here so this object
        # holds the Connection (its notify/ping are the outbound path).
        dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
            read_stream, write_stream, inline_methods=frozenset({"initialize"})
        )
        connection = Connection.for_loop(dispatcher)
        self.connection = connection
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen, connection)
            try:
                await serve_connection(
                    self.server,
                    dispatcher,
                    connection=connection,
                    lifespan_state={},
                    init_options=self.initialization_options(),
                )
            finally:
                self.closed = True
                tg.cancel_scope.cancel()
        log.info("channel.session_closed", agent=self.agent)

    async def _listen(self, connection: Connection) -> None:
        await connection.initialized.wait()
        try:
            listener = await self._bind()
        except OSError as e:
            # The session stays up; the daemon finds no socket and uses the pane.
            log.error(
                "channel.bind_failed", agent=self.agent, socket=str(self.socket_path), error=str(e)
            )
            return
        log.info("channel.listening", agent=self.agent, socket=str(self.socket_path))
        try:
            async with listener:
                await listener.serve(self._handle)
        finally:
            self.remove_socket()

    async def _bind(self) -> SocketListener:
        path = self.socket_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if is_connected(path):
            # Stale, or a predecessor for the same agent: the newest server takes deliveries.
            path.unlink()
            log.info("channel.socket_replaced", agent=self.agent, socket=str(path))
        listener = await listen_private(path)
        st = path.lstat()
        self._bound = (st.st_dev, st.st_ino)
        return listener

    def remove_socket(self) -> None:
        """Remove the socket this server bound, unless another server has replaced it."""
        if self._bound is None:
            return
        try:
            st = self.socket_path.lstat()
            if (st.st_dev, st.st_ino) == self._bound:
                self.socket_path.unlink()
        except OSError:
            pass
        self._bound = None

    async def _handle(self, stream: SocketStream) -> None:
        """One daemon connection: read the request line, deliver, answer, close. Never raises."""
        async with stream:
            try:
                uid = peer_uid(stream.extra(SocketAttribute.raw_socket))
                if uid is not None and uid != os.getuid():
                    log.warning("channel.peer_refused", agent=self.agent, peer_uid=uid)
                    answer = refusal("peer uid not allowed")
                else:
                    answer = await self._exchange(stream)
                with anyio.move_on_after(self.timeout_s):
                    await stream.send(encode(answer))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
                log.info("channel.daemon_gone", agent=self.agent, error=str(e))
            except Exception:  # one bad exchange must not end the channel
                log.exception("channel.exchange_failed", agent=self.agent)

    async def _exchange(self, stream: SocketStream) -> dict[str, Any]:
        reader = BufferedByteReceiveStream(stream)
        try:
            with anyio.fail_after(self.timeout_s):
                line = await reader.receive_until(b"\n", MAX_REQUEST_BYTES)
        except TimeoutError:
            return refusal(f"no request line within {self.timeout_s}s")
        except (anyio.EndOfStream, anyio.IncompleteRead):
            return refusal("connection closed before a full request line")
        except anyio.DelimiterNotFound:
            return refusal(f"request line exceeds {MAX_REQUEST_BYTES} bytes")
        try:
            envelopes = parse_request(line, self.agent)
        except ValueError as e:
            log.warning("channel.request_refused", agent=self.agent, reason=str(e))
            return refusal(str(e))
        return await self.deliver(envelopes)

    async def deliver(self, envelopes: list[Envelope]) -> dict[str, Any]:
        """Send one channel notification per envelope, in order, then confirm with a ping.

        Returns the wire answer: ``{"ok": true, "delivered": [ids]}``, or a refusal
        when the session is not initialized or closed, the client does not
        answer the ping within ``timeout_s``, or the session fails meanwhile.
        """
        connection = self.connection
        if connection is None or not connection.initialized.is_set():
            return refusal("MCP session not initialized")
        if self.closed:
            return refusal("MCP session closed")
        sent = 0
        try:
            with anyio.fail_after(self.timeout_s):
                async with self._lock:
                    for envelope in envelopes:
                        await connection.notify(CHANNEL_METHOD, notification_params(envelope))
                        sent += 1
                    await connection.ping()
        except TimeoutError:
            reason = f"MCP client did not confirm within {self.timeout_s}s"
            return self._failed(reason, sent, len(envelopes))
        except (MCPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
            return self._failed(f"MCP session failed: {e}", sent, len(envelopes))
        ids = [e.id for e in envelopes]
        log.info("channel.delivered", agent=self.agent, ids=ids)
        return {"ok": True, "delivered": ids}

    def _failed(self, reason: str, sent: int, total: int) -> dict[str, Any]:
        reason = f"{reason} ({sent} of {total} notifications written)"
        log.warning("channel.delivery_failed", agent=self.agent, reason=reason)
        return refusal(reason, written=sent)


async def _die_on_signal(channel: ChannelServer) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("channel.signal", agent=channel.agent, signal=signal.Signals(signum).name)
            channel.remove_socket()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


async def serve(agent: str, socket_path: Path, timeout_s: float) -> None:
    """Run ``agent``'s channel over this process's stdin/stdout until stdin closes.

    ``socket_path`` is ``Paths.mcp_socket(agent)``; ``timeout_s`` bounds every
    wait of one delivery (``mcp_timeout_s``).
    """
    channel = ChannelServer(agent, socket_path, timeout_s)
    log.info("channel.started", agent=agent, pid=os.getpid())
    async with anyio.create_task_group() as tg:
        tg.start_soon(_die_on_signal, channel)
        async with stdio_server() as (read_stream, write_stream):
            await channel.run(read_stream, write_stream)
        tg.cancel_scope.cancel()


