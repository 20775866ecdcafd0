"""netskyctl: the thin client. Stdlib only (no pydantic, anyio, libtmux, structlog).

Exit codes (``netskyd.protocol``): 0 ok, 1 failed, 2 usage, 3 daemon not running,
4 version skew, 75 temporary failure (e.g. inbox full). Every command takes
``--json``. ``channel send`` writes the envelope itself, so it works while
netskyd is down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from client.rpc import Client, RpcFailed
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
    from collections.abc import Mapping, Sequence
    from typing import Any

RUNTIMES = ("claude", "codex", "shell", "demo", "custom")
START_HINT = (
    "hint: start it with 'netskyd run' (foreground), or see README.md; "
    "check NETSKY_HOME if it runs elsewhere"
)


class Usage(Exception):
    """Raised for a command line that makes no sense (exit 2)."""


def _config(environ: Mapping[str, str]) -> dict[str, Any]:
    import tomllib

    path_s = environ.get("NETSKY_CONFIG")
    home = os.path.expanduser(environ.get("NETSKY_HOME") or "~/.netsky")
    path = os.path.expanduser(path_s) if path_s else os.path.join(home, "config.toml")
    try:
        with open(path, encoding="utf-8") as f:
            return tomllib.loads(f.read())
    except (OSError, ValueError):
        return {}


def home_of(environ: Mapping[str, str]) -> str:
    """NETSKY_HOME as the daemon computes it: env, else config.toml's ``home``, else ~/.netsky."""
    home = environ.get("NETSKY_HOME")
    if not home and environ.get("NETSKY_CONFIG"):
        configured = _config(environ).get("home")
        home = configured if isinstance(configured, str) else None
    return os.path.abspath(os.path.expanduser(home or "~/.netsky"))


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(f"NETSKY_{name.upper()}")
    if raw is None:
        raw = _config(environ).get(name, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def _out(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    elif text:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


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
    header = ("AGENT", "ROLE", "RUNTIME", "SESSION", "READY", "PANE PID", "INBOX", "LAST DELIVERY")
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
                str(a["pane_pid"] or "-"),
                str(a["inbox_pending"]),
                _age(a["last_delivery_ts"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    errors = [f"  {a['agent']}: {a['last_error']}" for a in st["agents"] if a["last_error"]]
    if errors:
        lines += ["last errors:", *errors]
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
        _out(args, st, format_status(st))
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
        _out(args, res, f"pong from netskyd {res['version']} (pid {res['pid']}) in {ms:.1f} ms")
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
        _out(args, res, _agents_line(res))
        return 0 if res.get("ready") is not False else 1
    if c == "down":
        res = client.call(protocol.DOWN)
        killed = ", ".join(res["killed"]) or "none were running"
        _out(args, res, f"down: stopped {killed}; netskyd will not bring them back until 'up'")
        return 0
    if c == "kill":
        res = client.call(protocol.KILL, {"agent": parse_agent(args.agent)})
        what = "killed" if res["killed"] else "was not running"
        back = " (it is wanted, so netskyd will respawn it)" if res["desired"] else ""
        _out(args, res, f"{res['agent']} {what}{back}")
        return 0
    raise Usage(f"unknown command {c!r}")


def cmd_channel_send(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pathlib import Path

    from netskyd.maildir import new_envelope, send
    from netskyd.paths import Paths

    to = parse_agent(args.agent)
    sender = args.sender if not args.sender[:1].isdigit() else parse_agent(args.sender)
    text = sys.stdin.read() if args.text == "-" else args.text
    envelope = new_envelope(sender, to, text, kind=args.kind, in_reply_to=args.reply_to)
    path = send(
        Paths(Path(home_of(environ))),
        envelope,
        inbox_max_pending=_setting(environ, "inbox_max_pending", 1000),
        envelope_max_bytes=_setting(environ, "envelope_max_bytes", 256 * 1024),
    )
    result = {"id": envelope["id"], "to": to, "from": sender, "path": str(path)}
    _out(args, result, f"queued for {to}: {envelope['id']}")
    return 0


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
    ch = sub.add_parser("channel", parents=[common], help="the agent bus")
    chsub = ch.add_subparsers(dest="channel_command", metavar="SUBCOMMAND")
    send = chsub.add_parser("send", parents=[common], help="send an envelope (no daemon needed)")
    send.add_argument("agent", help="target agent")
    send.add_argument("text", help="message text ('-' reads standard input)")
    send.add_argument("--from", dest="sender", required=True, help="sending agent id")
    send.add_argument(
        "--kind",
        default="message",
        choices=("message", "brief", "handoff", "cron", "loop", "escalation", "harvest"),
    )
    send.add_argument("--reply-to", dest="reply_to", default=None, help="envelope id answered")
    return p


def _fail(args: argparse.Namespace | None, code: int, message: str, hint: str = "") -> int:
    if args is not None and getattr(args, "json", False):
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
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
            if args.channel_command != "send":
                raise Usage("channel needs a subcommand: send")
            return cmd_channel_send(args, environ)
        if args.command == "agent":
            args.n = parse_agent(args.n)  # usage errors before any connection attempt
        if args.command == "kill":
            args.agent = parse_agent(args.agent)
        with Client(socket_path(home_of(environ))) as client:
            return cmd_rpc(args, client)
    except (Usage, ValueError) as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except UnknownAgent as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except DaemonNotRunning as e:
        return _fail(args, protocol.EXIT_NOT_RUNNING, str(e), START_HINT)
    except VersionSkew as e:
        return _fail(args, protocol.EXIT_VERSION_SKEW, str(e))
    except (InboxFull, EnvelopeTooLarge) as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e))
    except RpcFailed as e:
        return _fail(args, protocol.exit_code_for(e.code), str(e))
    except NetskyError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except KeyboardInterrupt:
        return _fail(args, protocol.EXIT_FAILED, "interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
