"""``netskyctl escalate SUBJECT BODY [--key K] [--severity S] [--direct]``.

Through the daemon (method ``escalate``), or with ``--direct`` and no daemon at all: a child
``python -m netskyd.escalation.direct`` of this install, with every leg in a process of its
own (that child loads the settings with pydantic, so it costs more start-up than other
commands; netskyctl itself imports nothing from netskyd).

Output: the action (``opened``, ``repaged`` or ``joined``), the incident, one line per
leg (``delivered``, ``failed: reason``, ``unavailable: reason``) and the ack command.
``--json``: the EscalateResult (docs/protocol.md). Exit 0 when a leg delivered or the
escalation joined an open incident inside its quiet period; 1 when no leg delivered
(the incident stays open and failed legs are retried by the daemon's spool).
"""

from __future__ import annotations

import re

from client.common import Usage, out, setting, table
from netsky_shared import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

    from client.rpc import Client

SEVERITIES = ("info", "warning", "critical")


def default_key(subject: str) -> str:
    """``manual:<subject, lower case, runs of non-alphanumerics as one dash>`` (80 chars)."""
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:80]
    return f"manual:{slug or 'page'}"


def format_result(res: dict[str, Any]) -> str:
    """The human text of an EscalateResult."""
    inc = res["incident"]
    head = f"{inc['id']} (key {inc['key']}, severity {inc['severity']})"
    if res["action"] == "joined":
        return (
            f"joined open incident {head}: escalated {inc['count']} times; no new page "
            f"inside the quiet period (last page {inc.get('paged_ts') or '-'})\n"
            f"acknowledge: {res['ack_command']}"
        )
    rows = [(r["leg"], _describe(r), f"{r['duration_ms']:.0f} ms") for r in res["results"]]
    lines = [f"{res['action']} incident {head} via {res['via']}"]
    lines.append(table(("LEG", "RESULT", "TOOK"), rows) if rows else "no leg takes this severity")
    if not res["delivered"]:
        lines.append(
            "no leg delivered: the incident stays open and netskyd's spool retries the "
            "failed legs with backoff until it is acknowledged"
        )
    lines.append(f"acknowledge: {res['ack_command']}")
    return "\n".join(lines)


def _describe(r: dict[str, Any]) -> str:
    if r["status"] == "delivered":
        return "delivered" + (f" ({r['reason']})" if r.get("reason") else "")
    return f"{r['status']}: {r['reason']}"


def cmd_escalate(args: argparse.Namespace, environ: Mapping[str, str], client_of: Any) -> int:
    """Run ``netskyctl escalate``; ``client_of()`` opens the daemon Client (raises
    DaemonNotRunning, which netskyctl's main turns into exit 3 with a hint)."""
    if not args.subject.strip():
        raise Usage("escalate needs a non-empty SUBJECT")
    key = args.key or default_key(args.subject)
    if args.direct:
        res = direct(args, key, environ)
    else:
        timeout = setting(environ, "escalation_leg_timeout_s", 30) + 15
        with client_of() as client:
            res = client_call(client, args, key, timeout)
    out(args, res, format_result(res))
    return 0 if res["action"] == "joined" or res["delivered"] else 1


def direct(args: argparse.Namespace, key: str, environ: Mapping[str, str]) -> Any:
    """Page with no daemon: ``python -m netskyd.escalation.direct`` in a child process
    (every leg in a process of its own there), with a deadline of three leg timeouts
    plus a margin. Returns its EscalateResult; raises NetskyError with its error line."""
    import json
    import subprocess

    from netsky_shared.bundled import this_python
    from netsky_shared.errors import NetskyError

    timeout_s = 3 * setting(environ, "escalation_leg_timeout_s", 30) + 30
    argv = [*this_python("netskyd.escalation.direct"), args.subject, args.body]
    argv += ["--key", key, "--severity", args.severity]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env=dict(environ), check=False
        )
    except subprocess.TimeoutExpired as e:
        raise NetskyError(f"escalate --direct did not finish within {timeout_s:g}s") from e
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise NetskyError(why[0].removeprefix("escalate --direct: "))
    return json.loads(done.stdout)


def client_call(client: Client, args: argparse.Namespace, key: str, timeout: float) -> Any:
    params = {
        "subject": args.subject,
        "body": args.body,
        "key": key,
        "severity": args.severity,
    }
    return client.call(protocol.ESCALATE, params, timeout_s=timeout)


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``escalate`` to netskyctl's subcommands."""
    es = sub.add_parser(
        "escalate",
        parents=[common],
        help="page the owner on every configured leg (--direct: without netskyd)",
    )
    es.add_argument("subject", help="one line")
    es.add_argument("body", nargs="?", default="", help="the details ('' for none)")
    es.add_argument(
        "--key",
        help="what the page is about; the same key joins an open incident "
        "(default: manual:<subject>)",
    )
    es.add_argument("--severity", choices=SEVERITIES, default="warning")
    es.add_argument(
        "--direct",
        action="store_true",
        help="no daemon: every leg in its own process (the shim uses this)",
    )
