"""``netskyctl drill NAME|all|list [--json] [--keep] [--deadline S]`` (docs/keepalive.md).

Each drill injects a real fault into a sandbox of its own (client.drills) and prints
its steps as they happen, then ``PASS name in 12.3s (...)`` or ``FAIL name in 9.1s:
reason``; "still waiting" lines go to stderr. ``--json`` prints the report (``all``:
``{"verdict", "drills": [reports]}``). Every report is also saved as
``drills/<ts>-<name>.json`` in NETSKY_HOME. Exit 0 pass, 1 fail, 2 unknown drill.

client.drills is imported inside the command: netskyctl's start-up stays as it was.
"""

from __future__ import annotations

import argparse
import json
import sys

from client.common import Usage, home_of, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add drill to netskyctl's subcommands (``common`` holds ``--json``)."""
    p = sub.add_parser(
        "drill",
        parents=[common],
        help="inject a real fault into a sandbox and judge the repair ('drill list')",
    )
    p.add_argument("name", nargs="?", help="a drill, 'all' (each in turn) or 'list'")
    p.add_argument(
        "--keep", action="store_true", help="keep each sandbox's NETSKY_HOME and say where"
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="S",
        help="each drill's whole budget in seconds (default 120); past it the drill fails",
    )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _note(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def cmd_drill(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl drill."""
    from client import drills

    if not args.name:
        raise Usage("drill needs a NAME, 'all' or 'list' (netskyctl drill list)")
    if args.name == "list":
        return _list(args, drills.DRILLS)
    if args.name != "all" and args.name not in drills.DRILLS:
        raise Usage(f"unknown drill {args.name!r} (known: {', '.join(drills.DRILLS)})")
    deadline = drills.DEFAULT_DEADLINE_S if args.deadline is None else args.deadline
    if not deadline > 0:
        raise Usage("--deadline must be a positive number of seconds")
    names = list(drills.DRILLS) if args.name == "all" else [args.name]
    human = not args.json
    reports: list[dict[str, Any]] = []
    for name in names:
        if human:
            _say(f"drill {name}: {drills.DRILLS[name].summary}")
        report = drills.run_drill(
            drills.DRILLS[name],
            deadline_s=deadline,
            keep=args.keep,
            environ=environ,
            echo=_say if human else None,
            progress=_note if human else None,
        )
        try:
            saved = str(drills.save_report(report, home_of(environ)))
        except OSError as e:  # the verdict still counts; say why it is not on disk
            _note(f"netskyctl: could not save the drill report: {e}")
            saved = "(not saved)"
        reports.append(report)
        if human:
            _say(drills.format_verdict(report))
            _say(f"report: {saved}" + (f"; sandbox kept: {report['home']}" if args.keep else ""))
        if report["reason"] == "interrupted":
            break
    failed = [r["drill"] for r in reports if r["verdict"] != "pass"]
    if args.json:
        body: Any = (
            reports[0]
            if args.name != "all"
            else {"verdict": "fail" if failed else "pass", "drills": reports}
        )
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    elif args.name == "all":
        passed = len(reports) - len(failed)
        _say(
            f"drills: {passed} passed, {len(failed)} failed"
            + (f" ({', '.join(failed)})" if failed else "")
        )
    return 1 if failed or len(reports) < len(names) else 0


def _list(args: argparse.Namespace, known: Mapping[str, Any]) -> int:
    rows = [
        {"drill": d.name, "summary": d.summary, "timings": list(d.timings)} for d in known.values()
    ]
    if args.json:
        sys.stdout.write(json.dumps({"drills": rows}, indent=2) + "\n")
    else:
        _say(table(("DRILL", "WHAT IT PROVES"), [(r["drill"], r["summary"]) for r in rows]))
    return 0


COMMANDS = {"drill": cmd_drill}
