"""``netskyctl imessage send --owner TEXT``, ``netskyctl email send --owner SUBJECT
[BODY|-]`` and ``netskyctl email draft SUBJECT [BODY|-]``: agent0's line to its owner
(docs/owner.md).

Stdlib only. The call carries the caller's ``AGENT_N``; netskyd checks it against the
pane the call comes from, and refuses any agent but agent0 and agentinfinity (exit 1,
with where to send it instead). The message is signed with the sending agent. ``--owner``
is the only recipient there is: it says, on the command line, who this goes to.
"""

from __future__ import annotations

import sys

from client.common import Usage, home_of, out
from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

#: A send waits for SMTP, IMAP or osascript, each with its own deadline in netskyd.
TIMEOUT_S = 120.0


def _text(value: str | None) -> str:
    if value is None or value != "-":
        return value or ""
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise Usage(f"standard input is not UTF-8 (byte {e.start})") from e


def _call(args: argparse.Namespace, environ: Mapping[str, str], method: str,
          params: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    if not args.owner and method != protocol.EMAIL_DRAFT:
        raise Usage("say who it goes to: --owner (the only recipient there is)")
    params["agent_n"] = environ.get("AGENT_N", "").strip()
    with Client(socket_path(home_of(environ))) as client:
        res: dict[str, Any] = client.call(method, params, TIMEOUT_S)
    return res


def cmd_imessage(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if getattr(args, "imessage_command", None) != "send":
        raise Usage("imessage needs a subcommand: send")
    res = _call(args, environ, protocol.IMESSAGE_SEND, {"text": _text(args.text)})
    out(args, res, f"iMessage sent to {res['to']} (signed - {res['by']})")
    return protocol.EXIT_OK


def cmd_email(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    command = getattr(args, "email_command", None)
    if command not in ("send", "draft"):
        raise Usage("email needs a subcommand: send, draft")
    params = {"subject": args.subject, "body": _text(args.body)}
    if command == "send":
        res = _call(args, environ, protocol.EMAIL_SEND, params)
        out(args, res, f"mail sent to {res['to']}: {res['subject']} (signed - {res['by']})")
    else:
        res = _call(args, environ, protocol.EMAIL_DRAFT, params)
        out(args, res, f"draft to {res['to']} filed in {res['mailbox']}: {res['subject']} "
                       f"(signed - {res['by']}; the owner sends it)")  # fmt: skip
    return protocol.EXIT_OK


def doctor_check(home: str, up: bool) -> dict[str, Any]:
    """``doctor``'s ``owner`` finding: each configured source's state (from ``status``:
    ok, failing with its error, unavailable with its reason) and when it last delivered;
    without netskyd, nothing to say."""
    from client.doctor import check

    if not up:
        return check("owner", "ok", "netskyd is not running: no source state to show")
    with Client(socket_path(home)) as client:
        st = client.call(protocol.STATUS, {}, 10.0)
    sources = st.get("owner") or []
    if not sources:
        return check("owner", "ok", "no owner sources configured ([owner.email], "
                     "[owner.imessage]; docs/owner.md)")  # fmt: skip
    parts = [f"{s['name']} {s['state']} (last message {s['last_message_ts'] or 'never'})"
             + (f": {s['error']}" if s["error"] else "") for s in sources]  # fmt: skip
    bad = [s for s in sources if s["state"] == "failing"]
    status = "warn" if bad or any(s["state"] == "unavailable" for s in sources) else "ok"
    hint = "the source's incident (source:NAME) says more; netskyctl incidents" if bad else ""
    return check("owner", status, "; ".join(parts), hint)


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``imessage`` and ``email`` to netskyctl's subcommands."""
    from client.parser import WordsParser

    im = sub.add_parser("imessage", parents=[common], help="agent0's iMessage to its owner")
    isub: Any = im.add_subparsers(dest="imessage_command", metavar="SUBCOMMAND",
                                  parser_class=WordsParser)  # fmt: skip
    send = isub.add_parser("send", parents=[common], help="send the owner an iMessage")
    send.add_argument("--owner", action="store_true", help="to the owner (required)")
    send.add_argument("text", help="the message ('-': standard input)")
    em = sub.add_parser("email", parents=[common], help="agent0's mail to its owner")
    esub: Any = em.add_subparsers(dest="email_command", metavar="SUBCOMMAND",
                                  parser_class=WordsParser)  # fmt: skip
    helps = (
        ("send", "mail the owner (SMTP)"),
        ("draft", "file a draft to the owner in Drafts, for them to send"),
    )
    for name, help_ in helps:
        p = esub.add_parser(name, parents=[common], help=help_)
        p.add_argument("--owner", action="store_true",
                       help="to the owner (required for send)")  # fmt: skip
        p.add_argument("subject")
        p.add_argument("body", nargs="?", default="", help="the text ('-': standard input)")


COMMANDS = {"imessage": cmd_imessage, "email": cmd_email}
