"""``netskyctl restart`` and ``netskyctl restarts``, and the restart lines of ``status``.

Stdlib only, like the rest of the client. ``restart`` asks netskyd for a planned
restart of the constellation (agent0 and its clones; agentinfinity survives):
the handoff text (``--handoff FILE``, ``-`` for standard input) reaches the fresh
agent0 as a ``handoff`` envelope. With ``--wait`` it follows the restart state
machine until the restart is verified (exit 0) or fails (exit 1), printing each
state it passes. ``restarts`` lists restart attempts from meta.db, newest first.

``restart --request --handoff FILE|-`` is the agent's own way (the ``/restart`` skill,
the demo agent's ``restart``): it writes the handoff to ``state/restart-request`` (tmp +
rename; no daemon needed), which netskyd claims by rename at once (the tick is the
backstop) and turns into the same planned restart, "requested by" the agent.
"""

from __future__ import annotations

import sys
import time

from client.common import Usage, out
from netsky_shared import protocol
from netsky_shared.ids import parse_agent

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

    from client.rpc import Client

POLL_S = 0.25
PARKED = ("failed", "gave_up", "crash_loop")


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%H:%M:%SZ", time.gmtime(epoch))


def _in(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    left = epoch - now
    return f"{_clock(epoch)} (in {left:.0f}s)" if left > 0 else f"{_clock(epoch)} (due)"


def status_lines(st: dict[str, Any], now: float | None = None) -> list[str]:
    """The restart part of ``netskyctl status``: machines not idle, then last restarts."""
    now = time.time() if now is None else now
    lines = []
    busy = [m for m in st.get("restarts", []) if m["state"] != "idle"]
    if busy:
        lines.append("restarts in flight or waiting:")
        for m in busy:
            cause = f"{m['cause']}: {m['reason']}" if m.get("reason") else (m["cause"] or "?")
            retry = f", next retry {_in(m['retry_at'], now)}" if m.get("retry_at") else ""
            failure = f", last failure {m['failure']}" if m.get("failure") else ""
            lines.append(
                f"  {m['agent']}: {m['state']} since {_clock(m['since'])} ({cause}); "
                f"attempts {m['attempts']}{failure}{retry}; "
                f"{m['restarts_in_window']} restarts in the crash-loop window"
            )
    last = st.get("last_restarts") or {}
    if last:
        parts = []
        for agent, r in last.items():
            when = (r.get("finished_ts") or r.get("started_ts") or "")[11:19] + "Z"
            why = r.get("reason") or r.get("cause") or "?"
            failure = f" {r['failure']}" if r.get("failure") else ""
            parts.append(f"{agent} {r['outcome']}{failure} at {when} ({r.get('cause')}: {why})")
        lines.append("last restart: " + "; ".join(parts))
    return lines


def _read_handoff(path: str | None) -> str | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise Usage(f"cannot read the handoff file {path}: {e}") from e


def cmd_request(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``restart --request``: write ``state/restart-request`` (module docstring)."""
    from client.common import home_of
    from netsky_shared.maildir import atomic_write_bytes
    from netsky_shared.paths import Paths

    handoff = _read_handoff(args.handoff)
    if not handoff or not handoff.strip():
        raise Usage("restart --request needs the handoff: --handoff FILE ('-': stdin)")
    if args.n is not None or args.wait:
        raise Usage("restart --request takes only --handoff (the watchdog does the rest)")
    from pathlib import Path

    path = Paths(Path(home_of(environ))).marker("restart-request")
    try:
        atomic_write_bytes(path, handoff.encode("utf-8"))
    except OSError as e:
        sys.stderr.write(f"netskyctl: cannot write {path}: {e.strerror or e}\n")
        return protocol.EXIT_FAILED
    who = environ.get("AGENT_N", "")
    out(args, {"request": str(path), "bytes": len(handoff.encode()), "agent_n": who},
        f"restart requested ({len(handoff.encode())} bytes of handoff in {path}); "
        "netskyd claims it within a second")  # fmt: skip
    return protocol.EXIT_OK


def cmd_restart(args: argparse.Namespace, client: Client) -> int:
    """Ask for a planned restart; with ``--wait`` follow it to the end."""
    params: dict[str, Any] = {}
    handoff = _read_handoff(args.handoff)
    if handoff is not None:
        params["handoff"] = handoff
    if args.n is not None:
        if args.n < 0:
            raise Usage("the number of clones must be 0 or more")
        params["clones"] = args.n
    res = client.call(protocol.RESTART, params)
    rid = res["restart_id"]
    if not args.wait:
        out(args, res, f"restart {rid[:8]} of agent0 started ({res['state']})")
        return 0
    deadline = time.monotonic() + args.timeout
    seen = res["state"]
    if not args.json:
        sys.stderr.write(f"restart {rid[:8]}: {seen}\n")
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        st = client.call(protocol.STATUS)
        m = next((m for m in st.get("restarts", []) if m["agent"] == "agent0"), None)
        if m is None:
            continue
        state = m["state"] if m.get("restart_id") == rid else "idle"
        if state != seen and not args.json:
            sys.stderr.write(f"restart {rid[:8]}: {state}\n")
        seen = state
        if state == "idle":
            result = {**res, "state": "idle", "outcome": "ok"}
            out(args, result, f"restart {rid[:8]} verified: agent0 is up with its handoff")
            return 0
        if state in PARKED:
            result = {**res, "state": state, "outcome": "failed", "failure": m.get("failure")}
            out(
                args,
                result,
                f"restart {rid[:8]} {state}: {m.get('reason')} "
                f"(next retry {_in(m.get('retry_at'), time.time())})",
            )
            return protocol.EXIT_FAILED
    out(args, {**res, "state": seen, "outcome": "timeout"}, f"still {seen} after {args.timeout:g}s")
    return protocol.EXIT_FAILED


def cmd_restarts(args: argparse.Namespace, client: Client) -> int:
    """List restart attempts from meta.db (newest first)."""
    params: dict[str, Any] = {"limit": args.limit}
    if args.agent:
        params["agent"] = parse_agent(args.agent)
    rows = client.call(protocol.RESTARTS, params)["restarts"]
    header = ("STARTED", "AGENT", "RESTART", "TRY", "CAUSE", "OUTCOME", "FAILURE", "REASON")
    table = [header]
    for r in rows:
        table.append(
            (
                r["started_ts"][:19] + "Z",
                r["agent"],
                r["restart_id"][:8],
                str(r["attempt"]),
                r["cause"] or "-",
                r["outcome"],
                r["failure"] or "-",
                (r["reason"] or "-")[:60],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )
    out(args, {"restarts": rows}, text if rows else "no restarts recorded")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``restart`` and ``restarts`` to netskyctl's subcommands."""
    rs = sub.add_parser(
        "restart",
        parents=[common],
        help="planned restart of agent0 and N clones, with a handoff (agentinfinity survives)",
    )
    rs.add_argument("n", nargs="?", type=int, help="clones to bring up (default: as now)")
    rs.add_argument(
        "--handoff", metavar="FILE", help="handoff text for the new agent0 ('-': stdin)"
    )
    rs.add_argument("--wait", action="store_true", help="follow the restart until it is verified")
    rs.add_argument(
        "--request",
        action="store_true",
        help="an agent's own request: write state/restart-request (no daemon needed)",
    )
    rs.add_argument("--timeout", type=float, default=300.0, help="--wait deadline in seconds")
    rl = sub.add_parser("restarts", parents=[common], help="restart history from meta.db")
    rl.add_argument("agent", nargs="?", help="only this agent")
    rl.add_argument("--limit", type=int, default=20, help="show at most N (default 20)")
