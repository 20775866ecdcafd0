"""``netskyctl health`` and ``netskyctl doctor`` (stdlib only).

``health [--once] [--interval S] [--json]`` asks netskyd for its health report
(RPC ``health``; shape in docs/keepalive.md) and prints a short summary. When the
daemon does not answer, the report is built here from the files
(``netskyd.healthfiles.client_report``, source ``client``, status ``down``) and
written to ``state/health.json``, so that file never says ``ok`` about a dead
daemon. With ``--once``: one report, exit 0 ok, 1 degraded, 3 down (4 version skew).
Without: a report every ``--interval`` seconds (default 5) until Ctrl-C (exit 0);
``--json`` prints each report as one JSON line.

``doctor [--json]`` checks the install: tmux, the socket, version and schema skew,
the service units, the shim and its last run, the last-known-good install and the
owner's page legs. Each check is ``{"name", "status": "ok"|"warn"|"fail", "detail",
"hint"}``; exit 0 when none fails, 1 otherwise. ``--json``: ``{"ok", "checks"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time

from client.common import Usage, config, home_of
from client.rpc import Client
from netskyd import __version__, healthfiles, protocol
from netskyd.errors import DaemonNotRunning, NetskyError, VersionSkew
from netskyd.ids import format_uptime
from netskyd.incidents import parse_rfc3339
from netskyd.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: Exit code of ``health --once`` per status.
EXIT_OF = {"ok": protocol.EXIT_OK, "degraded": protocol.EXIT_FAILED}
HEALTH_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 5.0
TMUX_TIMEOUT_S = 5.0
TMUX_MIN = (3, 0)
#: A shim that has not run for this long while its units are installed is a warning.
SHIM_STALE_S = 600.0
START_HINT = "start it: netskyctl service install (or 'netskyd run' in the foreground)"
INSTALL_HINT = "netskyctl service install"
LINUX_UNITS = ("netskyd.service", "netsky-shim.service", "netsky-shim.timer")
MACOS_UNITS = ("com.netsky.netskyd.plist", "com.netsky.shim.plist")
REMOTE_LEGS = ("email", "webhook", "imessage")


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


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else format_uptime(seconds) + " ago"


def _daemon_line(report: dict[str, Any]) -> str:
    d = report["daemon"]
    down = report["status"] == "down" or d.get("pid") is None
    tick = _ago(d.get("last_tick_age_s")) if d.get("last_tick_ts") else "none yet"
    if down and not d.get("last_tick_ts"):
        tick = "unknown"
    every = f" (every {d['tick_interval_s']:g}s)" if d.get("tick_interval_s") else ""
    beat = _ago(d.get("heartbeat_age_s")) if d.get("heartbeat_age_s") is not None else "none"
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
        lines.append(f"lkg: {lkg['id']} (netsky {lkg['version']}), made {_ago(lkg['age_s'])}")
    else:
        lines.append("lkg: none ('netskyctl self-repair promote' records one)")
    last = report["shim"]["last"]
    if last is None:
        lines.append("shim: no run recorded")
    else:
        then = parse_rfc3339(str(last.get("ts", "")))
        age = _ago(None if then is None else max(0.0, now_s - then))
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


# ----- doctor -------------------------------------------------------------------------------


def check(name: str, status: str, detail: str, hint: str = "") -> dict[str, Any]:
    """One doctor finding: ``{"name", "status": "ok"|"warn"|"fail", "detail", "hint"}``."""
    return {"name": name, "status": status, "detail": detail, "hint": hint}


def tmux_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of ``tmux -V`` output (``tmux 3.3a``, ``tmux next-3.5``), or None."""
    import re

    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_tmux(environ: Mapping[str, str], timeout_s: float = TMUX_TIMEOUT_S) -> dict[str, Any]:
    """tmux on PATH, answering ``tmux -V`` within ``timeout_s``, version 3.0 or later."""
    import shutil
    import subprocess

    hint = "install tmux 3.0 or later (apt install tmux, brew install tmux)"
    path = shutil.which("tmux", path=environ.get("PATH", os.defpath))
    if path is None:
        return check("tmux", "fail", "tmux is not on PATH", hint)
    try:
        res = subprocess.run(
            [path, "-V"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return check("tmux", "fail", f"{path} -V did not answer within {timeout_s:g}s", hint)
    except OSError as e:
        return check("tmux", "fail", f"{path} -V failed: {e}", hint)
    text = (res.stdout or res.stderr).strip()
    version = tmux_version(text)
    if res.returncode != 0:
        return check("tmux", "fail", f"{path} -V exited {res.returncode}: {text}", hint)
    if version is None:
        return check("tmux", "warn", f"{text} at {path}: version not recognised", hint)
    if version < TMUX_MIN:
        return check("tmux", "fail", f"{text} at {path} is older than 3.0", hint)
    return check("tmux", "ok", f"{text} at {path}")


def probe(home: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Connect and say hello: ``{"state": "up"|"down"|"skew"|"wedged", "hello", "message"}``."""
    try:
        with Client(socket_path(home), timeout_s=timeout_s) as client:
            return {"state": "up", "hello": client.hello, "message": ""}
    except DaemonNotRunning as e:
        return {"state": "down", "hello": None, "message": str(e)}
    except VersionSkew as e:
        return {"state": "skew", "hello": None, "message": str(e)}
    except NetskyError as e:
        return {"state": "wedged", "hello": None, "message": str(e)}


def check_socket(home: str, found: dict[str, Any]) -> dict[str, Any]:
    """The control socket: a socket, mode 0600, ours, answering hello (``found``: probe)."""
    path = socket_path(home)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return check("socket", "warn", f"netskyd is not running (no {path})", START_HINT)
    except OSError as e:
        return check("socket", "fail", f"{path}: {e}")
    restart = "restart netskyd (it recreates the socket 0600)"
    if not stat.S_ISSOCK(st.st_mode):
        return check("socket", "fail", f"{path} is not a socket", f"remove it; {restart}")
    if st.st_uid != os.getuid():
        return check("socket", "fail", f"{path} belongs to uid {st.st_uid}, not us", restart)
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o600:
        return check("socket", "fail", f"{path} has mode {mode:04o}, not 0600", restart)
    if found["state"] == "down":
        return check("socket", "warn", f"netskyd is not running ({found['message']})", START_HINT)
    if found["state"] == "wedged":
        hint = "the shim restarts a wedged daemon; or restart it: netskyctl service install"
        return check("socket", "fail", f"no hello: {found['message']}", hint)
    return check("socket", "ok", f"{path} (0600, ours) answers")


def check_version(found: dict[str, Any]) -> dict[str, Any]:
    """This netskyctl's version and API against the running daemon's hello."""
    mine = f"netskyctl {__version__} (API {protocol.API_VERSION})"
    hint = "restart netskyd from this install, or use the netskyctl of the daemon's install"
    if found["state"] == "skew":
        return check("version", "fail", f"{mine}: {found['message']}", hint)
    hello = found.get("hello")
    if not hello:
        return check("version", "warn", f"{mine}; netskyd is not answering, nothing to compare")
    theirs = f"netskyd {hello.get('version')} (API {hello.get('api_version')})"
    if hello.get("version") != __version__ or hello.get("api_version") != protocol.API_VERSION:
        return check("version", "fail", f"{mine} but {theirs}", hint)
    return check("version", "ok", f"{theirs}, same as this netskyctl")


def check_schema(home: str, code_version: int | None = None) -> dict[str, Any]:
    """meta.db's ``PRAGMA user_version`` against this install's schema version."""
    import sqlite3

    if code_version is None:
        from netskyd.store.db import SCHEMA_VERSION  # aiosqlite too: only doctor pays

        code_version = SCHEMA_VERSION
    path = os.path.join(home, "meta.db")
    if not os.path.exists(path):
        return check("schema", "ok", f"no meta.db yet (schema {code_version} at first start)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error as e:
        return check("schema", "fail", f"meta.db cannot be read: {e}", "see docs/keepalive.md")
    if version > code_version:
        return check(
            "schema",
            "fail",
            f"meta.db is at schema {version}, this install knows up to {code_version}",
            "a newer netsky wrote it: run that install (or restore a backup of meta.db)",
        )
    if version < code_version:
        return check(
            "schema",
            "warn",
            f"meta.db is at schema {version} of {code_version}: it migrates on next start",
        )
    return check("schema", "ok", f"meta.db at schema {version}, as this install")


def unit_dir(environ: Mapping[str, str], platform: str) -> str:
    """Where the service units live: ``NETSKY_UNIT_DIR``, else the user's systemd or
    LaunchAgents directory."""
    if environ.get("NETSKY_UNIT_DIR"):
        return os.path.expanduser(environ["NETSKY_UNIT_DIR"])
    home = environ.get("HOME") or os.path.expanduser("~")
    if platform == "darwin":
        return os.path.join(home, "Library", "LaunchAgents")
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(config, "systemd", "user")


def units_missing(environ: Mapping[str, str], platform: str) -> tuple[str, list[str]]:
    """``(unit directory, the unit files missing there)``."""
    directory = unit_dir(environ, platform)
    names = MACOS_UNITS if platform == "darwin" else LINUX_UNITS
    return directory, [n for n in names if not os.path.isfile(os.path.join(directory, n))]


def check_units(environ: Mapping[str, str], platform: str = sys.platform) -> dict[str, Any]:
    """systemd units (Linux) or launchd plists (macOS) present in the unit directory."""
    directory, missing = units_missing(environ, platform)
    if missing:
        detail = f"missing in {directory}: {', '.join(missing)}"
        return check("units", "warn", detail, INSTALL_HINT)
    return check("units", "ok", f"installed in {directory}")


def check_shim(home: str, units_installed: bool, now_s: float | None = None) -> dict[str, Any]:
    """``bin/netsky-shim`` executable, and (units installed) a run in the last 10 min."""
    now_s = time.time() if now_s is None else now_s
    path = os.path.join(home, "bin", "netsky-shim")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return check("shim", "warn", f"{path} is not installed", INSTALL_HINT)
    last = healthfiles.read_shim_last(home)
    then = parse_rfc3339(str(last.get("ts", ""))) if last else None
    if then is None:
        if units_installed:
            return check(
                "shim", "warn", "installed, but logs/shim.jsonl records no run", _timer_hint()
            )
        return check("shim", "ok", f"{path} installed; no run recorded")
    age = max(0.0, now_s - then)
    ran = f"last run {format_uptime(age)} ago: {(last or {}).get('verdict', '?')}"
    if units_installed and age > SHIM_STALE_S:
        return check("shim", "warn", f"installed; {ran}", _timer_hint())
    return check("shim", "ok", f"installed; {ran}")


def _timer_hint() -> str:
    if sys.platform == "darwin":
        return "launchctl print gui/$(id -u)/com.netsky.shim; or netskyctl service install"
    return "systemctl --user status netsky-shim.timer; or netskyctl service install"


def check_lkg(home: str) -> dict[str, Any]:
    """``lkg/current/manifest.json`` present and of this version."""
    lkg = healthfiles.read_lkg(home, time.time())
    hint = "netskyctl self-repair promote"
    if not lkg["present"]:
        return check("lkg", "warn", "no last-known-good install", hint)
    made = f"{lkg['id']}, made {_ago(lkg['age_s'])}"
    if lkg["version"] != __version__:
        detail = f"{made}, is netsky {lkg['version']}, this install {__version__}"
        return check("lkg", "warn", detail, hint + " (once this version has run healthy)")
    return check("lkg", "ok", f"{made} (netsky {lkg['version']})")


def check_legs(environ: Mapping[str, str], home: str) -> dict[str, Any]:
    """config.toml names at least one enabled page leg that reaches the owner away from
    this machine (email, webhook, imessage). A leg table's type defaults to its name."""
    import tomllib

    path = environ.get("NETSKY_CONFIG") or os.path.join(home, "config.toml")
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        cfg = {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        return check("legs", "fail", f"{path} cannot be read: {e}", "fix config.toml")
    legs = cfg.get("legs") if isinstance(cfg.get("legs"), dict) else {}
    remote = sorted(
        name
        for name, leg in (legs or {}).items()
        if isinstance(leg, dict)
        and leg.get("type", name) in REMOTE_LEGS
        and leg.get("enabled", True) is not False
    )
    if not remote:
        return check(
            "legs",
            "warn",
            "only desktop and tmux: you are paged only at this machine",
            "add [legs.email] or [legs.webhook] to config.toml (docs/escalation.md)",
        )
    return check("legs", "ok", f"pages also go to: {', '.join(remote)}")


def doctor(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every doctor check, in order."""
    home = home_of(environ)
    found = probe(home)
    _, missing = units_missing(environ, sys.platform)
    return [
        check_tmux(environ),
        check_socket(home, found),
        check_version(found),
        check_schema(home),
        check_units(environ),
        check_shim(home, units_installed=not missing),
        check_lkg(home),
        check_legs(environ, home),
    ]


def cmd_doctor(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``netskyctl doctor [--json]`` (module docstring)."""
    checks = doctor(environ)
    ok = not any(c["status"] == "fail" for c in checks)
    if args.json:
        sys.stdout.write(json.dumps({"ok": ok, "checks": checks}, indent=2) + "\n")
    else:
        width = max(len(c["name"]) for c in checks)
        for c in checks:
            hint = f"  (hint: {c['hint']})" if c["hint"] and c["status"] != "ok" else ""
            line = f"{c['status'].upper():<4}  {c['name']:<{width}}  {c['detail']}{hint}"
            sys.stdout.write(line + "\n")
    return protocol.EXIT_OK if ok else protocol.EXIT_FAILED


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add health, doctor to netskyctl's subcommands (``common`` holds ``--json``)."""
    h = sub.add_parser(
        "health", parents=[common], help="health report: ok, degraded or down (no daemon needed)"
    )
    h.add_argument("--once", action="store_true", help="one report; exit 0 ok, 1 degraded, 3 down")
    h.add_argument(
        "--interval", type=float, default=5.0, help="seconds between reports (default 5)"
    )
    sub.add_parser("doctor", parents=[common], help="check the install: tmux, socket, units, ...")


COMMANDS = {"health": cmd_health, "doctor": cmd_doctor}
