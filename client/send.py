"""``netskyctl channel send AGENT TEXT|--file PATH --from ID``: queue one envelope (stdlib only).

Maildir delivery through netsky_shared.maildir (write ``tmp/``, fsync, rename into
``inbox/``), so it needs no daemon; refused when the inbox is full, the envelope too large
or its text holds a ``<channel`` tag or control characters (docs/bus.md, "Life of an
envelope").
"""

from __future__ import annotations

import sys

from client.common import Usage, home_of, out, setting
from netsky_shared.errors import EnvelopeTooLarge, NetskyError
from netsky_shared.ids import parse_agent

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping


class UnreadableInput(NetskyError):
    """Raised when ``channel send --file`` cannot read its file or the file is not UTF-8."""


def _read_text_file(path: str, max_bytes: int) -> str:
    """Read ``channel send --file PATH`` as UTF-8, at most ``max_bytes`` bytes.

    Raises UnreadableInput (missing, unreadable, not UTF-8) or EnvelopeTooLarge.
    Reading is capped rather than stat()-checked so ``--file <(cmd)`` works too.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UnreadableInput(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise EnvelopeTooLarge(
            f"{path} is over {max_bytes} bytes, more than one envelope may hold "
            "(envelope_max_bytes)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableInput(f"{path} is not UTF-8 text: {e}") from e


def cmd_channel_send(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pathlib import Path

    from netsky_shared.maildir import new_envelope, send
    from netsky_shared.paths import Paths

    if (args.text is None) == (args.file is None):
        raise Usage("channel send needs exactly one of TEXT ('-' reads standard input) or --file")
    to = parse_agent(args.agent)
    sender = args.sender if not args.sender[:1].isdigit() else parse_agent(args.sender)
    max_bytes = setting(environ, "envelope_max_bytes", 256 * 1024)
    if args.file is not None:
        text = _read_text_file(args.file, max_bytes)
    else:
        text = sys.stdin.read() if args.text == "-" else args.text
    envelope = new_envelope(sender, to, text, kind=args.kind, in_reply_to=args.reply_to)
    path = send(
        Paths(Path(home_of(environ))),
        envelope,
        inbox_max_pending=setting(environ, "inbox_max_pending", 1000),
        envelope_max_bytes=max_bytes,
    )
    result = {"id": envelope["id"], "to": to, "from": sender, "path": str(path)}
    out(args, result, f"queued for {to}: {envelope['id']}")
    return 0
