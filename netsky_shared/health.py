"""The health report's pure parts (stdlib only: netskyctl builds the "down" report itself).

``netskyd.keepalive.health.refresh`` (the daemon, at every tick and on ``health``) and
``netskyctl health`` (when the daemon does not answer) both build the report of
docs/keepalive.md, "Health report", from the same pieces:

- ``collect(home, now_s)``: what the files under NETSKY_HOME say (markers, incidents,
  legs, heartbeat, last-known-good, the shim's last run, the wanted agents). Never
  raises: an unreadable file is named in ``problems`` instead.
- ``judge(...)``: the status rules, a pure function of recorded facts.
- ``report(...)``: the report dict; ``client_report`` the whole report without a daemon.
- ``write_report(home, report)``: ``state/health.json``, atomically (tmp + os.replace).

Status rules (``judge``): ``down`` when the daemon is not running; else ``degraded``
when any of: the last tick (or the start, before the first tick) is older than
3 tick intervals, an agent is wanted but not alive, a gave-up or crash-loop marker
names an agent, a critical incident is open, a leg has failed
``escalation_leg_failing_after`` times in a row, a marker or incident file cannot be
read (it may be hiding one of the above); otherwise ``ok``. Reasons are short
sentences, one per finding.

Import weight: json, os and time only (plus netsky_shared.incidents, itself that light).
"""

from __future__ import annotations

import json
import os
import time

from netsky_shared.incidents import is_open, parse_rfc3339, rfc3339, scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

#: Ticks may be this many intervals late before the daemon counts as degraded.
STALE_TICKS = 3
#: Marker kinds of the report and their files under ``state/``
#: (netskyd.supervision.restart.markers).
RESTART_MARKERS = {"gave_up": "gave-up.json", "crash_loop": "crashloop.json"}
#: Per-agent marker directories under ``state/`` (netskyd.activity.hangs, .parking).
AGENT_MARKER_DIRS = {"hang": "hang", "limit": "limit"}
#: How much of ``logs/shim.jsonl`` is read to find its last line.
SHIM_TAIL_BYTES = 16 * 1024
MISSING = "missing"


def read_json(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """Read a JSON object: ``(value, None)``, ``(None, "missing")`` when there is no file,
    or ``(None, why)`` when it cannot be read or is not a JSON object. Never raises."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1024 * 1024)
    except FileNotFoundError:
        return None, MISSING
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return None, f"not JSON: {str(e)[:80]}"
    if not isinstance(value, dict):
        return None, f"not a JSON object ({type(value).__name__})"
    return value, None


def _rel(home: str, path: str) -> str:
    return os.path.relpath(path, home)


def read_markers(home: str) -> tuple[dict[str, list[str]], list[str]]:
    """``({"gave_up": [agent...], "crash_loop": [...], "hang": [...], "limit": [...]},
    problems)``. ``limit`` lists agents parked on a usage limit (a released marker
    stays on disk and is not listed). Each unreadable file is one problem sentence."""
    state = os.path.join(home, "state")
    markers: dict[str, list[str]] = {}
    problems: list[str] = []
    for kind, name in RESTART_MARKERS.items():
        path = os.path.join(state, name)
        value, why = read_json(path)
        agents = value.get("agents") if value is not None else {}
        if why is None and not isinstance(agents, dict):
            why = "'agents' is not an object"
        if why not in (None, MISSING):
            problems.append(f"{_rel(home, path)} cannot be read ({why})")
        markers[kind] = sorted(agents) if isinstance(agents, dict) else []
    for kind, dirname in AGENT_MARKER_DIRS.items():
        directory = os.path.join(state, dirname)
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and n[0] != ".")
        except OSError:
            names = []
        found = []
        for name in names:
            path = os.path.join(directory, name)
            value, why = read_json(path)
            if why == MISSING:
                continue  # cleared while we listed
            if value is None:
                problems.append(f"{_rel(home, path)} cannot be read ({why})")
                continue
            if kind == "limit" and value.get("state", "parked") != "parked":
                continue
            found.append(name[: -len(".json")])
        markers[kind] = found
    return markers, problems


def read_incidents(home: str) -> dict[str, Any]:
    """``{"open": int, "keys": [...], "critical": [keys of open critical ones],
    "unreadable": [file names]}`` from ``state/escalations/`` (nothing moved aside)."""
    try:
        found, unreadable = scan(home)
    except OSError:
        found, unreadable = [], []
    open_ = [i for i in found if is_open(i)]
    return {
        "open": len(open_),
        "keys": [i["key"] for i in open_],
        "critical": [i["key"] for i in open_ if i.get("severity") == "critical"],
        "unreadable": [u["file"] for u in unreadable],
    }


def read_legs(home: str) -> dict[str, dict[str, Any]]:
    """``{leg: {"last": "delivered"|"failed"|"unavailable"|None, "failing": int}}`` from
    ``state/legs.json`` (netskyd.escalation.pager; {} when missing or unreadable: it is rebuilt)."""
    value, _ = read_json(os.path.join(home, "state", "legs.json"))
    legs: dict[str, dict[str, Any]] = {}
    for name, h in sorted((value or {}).items()):
        if isinstance(h, dict):
            failures = h.get("failures", 0)
            legs[str(name)] = {
                "last": h.get("status"),
                "failing": failures if isinstance(failures, int) else 0,
            }
    return legs


def read_heartbeat(home: str) -> dict[str, Any] | None:
    """``state/heartbeat.json`` (netskyd.keepalive.heartbeat); None when missing or unreadable."""
    value, _ = read_json(os.path.join(home, "state", "heartbeat.json"))
    return value


def heartbeat_age_s(heartbeat: dict[str, Any] | None, now_s: float) -> float | None:
    """Seconds since the heartbeat: its ``ts`` (sub-second), else its ``epoch`` (None
    without a usable one)."""
    ts = (heartbeat or {}).get("ts")
    then = parse_rfc3339(ts) if isinstance(ts, str) else None
    if then is not None:
        return round(max(0.0, now_s - then), 1)
    epoch = (heartbeat or {}).get("epoch")
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return None
    return round(max(0.0, now_s - epoch), 1)


def read_lkg(home: str, now_s: float) -> dict[str, Any]:
    """``{"present", "id", "version", "created_ts", "age_s"}`` from
    ``lkg/current/manifest.json``; ``present`` is False when it is missing or unreadable."""
    value, _ = read_json(os.path.join(home, "lkg", "current", "manifest.json"))
    if value is None:
        return {"present": False, "id": None, "version": None, "created_ts": None, "age_s": None}
    created = value.get("created_ts")
    then = parse_rfc3339(created) if isinstance(created, str) else None
    return {
        "present": True,
        "id": value.get("id"),
        "version": value.get("version"),
        "created_ts": created,
        "age_s": None if then is None else round(max(0.0, now_s - then), 1),
    }


def read_shim_last(home: str) -> dict[str, Any] | None:
    """The last line of ``logs/shim.jsonl`` that is a JSON object, or None (missing, empty,
    none parses). Reads only the file's tail. Used by health, doctor and ``service status``."""
    path = os.path.join(home, "logs", "shim.jsonl")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - SHIM_TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def read_wanted(home: str) -> list[str]:
    """Agents ``state/desired.json`` wants running ([] when down, missing or unreadable)."""
    value, _ = read_json(os.path.join(home, "state", "desired.json"))
    if value is None or value.get("state") != "up" or not isinstance(value.get("agents"), dict):
        return []
    from netsky_shared.ids import is_agent_id, sort_key

    return sorted((a for a in value["agents"] if is_agent_id(a)), key=sort_key)


def collect(home: str, now_s: float) -> dict[str, Any]:
    """Everything the files say: ``{"markers", "problems", "incidents", "legs",
    "heartbeat", "lkg", "shim_last"}`` (see the readers above). Never raises."""
    markers, problems = read_markers(home)
    incidents = read_incidents(home)
    problems += [
        f"state/escalations/{name} cannot be read (an incident?)"
        for name in incidents["unreadable"]
    ]
    return {
        "markers": markers,
        "problems": problems,
        "incidents": incidents,
        "legs": read_legs(home),
        "heartbeat": read_heartbeat(home),
        "lkg": read_lkg(home, now_s),
        "shim_last": read_shim_last(home),
    }


def _names(agents: Iterable[str]) -> str:
    return ", ".join(agents)


def judge(
    *,
    running: bool,
    tick_age_s: float | None,
    ticked: bool,
    tick_interval_s: float | None,
    not_alive: list[str],
    markers: dict[str, list[str]],
    critical: list[str],
    legs: dict[str, dict[str, Any]],
    failing_after: int,
    problems: list[str],
) -> tuple[str, list[str]]:
    """The status (``ok``, ``degraded`` or ``down``) and its reasons (module docstring).

    ``tick_age_s`` is the age of the last tick, or of the daemon when ``ticked`` is
    False; ``not_alive`` the wanted agents not alive; ``critical`` the keys of open
    critical incidents; ``legs`` as in the report.
    """
    reasons: list[str] = []
    if not running:
        reasons.append("netskyd is not running")
    elif tick_age_s is not None and tick_interval_s and tick_age_s > STALE_TICKS * tick_interval_s:
        every = f"due every {tick_interval_s:g}s"
        if ticked:
            reasons.append(f"the last tick was {tick_age_s:.0f}s ago ({every})")
        else:
            reasons.append(f"no tick in the {tick_age_s:.0f}s since netskyd started ({every})")
    if running and not_alive:
        verb = "is" if len(not_alive) == 1 else "are"
        reasons.append(f"{_names(not_alive)} {verb} wanted but not running")
    if markers.get("gave_up"):
        reasons.append(f"the watchdog gave up restarting {_names(markers['gave_up'])}")
    if markers.get("crash_loop"):
        reasons.append(f"crash loop: {_names(markers['crash_loop'])}")
    if critical:
        reasons.append(f"critical incident open: {_names(critical)}")
    for name, leg in sorted(legs.items()):
        if leg.get("failing", 0) >= failing_after:
            reasons.append(f"the {name} page leg failed {leg['failing']} times in a row")
    reasons += problems
    if not running:
        return "down", reasons
    return ("degraded" if reasons else "ok"), reasons


def report(
    *,
    now_s: float,
    status: str,
    reasons: list[str],
    source: str,
    daemon: dict[str, Any],
    agents: list[dict[str, Any]],
    files: dict[str, Any],
) -> dict[str, Any]:
    """The health report (docs/keepalive.md) from its parts and ``collect``'s ``files``."""
    inc = files["incidents"]
    return {
        "ts": rfc3339(now_s),
        "status": status,
        "reasons": reasons,
        "source": source,
        "daemon": daemon,
        "agents": agents,
        "incidents": {"open": inc["open"], "keys": inc["keys"]},
        "markers": files["markers"],
        "legs": files["legs"],
        "lkg": files["lkg"],
        "shim": {"last": files["shim_last"]},
    }


def read_install_selected(home: str) -> str:
    """``state/install-selected`` under NETSKY_HOME ``home`` (a string): ``"live"`` or
    ``"lkg"``, the install ``netsky-shim run-daemon`` starts. Absent, unreadable or any
    other content reads ``"live"``, as the shim's own reader does. Never raises."""
    try:
        with open(os.path.join(home, "state", "install-selected"), encoding="utf-8") as f:
            value = f.read().strip()
    except OSError:
        return "live"
    return value if value in ("live", "lkg") else "live"


def client_report(
    home: str,
    now_s: float | None = None,
    *,
    running: bool = False,
    reason: str | None = None,
    tick_interval_s: float | None = None,
    failing_after: int = 3,
) -> dict[str, Any]:
    """The report ``netskyctl`` writes when the daemon cannot give one (source "client").

    ``running`` False: status ``down``. ``running`` True (the daemon is there but did
    not answer, ``reason`` says how): ``degraded``. What the files know is filled in:
    the heartbeat's last tick and age, the install ``state/install-selected`` names;
    the running process's fields (pid, uptime, sd_notify) are null. ``agents`` lists
    the wanted agents (``state/desired.json``) with ``alive``/``ready``/``activity``
    null: unknown without the daemon.
    """
    now_s = time.time() if now_s is None else now_s
    files = collect(home, now_s)
    hb = files["heartbeat"] or {}
    last_tick_ts = hb.get("last_tick_ts") if isinstance(hb.get("last_tick_ts"), str) else None
    last_tick = parse_rfc3339(last_tick_ts) if last_tick_ts else None
    daemon = {
        "pid": None,
        "version": None,
        "uptime_s": None,
        "last_tick_ts": last_tick_ts,
        "last_tick_age_s": None if last_tick is None else round(max(0.0, now_s - last_tick), 1),
        "tick_interval_s": tick_interval_s,
        "heartbeat_age_s": heartbeat_age_s(files["heartbeat"], now_s),
        "install": read_install_selected(home),
        "executable": None,
        "sd_notify": False,
        "watchdog_s": None,
    }
    status, reasons = judge(
        running=running,
        tick_age_s=None,
        ticked=last_tick is not None,
        tick_interval_s=tick_interval_s,
        not_alive=[],
        markers=files["markers"],
        critical=files["incidents"]["critical"],
        legs=files["legs"],
        failing_after=failing_after,
        problems=files["problems"],
    )
    if reason and running:
        reasons.insert(0, reason)
    elif reason:
        reasons[0] = reason  # "netskyd is not running", said more precisely
    if running and status == "ok":
        status = "degraded"
    agents = [
        {"agent": a, "alive": None, "ready": None, "activity": None} for a in read_wanted(home)
    ]
    return report(
        now_s=now_s,
        status=status,
        reasons=reasons,
        source="client",
        daemon=daemon,
        agents=agents,
        files=files,
    )


def write_report(home: str, value: dict[str, Any]) -> str:
    """Write ``state/health.json`` atomically (tmp + fsync + os.replace); return its path.

    Raises OSError when it cannot be written.
    """
    from pathlib import Path  # here, not at the top: the module's import weight

    from netsky_shared.maildir import atomic_write_bytes

    path = os.path.join(home, "state", "health.json")
    data = (json.dumps(value, sort_keys=True, default=str) + "\n").encode("utf-8")
    # No directory fsync, as before: the report is rewritten at every tick.
    atomic_write_bytes(Path(path), data, sync_dir=False)
    return path
