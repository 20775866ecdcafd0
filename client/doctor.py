"""``netskyctl doctor [--json]`` (stdlib only): is this install sound?

It checks tmux, the socket, version and schema skew, the service units, the shim and
its last run, the last-known-good install, the owner's page legs, and the work loop's
git (workspaces holding commits never harvested; target branches that moved since the
last harvest, docs/work.md). Each check is
``{"name", "status": "ok"|"warn"|"fail", "detail", "hint"}``; exit 0 when none fails,
1 otherwise. ``--json``: ``{"ok", "checks"}``. Source of the list: issue 7 and
docs/keepalive.md ("Health and doctor").
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time

from client.common import home_of
from client.health import ago
from client.rpc import Client
from netsky_shared import __version__, protocol
from netsky_shared import health as healthfiles
from netsky_shared.errors import DaemonNotRunning, NetskyError, VersionSkew
from netsky_shared.ids import format_uptime
from netsky_shared.incidents import parse_rfc3339
from netsky_shared.paths import LAUNCHD_LABELS, SYSTEMD_UNITS, socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

PROBE_TIMEOUT_S = 5.0
TMUX_TIMEOUT_S = 5.0
TMUX_MIN = (3, 0)
#: A shim that has not run for this long while its units are installed is a warning.
SHIM_STALE_S = 600.0
START_HINT = "start it: netskyctl service install (or 'netskyd run' in the foreground)"
INSTALL_HINT = "netskyctl service install"
LINUX_UNITS = SYSTEMD_UNITS
MACOS_UNITS = tuple(f"{label}.plist" for label in LAUNCHD_LABELS)
REMOTE_LEGS = ("email", "webhook", "imessage")


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
        code_version = protocol.SCHEMA_VERSION
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
    LaunchAgents directory (the rule ``service install`` writes by:
    ``client.unit_texts.default_unit_dir``; imported here only when doctor runs)."""
    from client.unit_texts import default_unit_dir

    manager = "launchd" if platform == "darwin" else "systemd"
    return str(default_unit_dir(manager, environ))


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
    made = f"{lkg['id']}, made {ago(lkg['age_s'])}"
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


# ----- the work loop: workspaces and target branches (docs/work.md, "Git safety") -----------

#: Deadline of each git call of the work-loop checks.
GIT_TIMEOUT_S = 10.0
#: Dispatch states whose workspace may still hold work to harvest.
OPEN_DISPATCHES = ("briefed", "reported", "done")


def git(
    environ: Mapping[str, str], repo: str, *args: str, timeout_s: float = GIT_TIMEOUT_S
) -> tuple[int, str]:
    """``git -C repo args`` with a deadline, prompts off and nothing written back (no
    optional locks). ``(exit code, stdout stripped)``, or ``(-1, why)`` when git could not
    run or missed the deadline, ``(code, git's last line)`` when it failed. Never raises."""
    import subprocess

    from netsky_shared.git import without_repo_vars

    env = without_repo_vars(dict(environ))
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    env.setdefault("PATH", os.defpath)
    try:
        res = subprocess.run(
            ["git", "-C", repo, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, f"git {args[0]} did not answer within {timeout_s:g}s"
    except OSError as e:
        return -1, f"git cannot run: {e.strerror or e}"
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        return res.returncode, last
    return 0, res.stdout.strip()


def work_rows(home: str, table: str, sql: str) -> tuple[list[dict[str, Any]] | None, str]:
    """Rows of ``sql`` from meta.db, opened read-only: ``(rows, "")``; ``(None, why)``
    when there is no meta.db, no ``table`` (a schema before the work loop) or it
    cannot be read."""
    import sqlite3

    path = os.path.join(home, "meta.db")
    if not os.path.exists(path):
        return None, "no meta.db yet"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)
        try:
            db.row_factory = sqlite3.Row
            known = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            if db.execute(known, (table,)).fetchone() is None:
                return None, f"meta.db has no {table} table yet"
            return [dict(r) for r in db.execute(sql).fetchall()], ""
        finally:
            db.close()
    except sqlite3.Error as e:
        return None, f"meta.db cannot be read: {e}"


def check_workspaces(home: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Workspaces of open briefs (``clone_dispatches``: briefed, reported, done) holding
    commits never harvested: ``git rev-list --count X..refs/heads/BRANCH`` in each, X the
    last harvested tip or the base. A workspace git cannot read is named, never a failure."""
    marks = ", ".join(f"'{s}'" for s in OPEN_DISPATCHES)
    rows, why = work_rows(
        home,
        "clone_dispatches",
        "SELECT agent, workspace, repo, branch, base_sha, harvested_sha, state "
        f"FROM clone_dispatches WHERE state IN ({marks}) ORDER BY id DESC",
    )
    if rows is None:
        status = "warn" if why.startswith("meta.db cannot") else "ok"
        return check("workspaces", status, f"{why}: no briefs to look at")
    pending, broken, seen = [], [], set()
    for d in rows:
        if d["workspace"] in seen:
            continue  # its newest brief speaks for it
        seen.add(d["workspace"])
        where = f"{d['workspace']} ({d['agent']}, {d['state']})"
        if not os.path.isdir(d["repo"]):
            broken.append(f"{where}: {d['repo']} is gone")
            continue
        since = d["harvested_sha"] or d["base_sha"]
        code, text = git(
            environ, d["repo"], "rev-list", "--count", f"{since}..refs/heads/{d['branch']}"
        )
        if code != 0 or not text.isdigit():
            broken.append(f"{where}: {text}")
        elif int(text):
            n = int(text)
            pending.append(f"{where}: {n} commit{'' if n == 1 else 's'}")
    if not seen:
        return check("workspaces", "ok", "no open briefs")
    if not pending and not broken:
        return check("workspaces", "ok", f"{len(seen)} open, no commits waiting for a harvest")
    parts = []
    if pending:
        parts.append("commits never harvested in " + "; ".join(pending))
    if broken:
        parts.append("cannot count in " + "; ".join(broken))
    hint = "netskyctl harvest N lands them; netskyctl clone kill N --rm --force drops them"
    return check("workspaces", "warn", "; ".join(parts), hint)


def check_head_stability(home: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Each branch a harvest landed on (``harvests``, outcome ``landed``) still at the
    newest landing's ``onto_after``; one that moved since is named with its old and new
    tip, and whether the harvested commit is still on it (moved on) or not (rewritten)."""
    rows, why = work_rows(
        home,
        "harvests",
        "SELECT h.target_repo, h.onto, h.onto_after, h.finished_ts FROM harvests h "
        "WHERE h.id = (SELECT MAX(id) FROM harvests WHERE outcome = 'landed' "
        "AND target_repo = h.target_repo AND onto = h.onto) ORDER BY h.id",
    )
    if rows is None:
        status = "warn" if why.startswith("meta.db cannot") else "ok"
        return check("head-stability", status, f"{why}: no harvests to look at")
    if not rows:
        return check("head-stability", "ok", "no harvest has landed yet")
    moved, steady = [], []
    for h in rows:
        where = f"{h['onto']} in {h['target_repo']}"
        old = h["onto_after"] or ""
        code, now = git(
            environ, h["target_repo"], "rev-parse", "--verify", "--quiet", f"refs/heads/{h['onto']}"
        )
        if code != 0:
            moved.append(f"{where}: cannot read it ({now or 'no such branch'})")
        elif now == old:
            steady.append(f"{h['onto']} at {old[:12]}")
        else:
            kept, _ = git(environ, h["target_repo"], "merge-base", "--is-ancestor", old, now)
            how = {0: "moved on", 1: "rewritten: the harvested commit is no longer on it"}
            moved.append(
                f"{where} is at {now[:12]}, the last harvest left it at {old[:12]} "
                f"({h['finished_ts'] or '?'}): {how.get(kept, 'cannot tell how')}"
            )
    if moved:
        hint = "commits landed outside netskyctl harvest; git reflog of the branch shows who"
        return check("head-stability", "warn", "; ".join(moved), hint)
    return check("head-stability", "ok", "as the last harvests left them: " + ", ".join(steady))


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
        check_workspaces(home, environ),
        check_head_stability(home, environ),
        _schedule_check(home, found),
        _owner_check(home, found),
        _skills_check(home),
    ]


def _skills_check(home: str) -> dict[str, Any]:
    from client.notes import doctor_check

    return doctor_check(home)


def _owner_check(home: str, found: dict[str, Any]) -> dict[str, Any]:
    from client.owner import doctor_check

    try:
        return doctor_check(home, found["state"] == "up")
    except NetskyError as e:
        return check("owner", "warn", f"could not ask netskyd: {e}")


def _schedule_check(home: str, found: dict[str, Any]) -> dict[str, Any]:
    from client.schedule import doctor_check

    try:
        return doctor_check(home, found["state"] == "up")
    except NetskyError as e:
        return check("cron", "warn", f"could not ask netskyd: {e}")


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
    """Add doctor to netskyctl's subcommands (``common`` holds ``--json``)."""
    sub.add_parser("doctor", parents=[common], help="check the install: tmux, socket, units, ...")


COMMANDS = {"doctor": cmd_doctor}
