"""The control server: JSON-RPC 2.0 over newline-delimited JSON on ``netskyd.sock``.

The socket is created with mode 0600 and every connection's peer uid (SO_PEERCRED
on Linux, LOCAL_PEERCRED/getpeereid on BSD and macOS) must equal the daemon's.
One bad request gets an error response; it never ends the connection's
neighbours or the server. Contract: ``netsky_shared.protocol`` and ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from netsky_shared import protocol
from netsky_shared.errors import (
    ClonesFull,
    EnvelopeTooLarge,
    InboxFull,
    NetskyError,
    ReadinessTimeout,
    RestartBusy,
    SpawnFailed,
    UnknownAgent,
    UnknownClone,
    UnknownEntry,
)
from netskyd import log as logmod
from netskyd.control.api import HANDLERS, RpcError, Services
from netskyd.unixsock import listen_private, peer_pid, peer_uid

log = logmod.get("netskyd.control.server")


def error_code_for(exc: NetskyError) -> int:
    """The JSON-RPC error code of a NetskyError."""
    if isinstance(exc, UnknownAgent | UnknownClone | UnknownEntry):
        return protocol.UNKNOWN_AGENT
    if isinstance(exc, InboxFull | EnvelopeTooLarge | RestartBusy | ClonesFull):
        return protocol.TEMPORARY_FAILURE
    if isinstance(exc, SpawnFailed | ReadinessTimeout):
        return protocol.SPAWN_FAILED
    return protocol.NETSKY_ERROR


async def dispatch(svc: Services, line: bytes, pid: int | None = None) -> dict[str, Any]:
    """Answer one request line; never raises. ``pid``: the client's process (from the
    socket), handed to the handler as ``params["_peer_pid"]``; keys a client sends
    starting with ``_`` are dropped, so none can claim another process."""
    try:
        req = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return protocol.error(None, protocol.PARSE_ERROR, f"parse error: {e}")
    if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or "method" not in req:
        return protocol.error(None, protocol.INVALID_REQUEST, "not a JSON-RPC 2.0 request")
    req_id = req.get("id")
    method = req["method"]
    params = req.get("params") or {}
    handler = HANDLERS.get(method)
    if handler is None:
        return protocol.error(req_id, protocol.METHOD_NOT_FOUND, f"unknown method {method!r}")
    if not isinstance(params, dict):
        return protocol.error(req_id, protocol.INVALID_PARAMS, "params must be an object")
    params = {k: v for k, v in params.items() if not str(k).startswith("_")}
    params["_peer_pid"] = pid
    try:
        return protocol.result(req_id, await handler(svc, params))
    except RpcError as e:
        return protocol.error(req_id, e.code, e.message, e.data)
    except NetskyError as e:
        return protocol.error(req_id, error_code_for(e), str(e), {"type": type(e).__name__})
    except Exception as e:  # a bug in one handler must not take the server down
        log.exception("control.handler_failed", method=method)
        return protocol.error(req_id, protocol.INTERNAL_ERROR, f"internal error: {e!r}")


async def handle(svc: Services, stream: SocketStream) -> None:
    """Serve one client connection until it closes."""
    async with stream:
        try:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            uid = peer_uid(raw)
            pid = peer_pid(raw)
            if uid is not None and uid != os.getuid():
                log.warning("control.peer_refused", peer_uid=uid)
                msg = protocol.error(None, protocol.NETSKY_ERROR, "peer uid not allowed")
                await stream.send((json.dumps(msg) + "\n").encode())
                return
            reader = BufferedByteReceiveStream(stream)
            while True:
                try:
                    line = await reader.receive_until(b"\n", protocol.MAX_LINE_BYTES)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                except anyio.DelimiterNotFound:
                    msg = protocol.error(None, protocol.INVALID_REQUEST, "request line too long")
                    await stream.send((json.dumps(msg) + "\n").encode())
                    return
                if not line.strip():
                    continue
                response = await dispatch(svc, line, pid)
                await stream.send((json.dumps(response, default=str) + "\n").encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return


async def run(svc: Services, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: listen on ``netskyd.sock`` (mode 0600) until cancelled."""
    path = svc.settings().paths.socket
    path.unlink(missing_ok=True)  # we hold the daemon lock, so any socket here is stale
    listener = await listen_private(path)
    async with listener:
        task_status.started()
        await listener.serve(partial(handle, svc))
