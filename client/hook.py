"""The tmux hook client: tell netskyd at once that an agent's session died or closed.

tmux runs it from netsky's global hooks (``netskyd.agents.tmux.hook_commands``) through
``run-shell -b``::

    python -m client.hook --socket PATH EVENT SESSION [STATUS]

EVENT is ``pane-died`` or ``session-closed``; SESSION the tmux session name; STATUS the
dead pane's exit status (absent or empty for ``session-closed``, and for a process
killed by a signal). It sends one JSON-RPC 2.0 request, ``session.event`` with params
``{"event": EVENT, "session": SESSION, "status": int | null}``, on the daemon's socket
(one JSON object per line, ``netsky_shared.protocol``), waits for the answer, and is done.

It runs inside the user's tmux server, so it must be quick and quiet: stdlib only
(plus the tiny ``netsky_shared.protocol``; not even ``json``, whose import is a fifth of the
run: the request is built from checked words and the answer only looked at), no
``hello`` round trip (the daemon installed this hook with its own interpreter, so both
speak the same API), 1 s for everything, nothing on stdout or stderr, and exit status 0
whatever happens, a daemon that is down included (the tick, and the session watcher's
sweep, are the backstops for an event lost here).
"""

from __future__ import annotations

import socket
import sys
import time

from netsky_shared import protocol

METHOD = protocol.SESSION_EVENT
EVENTS = frozenset({"pane-died", "session-closed"})
DEADLINE_S = 1.0

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def parse_args(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """Parse ``--socket PATH EVENT SESSION [STATUS]`` (``--socket=PATH`` too).

    Returns (socket path, request params) or None when the arguments are unusable
    (missing socket, unknown event, a session name that is not ASCII letters and digits
    (agent ids are), too many words). STATUS that is empty or not an integer becomes
    None.
    """
    sock_path: str | None = None
    words: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--socket":
            sock_path = next(args, None)
        elif arg.startswith("--socket="):
            sock_path = arg.removeprefix("--socket=")
        else:
            words.append(arg)
    if not sock_path or not 2 <= len(words) <= 3:
        return None
    event, session = words[0], words[1]
    if event not in EVENTS or not (session.isascii() and session.isalnum()):
        return None
    status: int | None = None
    if len(words) == 3:
        try:
            status = int(words[2])
        except ValueError:
            status = None
    return sock_path, {"event": event, "session": session, "status": status}


def request_line(params: dict[str, Any]) -> bytes:
    """The JSON-RPC request for ``params`` from ``parse_args``, one line, without ``json``.

    Safe only for what ``parse_args`` lets through: the event and the session are
    ASCII letters, digits and ``-``, the status an int or None.
    """
    status = "null" if params["status"] is None else str(int(params["status"]))
    return (
        f'{{"jsonrpc": "2.0", "id": 1, "method": "{METHOD}", "params": '
        f'{{"event": "{params["event"]}", "session": "{params["session"]}", '
        f'"status": {status}}}}}\n'
    ).encode()


def send(sock_path: str, params: dict[str, Any], deadline_s: float = DEADLINE_S) -> bool:
    """Send one ``session.event`` request and wait for its answer, ``deadline_s`` in all.

    Returns True when the daemon answered with a result, False otherwise (no socket,
    refused, timed out, an error response). Never raises OSError.
    """
    end = time.monotonic() + deadline_s
    line = request_line(params)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(deadline_s)
            sock.connect(sock_path)
            sock.settimeout(max(end - time.monotonic(), 0.001))
            sock.sendall(line)
            buf = b""
            while b"\n" not in buf:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                chunk = sock.recv(4096)
                if not chunk or len(buf) > protocol.MAX_LINE_BYTES:
                    return False
                buf += chunk
    except OSError:
        return False
    answer = buf.split(b"\n", 1)[0]
    return b'"result"' in answer and b'"error"' not in answer


def main(argv: list[str] | None = None) -> int:
    """Entry point; always returns 0 (see the module docstring)."""
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
        if parsed is not None:
            send(*parsed)
    except BaseException:  # noqa: BLE001 - inside tmux's run-shell nothing may surface
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
