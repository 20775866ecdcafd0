"""``netskyctl service install|uninstall|status``: run netskyd under systemd or launchd.

``install`` copies the shim to ``$NETSKY_HOME/bin/netsky-shim``, writes ``service.env``,
the units (systemd) or plists (launchd) and ``state/install-selected``, then enables
them: ``systemctl --user daemon-reload`` and ``systemctl --user enable --now
netskyd.service netsky-shim.timer``, or ``launchctl bootstrap gui/<uid> <plist>``.
``uninstall`` undoes that and leaves the agents' tmux sessions running. ``status`` says
which files are there and current, what the manager says, and the shim's last run.
The work is in netskyd.service and client.unit_texts (stdlib only, like this
module); docs/keepalive.md has the files.

Exit codes: 0 done (status: installed, current and running), 1 failed (the hint says
what next; files written stay), 2 usage.
"""

from __future__ import annotations

import argparse
import sys

from client.common import Usage, home_of, out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SUBCOMMANDS = ("install", "uninstall", "status")
#: client.unit_texts.MANAGERS, repeated here: netskyctl builds its parser on every run
#: and netskyd.service's imports (subprocess, pathlib, dataclasses) would slow every command.
MANAGERS = ("systemd", "launchd", "none")


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``service`` to netskyctl's subcommands (``common`` holds ``--json``)."""
    sv = sub.add_parser(
        "service",
        parents=[common],
        help="run netskyd under systemd/launchd with the keepalive shim",
    )
    ssub = sv.add_subparsers(dest="service_command", metavar="SUBCOMMAND")
    helps = {
        "install": "write the shim, service.env and the units/plists, then enable them",
        "uninstall": "disable and remove them (the agents keep running)",
        "status": "installed files, whether they are current, and what the manager says",
    }
    for name in SUBCOMMANDS:
        p = ssub.add_parser(name, parents=[common], help=helps[name])
        p.add_argument(
            "--manager",
            choices=MANAGERS,
            help="service manager (default: the last install's, from service.env; else "
            "systemd on Linux, launchd on macOS)",
        )
        p.add_argument(
            "--unit-dir",
            help="where the units/plists go (default: $NETSKY_UNIT_DIR, else the last "
            "install's, else ~/.config/systemd/user or ~/Library/LaunchAgents)",
        )
        if name != "status":
            p.add_argument(
                "--dry-run", action="store_true", help="say what would be done; touch nothing"
            )
            p.add_argument(
                "--no-enable",
                action="store_true",
                help="files only: run no systemctl/launchctl",
            )


def cmd_service(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``netskyctl service SUBCOMMAND``."""
    from pathlib import Path

    from client import unit_texts as service_files
    from client import units as service

    command = getattr(args, "service_command", None)
    if command not in SUBCOMMANDS:
        raise Usage(f"service needs a subcommand: {', '.join(SUBCOMMANDS)}")
    svc = service_files.plan(
        environ, Path(home_of(environ)), manager=args.manager, unit_dir=args.unit_dir
    )
    if command == "status":
        st = service.status(svc)
        out(args, st, format_status(st))
        return 0 if st["ok"] else 1
    try:
        if command == "install":
            result = service.install(svc, dry_run=args.dry_run, enable=not args.no_enable)
        else:
            result = service.uninstall(svc, dry_run=args.dry_run, disable=not args.no_enable)
    except service_files.ServiceError as e:
        sys.stderr.write(f"netskyctl: {e}\n")
        return 1
    out(args, result.to_json(), format_result(result.to_json()))
    if not result.ok and not args.json:
        failed = [s for s in result.steps if not s.ok]
        sys.stderr.write(f"netskyctl: service {command} failed at: {failed[0].target}\n")
    return 0 if result.ok else 1


def format_result(res: dict[str, Any]) -> str:
    """install/uninstall as text: one line per step (what was written, removed or run,
    and what came of it), then the notes and the hint."""
    verbs = {"write": "wrote", "remove": "removed", "run": "ran", "skip": "skipped"}
    if res["dry_run"]:
        verbs = {"write": "would write", "remove": "would remove", "run": "would run"}
    lines = [f"{res['command']} ({res['manager']}, NETSKY_HOME={res['home']})"]
    for s in res["steps"]:
        head = f"{verbs.get(s['action'], s['action'])} {s['target']}"
        lines.append(f"  {head}" + (f" -> {s['detail']}" if s["detail"] else ""))
    lines += res["notes"]
    if res["hint"]:
        lines.append(f"hint: {res['hint']}")
    return "\n".join(lines)


def format_status(st: dict[str, Any]) -> str:
    """``service status`` as text."""
    where = f" (units in {st['unit_dir']})" if st["unit_dir"] else ""
    lines = [
        f"manager: {st['manager']}{where}",
        f"home: {st['home']}  selected install: {st['selected']}",
    ]
    for f in st["files"]:
        mark = "missing" if not f["present"] else ("stale" if f["current"] is False else "ok")
        lines.append(f"  {mark:<8}{f['path']}")
    if any(f["current"] is False for f in st["files"]):
        lines.append(
            "  (stale: differs from what this install writes; "
            "`netskyctl service install` rewrites it)"
        )
    for name, u in st["units"].items():
        if "is-enabled" in u:
            lines.append(f"{name}: {u['is-enabled']}, {u['is-active']}")
        else:
            state = "loaded" if u.get("loaded") else "not loaded"
            state += f", {u['state']}" if u.get("state") else ""
            state += f", pid {u['pid']}" if u.get("pid") else ""
            lines.append(f"{name}: {state}")
    last = st["shim_last"]
    if last:
        lines.append(
            f"last shim run: {last.get('ts')} {last.get('verdict')} "
            f"(daemon pid {last.get('daemon_pid') or '-'}): {last.get('detail') or ''}".rstrip()
        )
    else:
        lines.append("last shim run: none yet (logs/shim.jsonl is empty)")
    return "\n".join(lines)


COMMANDS = {"service": cmd_service}
