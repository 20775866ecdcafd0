"""``netskyctl harvest N|WORKSPACE [--onto BRANCH] [--check CMD] [--no-push]`` (docs/work.md).

Stdlib only, like the rest of the client. netskyd applies the clone's commits (those after
its base, or after its last harvest) onto ``--onto`` (default: the branch it was briefed
from) in a scratch worktree, runs the check (``--check``, default the ``check_command``
setting; ``--check ''``: none) and moves the branch only when it passes, then pushes where
the branch has an upstream (unless ``--no-push`` or ``harvest_push = false``).

Output: the outcome; for ``landed`` the commits, the branch's old and new tip, the check's
log and where it was pushed, then how to remove the workspace (exit 0); for ``conflict``,
``red`` or ``failed`` the reason and that the branch is unchanged (exit 1). A harvest that
cannot start (uncommitted changes in the target, nothing to harvest) is exit 1 too, an
unknown clone or workspace exit 2. ``--json``: the HarvestResult (docs/protocol.md).
"""

from __future__ import annotations

from client.clone import short_sha
from client.common import home_of, out, setting
from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

#: Added to the longest a harvest may take in netskyd, for git calls between the bounded
#: steps and the answer to travel.
MARGIN_S = 60.0


def harvest_timeout_s(environ: Mapping[str, str]) -> float:
    """How long ``harvest`` waits for its answer: the check's deadline
    (``check_timeout_s``), the fetch and the cherry-pick (``git_timeout_s`` each), a margin."""
    return (
        setting(environ, "check_timeout_s", 600)
        + 2 * setting(environ, "git_timeout_s", 300)
        + MARGIN_S
    )


def format_harvest(res: dict[str, Any]) -> str:
    """A HarvestResult as text (module docstring)."""
    who = f"{res['workspace']} ({res['agent']})"
    n = res["commits"]
    commits = f"{n} commit{'' if n == 1 else 's'}"
    onto = res["onto"]
    if res["check"]:
        code = res.get("check_exit")
        ran = f"exited {code}" if code is not None else "did not finish"
        check = f"`{res['check']}` {ran}" + (f" (log: {res['log']})" if res.get("log") else "")
    else:
        check = "none"
    if res["outcome"] == "landed":
        lines = [
            f"landed: {commits} of {who} on {onto}: "
            f"{short_sha(res['onto_before'])} -> {short_sha(res['onto_after'])}",
            f"  check:  {check}",
            f"  pushed: {res['pushed'] or 'no (no upstream, or push is off)'}",
        ]
        if res.get("reason"):
            lines.append(f"  note:   {res['reason']}")
        lines.append(f"remove the workspace: {res['remove_with']}")
        return "\n".join(lines)
    lines = [
        f"{res['outcome']}: {commits} of {who} not harvested; {onto} is unchanged "
        f"(at {short_sha(res['onto_before'])})",
        f"  reason: {res.get('reason') or '-'}",
    ]
    if res.get("conflicts"):
        lines.append(f"  conflicts: {', '.join(res['conflicts'])}")
    if res["outcome"] != "conflict" and res["check"]:
        lines.append(f"  check:  {check}")
    return "\n".join(lines)


def cmd_harvest(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``netskyctl harvest`` (module docstring): exit 0 landed, 1 otherwise."""
    params: dict[str, Any] = {"target": args.target, "push": not args.no_push}
    if args.onto:
        params["onto"] = args.onto
    if args.check is not None:
        params["check"] = args.check
    timeout_s = harvest_timeout_s(environ)
    with Client(socket_path(home_of(environ))) as client:
        res = client.call(
            protocol.HARVEST,
            params,
            timeout_s,
            if_late="the harvest may still finish in netskyd (journal event work.harvested; "
            "'netskyctl clone ls --all' shows what it harvested)",
        )
    out(args, res, format_harvest(res))
    return protocol.EXIT_OK if res["outcome"] == "landed" else protocol.EXIT_FAILED


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``harvest`` to netskyctl's subcommands."""
    hv = sub.add_parser(
        "harvest",
        parents=[common],
        help="land a clone's commits on the target branch, only if the check passes",
    )
    hv.add_argument("target", metavar="N|WORKSPACE", help="clone number or id, or workspace name")
    hv.add_argument("--onto", metavar="BRANCH", help="target branch (default: the brief's base)")
    hv.add_argument(
        "--check",
        metavar="CMD",
        help="shell command that must pass (default: the check_command setting; '': none)",
    )
    hv.add_argument("--no-push", action="store_true", help="do not push the branch after it moved")


COMMANDS = {"harvest": cmd_harvest}
