"""netskyctl self-repair: check, record and roll back to the last-known-good install.

``check`` asks each install whether it can run a daemon (``netskyd selftest``), ``promote`` records
the live install in ``lkg/`` (``python -m netskyd.keepalive.lkg.snapshot promote``, which does the
copying), ``rollback`` selects the last-known-good install in ``state/install-selected`` and
restarts the daemon so it runs. Contracts: docs/keepalive.md. Stdlib only; every child process has a
deadline (its whole process group is killed at it; client.installs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from client.common import Usage, home_of, out, setting
from client.installs import (
    SELFTEST_TIMEOUT_S,
    daemon_info,
    home_env,
    is_under,
    json_object,
    read_manifest,
    read_selected,
    run,
    selftest,
    service_env,
    this_python,
    write_selected,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RESTART_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SHIM_TIMEOUT_S = 300.0
LAUNCHD_LABEL = "com.netsky.netskyd"
PROMOTE_HINT = "hint: 'netskyctl self-repair promote' records the live install as last-known-good"


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``self-repair check|promote|rollback`` (``common`` holds ``--json``)."""
    p = sub.add_parser(
        "self-repair", parents=[common], help="check, record or roll back to the last-known-good"
    )
    rs = p.add_subparsers(dest="repair_command", metavar="SUBCOMMAND")
    rs.add_parser("check", parents=[common], help="do the installs pass selftest? (exit 0/1)")
    rs.add_parser("promote", parents=[common], help="record the live install as last-known-good")
    rb = rs.add_parser("rollback", parents=[common], help="run the last-known-good install")
    rb.add_argument(
        "--no-restart", action="store_true", help="only select it; do not restart netskyd"
    )


def cmd_self_repair(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl self-repair check|promote|rollback; exit 0 done, 1 failed, 2 usage."""
    command = getattr(args, "repair_command", None)
    home = home_of(environ)
    if command == "check":
        report = check(home, environ)
        out(args, report, check_text(report))
        return 0 if report["ok"] else 1
    if command == "promote":
        return _promote(args, home, environ)
    if command == "rollback":
        return _rollback(args, home, environ)
    raise Usage("self-repair needs a subcommand: check, promote, rollback")


COMMANDS = {"self-repair": cmd_self_repair}


# --- check -------------------------------------------------------------------------------


def _live_cmd(home: str, environ: Mapping[str, str], manifest: dict[str, Any] | None) -> list[str]:
    """How to run the live install's netskyd: this netskyctl's interpreter, unless this
    netskyctl is the last-known-good one (then the live bin dir of service.env or of the
    manifest)."""
    if not is_under(sys.executable, os.path.join(home, "lkg")):
        return this_python("netskyd")
    live_bin = service_env(home, environ).get("NETSKY_LIVE_BIN") or (manifest or {}).get("source")
    return [os.path.join(str(live_bin or ""), "netskyd")]


def check(home: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Every finding about the two installs, as ``{"ok", "home", "selected", "live",
    "lkg", "same", "daemon", "findings": [{"name", "ok", "detail", "hint"}]}``; ``ok``
    when the selected install passes selftest and a last-known-good one exists and
    passes too."""
    env = home_env(home, environ)
    selected = read_selected(home)
    manifest = read_manifest(home)
    live = selftest(_live_cmd(home, environ, manifest), env)
    lkg_dir = os.path.join(home, "lkg", "current")
    lkg: dict[str, Any] = {"present": manifest is not None}
    if manifest is not None:
        lkg.update({k: manifest.get(k) for k in ("id", "version", "fingerprint", "created_ts")})
        lkg["selftest"] = selftest([os.path.join(lkg_dir, "bin", "netskyd")], env)
    rc, stdout, _ = run(
        [*this_python("netskyd.keepalive.lkg.snapshot"), "check", "--home", home, "--json"],
        SELFTEST_TIMEOUT_S,
        env,
    )
    running = json_object(stdout).get("running") or {}
    live["fingerprint"] = running.get("fingerprint")
    same = bool(manifest and live["fingerprint"] and manifest["fingerprint"] == live["fingerprint"])
    daemon = daemon_info(home)
    findings = _findings(selected, live, lkg, same, daemon, home)
    chosen_ok = live["ok"] if selected == "live" else bool(lkg.get("selftest", {}).get("ok"))
    return {
        "ok": chosen_ok and bool(lkg.get("selftest", {}).get("ok")),
        "home": home,
        "selected": selected,
        "live": live,
        "lkg": lkg,
        "same": same,
        "daemon": daemon,
        "findings": findings,
    }


def _findings(
    selected: str,
    live: dict[str, Any],
    lkg: dict[str, Any],
    same: bool,
    daemon: dict[str, Any],
    home: str,
) -> list[dict[str, Any]]:
    def f(name: str, ok: bool, detail: str, hint: str = "") -> dict[str, Any]:
        return {"name": name, "ok": ok, "detail": detail, "hint": hint}

    rows = [
        f(
            "live",
            live["ok"],
            f"the live install (netskyd {live['version'] or '?'}, {live['executable'] or '?'}) "
            f"{live['detail']}",
            "" if live["ok"] else "hint: reinstall netsky, or 'netskyctl self-repair rollback'",
        )
    ]
    if not lkg["present"]:
        rows.append(f("lkg", False, "no last-known-good install in lkg/", PROMOTE_HINT))
    else:
        test = lkg["selftest"]
        rows.append(
            f(
                "lkg",
                test["ok"],
                f"last-known-good {lkg['id']} (netsky {lkg['version']}, recorded "
                f"{lkg['created_ts']}) {test['detail']}",
                "" if test["ok"] else PROMOTE_HINT + " again",
            )
        )
        rows.append(
            f(
                "same",
                True,
                "the last-known-good install is the live one"
                if same
                else "the live install differs from the last-known-good one (newer code or "
                "dependencies; the daemon records it after a healthy stretch)",
            )
        )
    chosen_ok = live["ok"] if selected == "live" else bool(lkg.get("selftest", {}).get("ok"))
    rows.append(
        f(
            "selected",
            chosen_ok,
            f"state/install-selected: {selected} (what the shim starts)",
            ""
            if chosen_ok
            else "hint: 'netskyctl self-repair rollback' selects lkg; "
            "'netskyctl self-repair promote' records and selects live",
        )
    )
    if daemon["running"]:
        runs = "lkg" if is_under(daemon["executable"], os.path.join(home, "lkg")) else "live"
        rows.append(
            f(
                "daemon",
                True,
                f"netskyd {daemon['version']} (pid {daemon['pid']}) runs the {runs} install "
                f"({daemon['executable'] or 'executable unknown'})",
                "" if runs == selected else "hint: it runs the selected install after a restart",
            )
        )
    else:
        rows.append(f("daemon", True, "netskyd does not answer (not needed for this check)"))
    return rows


def check_text(report: dict[str, Any]) -> str:
    lines = []
    for r in report["findings"]:
        tag = "info" if r["name"] in ("same", "daemon") else "ok  " if r["ok"] else "FAIL"
        lines.append(f"{tag} {r['name']}: {r['detail']}")
        if r["hint"]:
            lines.append(f"     {r['hint']}")
    verdict = "ok" if report["ok"] else "needs attention"
    lines.append(f"self-repair: {verdict} (NETSKY_HOME {report['home']})")
    return "\n".join(lines)


# --- promote, rollback -------------------------------------------------------------------


def _fail(args: argparse.Namespace, message: str, hint: str = "", **extra: Any) -> int:
    if args.json:
        sys.stdout.write(json.dumps({"ok": False, "error": message, **extra}) + "\n")
    sys.stderr.write(f"netskyctl: {message}\n" + (f"{hint}\n" if hint else ""))
    return 1


def _promote(args: argparse.Namespace, home: str, environ: Mapping[str, str]) -> int:
    if is_under(sys.executable, os.path.join(home, "lkg")):
        return _fail(
            args,
            "this netskyctl runs from the last-known-good install; promote records the live one",
            "hint: run the live install's 'netskyctl self-repair promote'",
        )
    timeout_s = setting(environ, "lkg_timeout_s", 600)
    cmd = [*this_python("netskyd.keepalive.lkg.snapshot"), "promote", "--home", home]
    rc, stdout, stderr = run(
        [*cmd, "--reason", "manual", "--json"], timeout_s, home_env(home, environ)
    )
    manifest = json_object(stdout)
    if rc != 0 or "id" not in manifest:
        why = manifest.get("error") or stderr.strip()[-500:] or f"exit {rc}"
        return _fail(args, f"recording the live install failed: {why}")
    write_selected(home, "live")
    text = (
        f"recorded the live install as last-known-good: {manifest['path']}\n"
        f"  netsky {manifest['version']}, {manifest['files']} files, "
        f"{manifest['bytes'] / 1e6:.1f} MB, in {manifest['duration_ms'] / 1000:.1f}s\n"
        "state/install-selected: live"
    )
    out(args, {"ok": True, "lkg": manifest, "selected": "live"}, text)
    return 0


def _rollback(args: argparse.Namespace, home: str, environ: Mapping[str, str]) -> int:
    manifest = read_manifest(home)
    if manifest is None:
        return _fail(args, "there is no last-known-good install to roll back to", PROMOTE_HINT)
    lkg_netskyd = os.path.join(home, "lkg", "current", "bin", "netskyd")
    test = selftest([lkg_netskyd], home_env(home, environ))
    if not test["ok"]:
        return _fail(
            args,
            f"the last-known-good install {manifest.get('id')} fails selftest: {test['detail']}",
            "hint: nothing was changed; fix or reinstall the live install",
        )
    write_selected(home, "lkg")
    result: dict[str, Any] = {"ok": True, "selected": "lkg", "lkg": manifest, "restart": None}
    lines = [
        f"state/install-selected: lkg ({manifest.get('id')}, netsky {manifest.get('version')})"
    ]
    if args.no_restart:
        lines.append("not restarted: netskyd runs the last-known-good install after a restart")
        out(args, result, "\n".join(lines))
        return 0
    restart = restart_daemon(home, environ)
    result["restart"] = restart
    result["ok"] = restart["ok"]
    lines.append(restart["detail"])
    if not restart["ok"]:
        return _fail(args, "\n".join(lines), restart.get("hint", ""), **result)
    out(args, result, "\n".join(lines))
    return 0


def restart_daemon(home: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Restart netskyd so it runs the selected install: through systemd or launchd when
    ``service.env`` says so, else stop it (SIGTERM, deadline) and run the shim once.
    Returns ``{"ok", "how", "detail", "hint", "daemon"}``."""
    manager = service_env(home, environ).get("NETSKY_SERVICE_MANAGER", "none")
    shim = os.path.join(home, "bin", "netsky-shim")
    env = home_env(home, environ)
    if manager == "systemd":
        how, cmd = "systemd", ["systemctl", "--user", "restart", "netskyd.service"]
    elif manager == "launchd":
        how, cmd = "launchd", ["launchctl", "kickstart", "-k", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]
    elif os.path.isfile(shim):
        how, cmd = "shim", ["sh", shim]
        before = daemon_info(home)
        if before["running"] and not _stop(before["pid"]):
            return {
                "ok": False,
                "how": how,
                "detail": f"netskyd (pid {before['pid']}) did not stop within {STOP_TIMEOUT_S:g}s",
                "hint": f"hint: stop it, then run: sh {shim}",
                "daemon": before,
            }
    else:
        running = daemon_info(home)
        start = os.path.join(home, "lkg", "current", "bin", "netskyd") + " run"
        detail = (
            f"no service manager and no shim: stop netskyd (pid {running['pid']}) and start {start}"
            if running["running"]
            else f"netskyd is not running; start it with: {start}"
        )
        hint = "hint: 'netskyctl service install' sets up a service manager and the shim"
        return {
            "ok": not running["running"],
            "how": None,
            "detail": detail,
            "hint": hint,
            "daemon": running,
        }
    timeout_s = SHIM_TIMEOUT_S if how == "shim" else RESTART_TIMEOUT_S
    rc, _stdout, stderr = run(cmd, timeout_s, env)
    if rc != 0:
        return {
            "ok": False,
            "how": how,
            "detail": f"{' '.join(cmd)} failed (exit {rc}): {stderr.strip()[-300:]}",
            "hint": "hint: 'netskyctl health' and the service manager's log say more",
            "daemon": daemon_info(home),
        }
    daemon = _wait_for_daemon(home, RESTART_TIMEOUT_S)
    runs_lkg = is_under(daemon["executable"], os.path.join(home, "lkg"))
    ok = daemon["running"] and runs_lkg
    detail = (
        f"restarted through {how}: netskyd pid {daemon['pid']} runs {daemon['executable']}"
        if daemon["running"]
        else f"restarted through {how}, but netskyd does not answer"
    )
    hint = "" if ok else "hint: 'netskyctl self-repair check' and 'netskyctl health' say why"
    return {"ok": ok, "how": how, "detail": detail, "hint": hint, "daemon": daemon}


def _stop(pid: int) -> bool:
    """SIGTERM ``pid`` (the daemon that answered hello) and wait for it to exit."""
    import signal
    import time

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                if f.read().rpartition(")")[2].split()[:1] == ["Z"]:
                    return True  # exited; its parent has not reaped it yet
        except ProcessLookupError:
            return True
        except OSError:
            pass  # no /proc (macOS): kill(pid, 0) alone decides
        time.sleep(0.2)
    return False


def _wait_for_daemon(home: str, timeout_s: float) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        info = daemon_info(home)
        if info["running"] or time.monotonic() > deadline:
            return info
        time.sleep(0.5)
