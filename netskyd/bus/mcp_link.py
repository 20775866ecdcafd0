"""The daemon's link to an agent's MCP channel server (``netskyd channel-server``).

Wire contract (both ends import it from here), over the Unix stream socket
``state/mcp/<agent>.sock`` (mode 0600, peer uid checked), one exchange per
connection, each message one line of UTF-8 JSON ending in ``\\n``:

- request, daemon -> server::

      {"envelopes": [<envelope JSON objects as on disk: v, id, from, to, ts, kind,
                      text, chat_id, in_reply_to>, ...]}

- answer, server -> daemon, then the server closes the connection::

      {"ok": true, "delivered": ["<id>", ...]}      every envelope, in order
      {"ok": false, "error": "<reason>"}            refused or failed

``ok: true`` means the server wrote one ``notifications/claude/channel`` per
envelope, in request order, to its MCP client, and the client then answered a
``ping`` sent after them (so it has read them). ``ok: false`` before anything
was written covers a malformed request, an envelope that fails the schema, or an
MCP session that is not initialized (or already closed); a failure after the
first notification (the ping timed out, the session closed) is ``ok: false`` too,
and the daemon counts the batch as maybe seen.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from netsky_shared.errors import McpLinkError

#: Longest request line the server reads (a batch of envelopes, each at most
#: ``envelope_max_bytes``); longer requests are refused.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Longest answer line the daemon reads.
MAX_ANSWER_BYTES = 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    """One wire line: compact UTF-8 JSON and ``\\n``."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def refusal(reason: str, written: int = 0) -> dict[str, Any]:
    """The answer ``{"ok": false, "error": reason, "written": n}``: ``written`` counts the
    notifications already sent to the MCP client before the failure (0 for a refusal)."""
    return {"ok": False, "error": reason, "written": written}


def is_connected(socket_path: Path) -> bool:
    """True when ``socket_path`` exists and is a Unix socket (a channel server is listening).

    A socket left behind by a server that died without cleaning up also counts;
    ``deliver`` then fails with McpLinkError and the daemon falls back to the pane.
    """
    try:
        return stat.S_ISSOCK(socket_path.lstat().st_mode)
    except OSError:
        return False


async def deliver(
    socket_path: Path, envelopes: list[dict[str, Any]], timeout_s: float
) -> list[str]:
    """Hand envelopes to the channel server listening on ``socket_path``; one exchange.

    ``envelopes`` are on-disk envelope objects (``Envelope.to_json()``), in the
    order the agent should see them; ``timeout_s`` bounds the whole exchange
    (connect, send, answer), in seconds. Returns the ids the server delivered,
    in order.

    Raises McpLinkError when the server refuses (``ok: false``, the message
    carries its reason), answers something that is not the contract, does not
    answer within ``timeout_s``, or cannot be reached (no socket, refused). Its
    ``maybe_delivered`` is False only when nothing can have reached the MCP client
    (no connection, or a refusal with ``written: 0``).
    """
    request = encode({"envelopes": envelopes})
    try:
        with anyio.fail_after(timeout_s):
            try:
                stream = await anyio.connect_unix(socket_path)
            except OSError as e:  # nothing was sent: surely not delivered
                raise McpLinkError(
                    f"cannot reach {socket_path}: {e}", maybe_delivered=False
                ) from e
            async with stream:
                await stream.send(request)
                reader = BufferedByteReceiveStream(stream)
                line = await reader.receive_until(b"\n", MAX_ANSWER_BYTES)
    except TimeoutError as e:  # before OSError: TimeoutError is one
        raise McpLinkError(f"no answer from {socket_path} within {timeout_s}s") from e
    except (anyio.EndOfStream, anyio.IncompleteRead) as e:
        raise McpLinkError(f"{socket_path} closed the connection without an answer") from e
    except anyio.DelimiterNotFound as e:
        raise McpLinkError(f"answer from {socket_path} exceeds {MAX_ANSWER_BYTES} bytes") from e
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
        raise McpLinkError(f"cannot reach {socket_path}: {e}") from e
    return _parse_answer(socket_path, line)


def _parse_answer(socket_path: Path, line: bytes) -> list[str]:
    try:
        answer = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise McpLinkError(f"answer from {socket_path} is not JSON: {e}") from e
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise McpLinkError(f"answer from {socket_path} has no boolean 'ok': {answer!r:.200}")
    if not answer["ok"]:
        written = answer.get("written")
        raise McpLinkError(
            f"{socket_path} refused: {answer.get('error') or 'no reason given'}",
            maybe_delivered=not (isinstance(written, int) and written == 0),
        )
    delivered = answer.get("delivered")
    if not isinstance(delivered, list) or not all(isinstance(i, str) for i in delivered):
        raise McpLinkError(f"answer from {socket_path} has no list of ids: {answer!r:.200}")
    return delivered
