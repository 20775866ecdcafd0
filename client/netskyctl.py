"""netskyctl: the thin client. Stdlib only (no pydantic, anyio, libtmux, structlog).

Exit codes (``netskyd.protocol``): 0 ok, 1 failed, 2 usage, 3 daemon not running,
4 version skew, 75 temporary failure (e.g. inbox full). Every command takes
``--json``. The bus commands live in ``client.channel``; all but ``channel
replay`` work on the files under ``channels/agent/`` themselves, so they work
while netskyd is down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from client import doctor, drill, health, selfrepair, service
from client.channel import CHANNEL_COMMANDS, AmbiguousMatch
from client.common import Usage, home_of, out
from client.escalate import add_parser as add_escalate_parser
from client.escalate import cmd_escalate
from client.incidents import INCIDENT_COMMANDS, summary_line
from client.incidents import add_parsers as add_incident_parsers
from client.restarts import add_parsers as add_restart_parsers
from client.restarts import cmd_restart, cmd_restarts, status_lines
from client.rpc import Client, RpcFailed
from client.why import add_parser as add_why_parser
from client.why import cmd_why
from netskyd import __version__, protocol
from netskyd.errors import (
    DaemonNotRunning,
    EnvelopeTooLarge,
    InboxFull,
    NetskyError,
    UnknownAgent,
    VersionSkew,
)
from netskyd.ids import format_uptime, parse_agent
from netskyd.paths import socket_path

# typing, pathlib and dataclasses are kept off the import path: start-up time is
# most of what a netskyctl call costs (bench/status_latency.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

RUNTIMES = ("claude", "codex", "shell", "demo", "custom")
START_HINT = (
    "hint: start it with 'netskyd run' (foreground), or see README.md; "
    "check NETSKY_HOME if it runs elsewhere"
)
INBOX_FULL_HINT = (
    "hint: netskyd drains an inbox while its agent is ready; "
    "'netskyctl channel peek AGENT' shows what waits"
)
TOO_LARGE_HINT = "hint: send a path to the text instead, or raise envelope_max_bytes"
#: health, doctor, self-repair, service, drill: each module's COMMANDS take (args, environ).
KEEPALIVE_MODULES = (health, doctor, selfrepair, service, drill)
KEEPALIVE_COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    name: fn for m in KEEPALIVE_MODULES for name, fn in m.COMMANDS.items()
}


def _age(ts: str | None) -> str:
    if not ts:
        return "-"
    return ts[11:19] + "Z"


def format_status(st: dict[str, Any]) -> str:
    """Render a ``status`` result as the human table."""
    d = st["daemon"]
    tick = "never" if d["last_tick_age_s"] is None else f"{d['last_tick_age_s']:.0f}s ago"
    desired = st["desired"]
    lines = [
        f"netskyd {d['version']}  pid {d['pid']}  up {format_uptime(d['uptime_s'])}  "
        f"last tick {tick} (every {d['tick_interval_s']:g}s)  "
        f"desired: {desired['state']} ({len(desired['agents'])} agents)",
    ]
    header = (
        "AGENT",
        "ROLE",
        "RUNTIME",
        "SESSION",
        "READY",
        "ACTIVITY",
        "PANE PID",
        "INBOX",
        "LAST DELIVERY",
    )
    rows = [header]
    for a in st["agents"]:
        session = "spawning" if a["spawning"] else ("alive" if a["alive"] else "gone")
        if not a["wanted"] and a["alive"]:
            session = "alive (unwanted)"
        rows.append(
            (
                a["agent"],
                a["role"],
                a["runtime"],
                session,
                "yes" if a["ready"] else "no",
                a.get("activity") or "-",
                str(a["pane_pid"] or "-"),
                str(a["inbox_pending"]),
                _age(a["last_delivery_ts"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    odd = [a for a in st["agents"] if a.get("activity") in ("hung", "waiting", "limited")]
    if odd:
        lines.append("attention ('netskyctl why AGENT' for the evidence):")
        lines += [f"  {a['agent']}: {a['activity']} — {a['activity_reason']}" for a in odd]
    errors = [f"  {a['agent']}: {a['last_error']}" for a in st["agents"] if a["last_error"]]
    if errors:
        lines += ["last errors:", *errors]
    bus = st.get("bus")
    if bus:
        lines.append(
            f"bus since start: {bus['delivered']} delivered ({bus.get('duplicates', 0)} marked "
            f"repeats), {bus['poisoned']} poisoned, {bus.get('forwarded', 0)} forwarded from "
            f"outboxes, {bus.get('in_flight', 0)} in flight"
        )
    lines += status_lines(st)
    if st.get("unknown_sessions"):
        lines.append(f"unrecognised tmux sessions: {', '.join(st['unknown_sessions'])}")
    return "\n".join(lines)


def _agents_line(result: dict[str, Any]) -> str:
    parts = []
    for a in result.get("agents", []):
        state = (
            "ready"
            if a["ready"]
            else ("spawning" if a["spawning"] else ("alive" if a["alive"] else "not running"))
        )
        parts.append(
            f"{a['agent']} ({a['runtime']}): {state}"
            + (f" - {a['last_error']}" if a.get("last_error") else "")
        )
    return "\n".join(parts)


def cmd_rpc(args: argparse.Namespace, client: Client) -> int:
    c = args.command
    if c == "status":
        st = client.call(protocol.STATUS)
        text = format_status(st)
        incidents_line = summary_line(st["daemon"]["home"])
        out(args, st, text + (f"\n{incidents_line}" if incidents_line else ""))
        return 0
    if c == "ping":
        t0 = time.perf_counter()
        res = client.call(protocol.PING)
        ms = (time.perf_counter() - t0) * 1000
        res.update(
            {
                "pid": client.hello.get("pid"),
                "version": client.hello.get("version"),
                "rtt_ms": round(ms, 2),
            }
        )
        out(args, res, f"pong from netskyd {res['version']} (pid {res['pid']}) in {ms:.1f} ms")
        return 0
    if c in ("up", "agent"):
        params: dict[str, Any] = {"wait": not args.no_wait}
        if args.timeout is not None:
            params["timeout_s"] = args.timeout
        timeout = (args.timeout or 120.0) + 10
        if c == "up":
            if args.n is not None:
                params["clones"] = args.n
            if not args.json and not args.no_wait:
                sys.stderr.write("bringing the constellation up, waiting for readiness...\n")
            res = client.call(protocol.UP, params, timeout_s=timeout)
        else:
            params["agent"] = parse_agent(args.n)
            if args.runtime:
                params["runtime"] = args.runtime
            res = client.call(protocol.AGENT, params, timeout_s=timeout)
        out(args, res, _agents_line(res))
        return 0 if res.get("ready") is not False else 1
    if c == "down":
        res = client.call(protocol.DOWN)
        killed = ", ".join(res["killed"]) or "none were running"
        out(args, res, f"down: stopped {killed}; netskyd will not bring them back until 'up'")
        return 0
    if c == "kill":
        res = client.call(protocol.KILL, {"agent": parse_agent(args.agent)})
        what = "killed" if res["killed"] else "was not running"
        back = " (it is wanted, so netskyd will respawn it)" if res["desired"] else ""
        out(args, res, f"{res['agent']} {what}{back}")
        return 0
    if c == "restart":
        return cmd_restart(args, client)
    if c == "restarts":
        return cmd_restarts(args, client)
    if c == "why":
        return cmd_why(args, client)
    raise Usage(f"unknown command {c!r}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    p = argparse.ArgumentParser(
        prog="netskyctl",
        parents=[common],
        description="Talk to netskyd, the netsky supervisor. Exit codes: 0 ok, 1 failed, "
        "2 usage, 3 daemon not running, 4 version skew, 75 temporary failure.",
    )
    p.add_argument("--version", action="version", version=f"netskyctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("status", parents=[common], help="daemon and per-agent state")
    sub.add_parser("ping", parents=[common], help="check that netskyd answers")
    up = sub.add_parser("up", parents=[common], help="bring up agent0, N clones and agentinfinity")
    up.add_argument("n", nargs="?", type=int, help="clones (default: the 'clones' setting)")
    up.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
    up.add_argument("--timeout", type=float, help="readiness deadline in seconds")
    sub.add_parser("down", parents=[common], help="stop every agent and keep them down")
    ag = sub.add_parser("agent", parents=[common], help="bring up one agent (e.g. 'agent 3')")
    ag.add_argument("n", help="agent number or id: 3, agent3, infinity")
    ag.add_argument("--runtime", choices=RUNTIMES, help="runtime for this agent")
    ag.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
    ag.add_argument("--timeout", type=float, help="readiness deadline in seconds")
    kill = sub.add_parser("kill", parents=[common], help="kill an agent's session")
    kill.add_argument("agent")
    add_restart_parsers(sub, common)
    ch = sub.add_parser("channel", parents=[common], help="the agent bus")
    chsub = ch.add_subparsers(dest="channel_command", metavar="SUBCOMMAND")
    send = chsub.add_parser("send", parents=[common], help="send an envelope (no daemon needed)")
    send.add_argument("agent", help="target agent")
    send.add_argument("text", nargs="?", help="message text ('-' reads standard input)")
    send.add_argument("--file", help="read the message text from this UTF-8 file instead")
    send.add_argument("--from", dest="sender", required=True, help="sending agent id")
    send.add_argument(
        "--kind",
        default="message",
        choices=("message", "brief", "handoff", "cron", "loop", "escalation", "harvest"),
    )
    send.add_argument("--reply-to", dest="reply_to", default=None, help="envelope id answered")
    ls = chsub.add_parser("ls", parents=[common], help="envelope counts per agent (no daemon)")
    ls.add_argument("agent", nargs="?", help="only this agent")
    pk = chsub.add_parser("peek", parents=[common], help="what waits for an agent (no daemon)")
    pk.add_argument("agent")
    pk.add_argument("--limit", type=int, default=20, help="show at most N (0: all; default 20)")
    po = chsub.add_parser("poison", parents=[common], help="poisoned envelopes and why (no daemon)")
    po.add_argument("agent", nargs="?", help="only this agent")
    rt = chsub.add_parser(
        "retry", parents=[common], help="move a poisoned envelope back to its inbox (no daemon)"
    )
    rt.add_argument("id", help="envelope id or file name, or a unique prefix of either")
    rt.add_argument("--agent", help="look only in this agent's poison/")
    rp = chsub.add_parser(
        "replay", parents=[common], help="deliver an agent's recent envelopes again (daemon)"
    )
    rp.add_argument("agent")
    rp.add_argument(
        "--since", required=True, help="RFC 3339 time (2026-11-21T10:00:00Z) or age (30s, 2h, 1d)"
    )
    add_incident_parsers(sub, common)
    add_why_parser(sub, common)
    add_escalate_parser(sub, common)
    for module in KEEPALIVE_MODULES:
        module.add_parsers(sub, common)
    return p


def _fail(
    args: argparse.Namespace | None,
    code: int,
    message: str,
    hint: str = "",
    extra: dict[str, Any] | None = None,
) -> int:
    if args is not None and getattr(args, "json", False):
        body = {"error": message, "exit_code": code, **(extra or {})}
        sys.stdout.write(json.dumps(body) + "\n")
    sys.stderr.write(f"netskyctl: {message}\n" + (f"{hint}\n" if hint else ""))
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one netskyctl command; return its exit code."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    args.json = getattr(args, "json", False)
    if args.command is None:
        parser.print_help()
        return protocol.EXIT_USAGE
    try:
        if args.command == "channel":
            command = CHANNEL_COMMANDS.get(args.channel_command)
            if command is None:
                raise Usage(f"channel needs a subcommand: {', '.join(CHANNEL_COMMANDS)}")
            return command(args, environ)
        if args.command in INCIDENT_COMMANDS:
            return INCIDENT_COMMANDS[args.command](args, environ)
        if args.command in KEEPALIVE_COMMANDS:
            return KEEPALIVE_COMMANDS[args.command](args, environ)
        if args.command == "escalate":
            return cmd_escalate(args, environ, lambda: Client(socket_path(home_of(environ))))
        if args.command == "agent":
            args.n = parse_agent(args.n)  # usage errors before any connection attempt
        if args.command in ("kill", "why"):
            args.agent = parse_agent(args.agent)
        with Client(socket_path(home_of(environ))) as client:
            return cmd_rpc(args, client)
    except (Usage, ValueError) as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except UnknownAgent as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except DaemonNotRunning as e:
        pages = summary_line(home_of(environ)) if args.command == "status" else None
        hint = START_HINT + (f"\n{pages}" if pages else "")
        if args.command == "escalate":
            hint = "hint: 'netskyctl escalate --direct ...' pages the owner without netskyd"
        return _fail(args, protocol.EXIT_NOT_RUNNING, str(e), hint)
    except VersionSkew as e:
        return _fail(args, protocol.EXIT_VERSION_SKEW, str(e))
    except InboxFull as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e), INBOX_FULL_HINT)
    except EnvelopeTooLarge as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e), TOO_LARGE_HINT)
    except RpcFailed as e:
        return _fail(args, protocol.exit_code_for(e.code), str(e))
    except AmbiguousMatch as e:
        return _fail(args, protocol.EXIT_FAILED, str(e), extra={"candidates": e.candidates})
    except NetskyError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except OSError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except KeyboardInterrupt:
        return _fail(args, protocol.EXIT_FAILED, "interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
