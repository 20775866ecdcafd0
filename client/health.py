"""``netskyctl health`` (stdlib only; ``doctor`` is in client/doctor.py).

``health [--once] [--interval S] [--json]`` asks netskyd for its health report
(RPC ``health``; shape in docs/keepalive.md) and prints a short summary. When the
daemon does not answer, the report is built here from the files
(``netsky_shared.health.client_report``, source ``client``, status ``down``) and
written to ``state/health.json``, so that file never says ``ok`` about a dead
daemon. With ``--once``: one report, exit 0 ok, 1 degraded, 3 down (4 version skew).
Without: a report every ``--interval`` seconds (default 5) until Ctrl-C (exit 0);
``--json`` prints each report as one JSON line.

"""

from __future__ import annotations

import argparse
import json
import sys
import time

from client.common import Usage, config, home_of
from client.rpc import Client
from netsky_shared import health as healthfiles
from netsky_shared import protocol
from netsky_shared.errors import DaemonNotRunning, NetskyError, VersionSkew
from netsky_shared.ids import format_uptime
from netsky_shared.incidents import parse_rfc3339
from netsky_shared.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: Exit code of ``health --once`` per status.
EXIT_OF = {"ok": protocol.EXIT_OK, "degraded": protocol.EXIT_FAILED}
HEALTH_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 5.0
START_HINT = "start it: netskyctl service install (or 'netskyd run' in the foreground)"


# ----- health -------------------------------------------------------------------------------


def _setting(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(f"NETSKY_{name.upper()}")
    value = raw if raw is not None else config(environ).get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        return float(value)
    except ValueError:
        return default


def fetch(environ: Mapping[str, str]) -> tuple[dict[str, Any], int]:
    """One health report and the exit code it means (0 ok, 1 degraded, 3 down).

    From the daemon when it answers; else built from the files and written to
    ``state/health.json`` (down; or degraded when the daemon is there but did not
    answer in time). Raises VersionSkew (the daemon speaks another API).
    """
    home = home_of(environ)
    try:
        with Client(socket_path(home), timeout_s=HEALTH_TIMEOUT_S) as client:
            value = client.call(protocol.HEALTH, timeout_s=HEALTH_TIMEOUT_S)
        return value, EXIT_OF.get(value.get("status"), protocol.EXIT_FAILED)
    except DaemonNotRunning as e:
        running, reason, code = False, str(e), protocol.EXIT_NOT_RUNNING
    except VersionSkew:
        raise
    except NetskyError as e:  # it is there but does not answer: wedged, or an old daemon
        running, reason, code = True, f"netskyd did not give a health report: {e}", 1
    value = healthfiles.client_report(
        home,
        running=running,
        reason=reason,
        tick_interval_s=_setting(environ, "tick_interval_s", 60.0),
        failing_after=int(_setting(environ, "escalation_leg_failing_after", 3)),
    )
    try:
        healthfiles.write_report(home, value)
    except OSError as e:
        sys.stderr.write(f"netskyctl: could not write state/health.json: {e}\n")
    return value, code


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else format_uptime(seconds) + " ago"


def _daemon_line(report: dict[str, Any]) -> str:
    d = report["daemon"]
    down = report["status"] == "down" or d.get("pid") is None
    tick = ago(d.get("last_tick_age_s")) if d.get("last_tick_ts") else "none yet"
    if down and not d.get("last_tick_ts"):
        tick = "unknown"
    every = f" (every {d['tick_interval_s']:g}s)" if d.get("tick_interval_s") else ""
    beat = ago(d.get("heartbeat_age_s")) if d.get("heartbeat_age_s") is not None else "none"
    if down:
        return f"daemon: not running; last tick {tick}{every}, last heartbeat {beat}"
    watchdog = f", watchdog {d['watchdog_s']:g}s" if d.get("watchdog_s") else ""
    notify = "on" if d.get("sd_notify") else "off"
    return (
        f"daemon: netskyd {d['version']} pid {d['pid']} ({d['install']} install), "
        f"up {format_uptime(d['uptime_s'])}, last tick {tick}{every}, heartbeat {beat}, "
        f"sd_notify {notify}{watchdog}"
    )


def _agents_line(report: dict[str, Any]) -> str:
    agents = report["agents"]
    if not agents:
        return "agents: none wanted"
    if all(a["alive"] is None for a in agents):
        names = ", ".join(a["agent"] for a in agents)
        return f"agents: {names} wanted (state unknown while netskyd is down)"
    parts = []
    for a in agents:
        state = "ready" if a["ready"] else ("alive" if a["alive"] else "not running")
        parts.append(a["agent"] + f" {state}" + (f" ({a['activity']})" if a["activity"] else ""))
    return "agents: " + ", ".join(parts)


def render(report: dict[str, Any], now_s: float | None = None) -> str:
    """The human summary of a health report: status and reasons, then one line each for
    the daemon, agents, incidents, markers and legs (when any), lkg and the shim."""
    now_s = time.time() if now_s is None else now_s
    lines = [f"health: {report['status'].upper()}  ({report['source']} report, {report['ts']})"]
    lines += [f"  - {r}" for r in report["reasons"]]
    lines += [_daemon_line(report), _agents_line(report)]
    inc = report["incidents"]
    keys = f" ({', '.join(inc['keys'])})" if inc["keys"] else ""
    lines.append(f"incidents: {inc['open'] or 'none'} open{keys}")
    labels = {"gave_up": "gave up", "crash_loop": "crash loop", "hang": "hung", "limit": "parked"}
    marks = [f"{labels[k]}: {', '.join(v)}" for k, v in report["markers"].items() if v]
    if marks:
        lines.append("markers: " + "; ".join(marks))
    legs = [f"{n} failed {leg['failing']}x" for n, leg in report["legs"].items() if leg["failing"]]
    if legs:
        lines.append("legs: " + ", ".join(legs) + " in a row")
    lkg = report["lkg"]
    if lkg["present"]:
        lines.append(f"lkg: {lkg['id']} (netsky {lkg['version']}), made {ago(lkg['age_s'])}")
    else:
        lines.append("lkg: none ('netskyctl self-repair promote' records one)")
    last = report["shim"]["last"]
    if last is None:
        lines.append("shim: no run recorded")
    else:
        then = parse_rfc3339(str(last.get("ts", "")))
        age = ago(None if then is None else max(0.0, now_s - then))
        detail = f" ({last['detail']})" if last.get("detail") else ""
        lines.append(f"shim: last run {age}: {last.get('verdict', '?')}{detail}")
    return "\n".join(lines)


def _emit(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
    else:
        sys.stdout.write(render(report) + "\n")
    sys.stdout.flush()


def cmd_health(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``netskyctl health [--once] [--interval S] [--json]`` (module docstring)."""
    if not args.interval > 0:
        raise Usage("--interval must be a positive number of seconds")
    if args.once:
        report, code = fetch(environ)
        _emit(args, report)
        if code == protocol.EXIT_NOT_RUNNING and not args.json:
            sys.stderr.write(f"hint: {START_HINT}\n")
        return code
    try:
        first = True
        while True:
            report, _ = fetch(environ)
            if not first and not args.json:
                sys.stdout.write("\n")
            _emit(args, report)
            first = False
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return protocol.EXIT_OK


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add health to netskyctl's subcommands (``common`` holds ``--json``)."""
    h = sub.add_parser(
        "health", parents=[common], help="health report: ok, degraded or down (no daemon needed)"
    )
    h.add_argument("--once", action="store_true", help="one report; exit 0 ok, 1 degraded, 3 down")
    h.add_argument(
        "--interval", type=float, default=5.0, help="seconds between reports (default 5)"
    )


COMMANDS = {"health": cmd_health}
