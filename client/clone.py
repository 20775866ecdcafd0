"""``netskyctl clone brief|report|status|ls|wait|kill``: the work loop (docs/work.md).

Stdlib only, like the rest of the client; every subcommand is one or a few calls of the
``clone.*`` methods (docs/protocol.md) and takes ``--json`` (the method's result as is).

- ``brief FILE|- --workspace NAME``: agent0 gives a clone a task in a fresh git clone
  (``workspaces/<name>/repo``, branch ``netsky/<name>``). The name goes to netskyd as
  typed; netskyd makes it safe. Prints the clone, its repository, branch and base, and
  what to run next. Exit 0 once the brief is recorded (a clone not ready yet gets it
  when it is), 2 for a bad brief or workspace, 75 when every clone slot is busy.
- ``report [--sha SHA] [--done] TEXT|-``: run by a clone (``AGENT_N`` in its session):
  a ``report`` envelope to agent0 naming its head and how far it is ahead of the base.
- ``status [N]``: one clone's latest brief in detail, or every open one; ``ls [--all]``:
  the same as a table.
- ``wait N --timeout S``: poll until the clone reported (exit 0), its brief failed or was
  killed (exit 1), or the deadline (exit 124, as timeout(1)).
- ``kill N [--rm [--force]]``: end the clone and close its brief; ``--rm`` also removes
  the workspace, refused (exit 1) while it holds commits never harvested unless ``--force``.
"""

from __future__ import annotations

import os
import sys
import time

from client.common import Usage, home_of, out, preview, setting, table
from client.parser import WordsParser
from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.errors import DaemonNotRunning
from netsky_shared.ids import agent_n, format_uptime, parse_agent, role_of
from netsky_shared.incidents import parse_rfc3339
from netsky_shared.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

SUBCOMMANDS = ("brief", "report", "status", "ls", "wait", "kill")
#: ``clone wait``'s exit code at its deadline (the one timeout(1) uses).
EXIT_TIMEOUT = 124
#: ``clone wait``: how often it asks, and how often it says so when stderr is no terminal.
WAIT_POLL_S = 0.5
PROGRESS_EVERY_S = 10.0
#: Dispatch states ``clone wait`` stops at: with exit 0, and with exit 1.
REPORTED = ("reported", "done", "harvested")
ENDED = ("failed", "killed")
#: Added to the longest wait netskyd may take, for the answer to travel.
MARGIN_S = 30.0


# ----- arguments -----------------------------------------------------------------------------


#: What a clone command that outlived its deadline says (netskyd finishes it anyway).
STILL_WORKING = "netskyd may still finish it: netskyctl clone ls"


def clone_agent(value: str) -> str:
    """The agent id of a clone from what a person types (``3``, ``agent3``). Raises Usage
    for an agent that is not a clone (agent0, agentinfinity) or no agent id at all."""
    try:
        agent = parse_agent(value)
    except ValueError as e:
        raise Usage(str(e)) from e
    if role_of(agent) != "clone":
        raise Usage(f"{agent} is not a clone: clones are agent1, agent2, ...")
    return agent


def reporting_agent(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The clone a ``report`` is from: ``--agent``, else ``AGENT_N`` of the clone's session
    (``3`` -> ``agent3``). Raises Usage when neither names a clone."""
    if args.agent:
        return clone_agent(args.agent)
    n = environ.get("AGENT_N", "").strip()
    if not n.isdigit() or int(n) == 0:
        where = f"AGENT_N is {n!r}" if n else "AGENT_N is not set"
        raise Usage(
            f"clone report is for clones: run it in a clone's session ({where}; agent0 "
            "briefs and harvests instead), or name the clone with --agent N"
        )
    return clone_agent(n)


def read_text(path: str, what: str) -> str:
    """The UTF-8 text of ``path`` (``-``: standard input). Raises Usage naming the file
    when it cannot be read or is not UTF-8."""
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Usage(f"the {what} in {name} is not UTF-8 text (byte {e.start}: {e.reason})") from e
    except OSError as e:
        raise Usage(f"cannot read the {what} file {name}: {e.strerror or e}") from e


def brief_timeout_s(environ: Mapping[str, str], wait_s: float) -> float:
    """How long ``clone brief`` waits for its answer: a clone of a large repository and
    its checkout (``git_timeout_s`` each), the clone's readiness (``ready_timeout_s``),
    ``--wait``, and a margin."""
    git_s = setting(environ, "git_timeout_s", 300)
    return 2 * git_s + setting(environ, "ready_timeout_s", 60) + wait_s + MARGIN_S


def _client(environ: Mapping[str, str]) -> Client:
    return Client(socket_path(home_of(environ)))


# ----- text ----------------------------------------------------------------------------------


def short_sha(sha: str | None) -> str:
    """The first 12 characters of a commit id, ``-`` for none."""
    return sha[:12] if sha else "-"


def _age(ts: str | None, now_s: float) -> str:
    then = parse_rfc3339(ts) if ts else None
    return "-" if then is None else format_uptime(max(0.0, now_s - then))


def _commits(n: int | None) -> str:
    return "?" if n is None else f"{n} commit{'' if n == 1 else 's'}"


def format_brief(res: dict[str, Any]) -> str:
    """A ``clone.brief`` result as text: the clone, where it works, and what next."""
    d = res["dispatch"]
    agent, n = d["agent"], agent_n(d["agent"])
    state = "ready" if res.get("ready") else "not ready yet (the brief waits in its inbox)"
    delivered = res.get("delivered")
    if delivered is not None:
        state += ", brief delivered" if delivered else ", brief not delivered yet"
    return "\n".join(
        [
            f"briefed {agent} ({d['runtime']}) into workspace {d['workspace']}",
            f"  repo:    {d['repo']}",
            f"  source:  {d['source_repo']}",
            f"  branch:  {d['branch']} from {d['base']} at {short_sha(d['base_sha'])}",
            f"  {agent}: {state}",
            "next:",
            f"  netskyctl clone wait {n} --timeout 3600   # until it reports",
            f"  netskyctl harvest {n}                      # then its commits onto {d['base']}",
        ]
    )


def format_report(res: dict[str, Any]) -> str:
    """A ``clone.report`` result as one line (a demo clone shows the first line)."""
    d = res["dispatch"]
    return (
        f"{d['agent']} {d['state']}: head {short_sha(d['head_sha'])}, {_commits(d['ahead'])} "
        f"ahead of {d['base']}; report {res['envelope'][:8]} sent to agent0"
    )


def format_dispatch(d: dict[str, Any], now_s: float | None = None) -> str:
    """One DispatchRow in detail (``clone status N``)."""
    now_s = time.time() if now_s is None else now_s
    session = "alive" if d.get("alive") else "not running"
    if d.get("alive"):
        session += ", ready" if d.get("ready") else ", not ready"
    lines = [
        f"{d['agent']}: {d['state']} (for {_age(d['state_ts'], now_s)}), "
        f"workspace {d['workspace']}",
        f"  repo:      {d['repo']} (a clone of {d['source_repo']})",
        f"  branch:    {d['branch']} from {d['base']} at {short_sha(d['base_sha'])}",
        f"  session:   {d['runtime']}, {session}",
        f"  briefed:   {d['ts']} ({d['brief_bytes']} bytes, envelope "
        f"{(d.get('brief_envelope') or '-')[:8]})",
    ]
    if d.get("head_sha"):
        lines.append(
            f"  head:      {short_sha(d['head_sha'])}, {_commits(d.get('ahead'))} ahead of "
            f"{d['base']} (reported {d.get('reported_ts') or '-'})"
        )
    if d.get("report"):
        lines.append(f"  report:    {preview(d['report'], 100)}")
    if d.get("harvested_sha"):
        lines.append(f"  harvested: up to {short_sha(d['harvested_sha'])}")
    if d.get("error"):
        lines.append(f"  error:     {d['error']}")
    n = agent_n(d["agent"])
    if d["state"] in ("reported", "done"):
        lines.append(f"  next:      netskyctl harvest {n}")
    elif d["state"] == "briefed":
        lines.append(f"  next:      netskyctl clone wait {n} --timeout 3600")
    return "\n".join(lines)


def format_ls(rows: list[dict[str, Any]], now_s: float | None = None) -> str:
    """DispatchRows as the ``clone ls`` table (AGE: since the brief)."""
    now_s = time.time() if now_s is None else now_s
    header = ("AGENT", "WORKSPACE", "STATE", "AHEAD", "HEAD", "ALIVE", "AGE")
    return table(
        header,
        [
            (
                d["agent"],
                d["workspace"],
                d["state"],
                None if d.get("ahead") is None else str(d["ahead"]),
                d.get("head_sha") and d["head_sha"][:12],
                "yes" if d.get("alive") else "no",
                _age(d["ts"], now_s),
            )
            for d in rows
        ],
    )


# ----- commands ------------------------------------------------------------------------------


def cmd_brief(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    text = read_text(args.file, "brief")
    if not text.strip():
        raise Usage(f"the brief in {'standard input' if args.file == '-' else args.file} is empty")
    if args.wait is not None and args.wait < 0:
        raise Usage("--wait takes seconds, 0 or more")
    params: dict[str, Any] = {"text": text, "workspace": args.workspace}
    if args.agent is not None:
        params["agent"] = int(agent_n(clone_agent(args.agent)))
    if args.runtime:
        params["runtime"] = args.runtime
    if args.repo is not None:
        params["repo"] = os.path.abspath(os.path.expanduser(args.repo))
    if args.base:
        params["base"] = args.base
    if args.wait:
        params["wait_s"] = args.wait
    with _client(environ) as client:
        res = client.call(
            protocol.CLONE_BRIEF,
            params,
            brief_timeout_s(environ, args.wait or 0.0),
            if_late=STILL_WORKING,
        )
    out(args, res, format_brief(res))
    return protocol.EXIT_OK


def cmd_report(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    agent = reporting_agent(args, environ)
    text = read_text("-", "report") if args.text == "-" else args.text
    if not text.strip():
        raise Usage("clone report needs a non-empty TEXT: what you did")
    params: dict[str, Any] = {"agent": agent, "text": text, "done": args.done}
    if args.sha:
        params["sha"] = args.sha
    with _client(environ) as client:
        timeout_s = setting(environ, "git_timeout_s", 300) * 2 + MARGIN_S
        res = client.call(protocol.CLONE_REPORT, params, timeout_s, if_late=STILL_WORKING)
    out(args, res, format_report(res))
    return protocol.EXIT_OK


def cmd_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    params = {"agent": clone_agent(args.n)} if args.n is not None else {}
    with _client(environ) as client:
        res = client.call(protocol.CLONE_STATUS, params)
    rows = res["clones"]
    now_s = time.time()
    if rows:
        text = "\n\n".join(format_dispatch(d, now_s) for d in rows)
    else:
        text = "no clone holds a brief ('netskyctl clone ls --all' lists past ones)"
    out(args, res, text)
    return protocol.EXIT_OK


def cmd_ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with _client(environ) as client:
        res = client.call(protocol.CLONE_STATUS, {"all": args.all})
    rows = res["clones"]
    if rows:
        text = format_ls(rows)
    else:
        text = "no briefs recorded" if args.all else "no clone holds a brief"
    out(args, res, text)
    return protocol.EXIT_OK


def cmd_wait(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Poll ``clone.status`` until the clone's latest brief is reported, ended, or the
    deadline passed (module docstring for the exit codes). netskyd not running at the
    start is exit 3 at once; one that goes away in between (a restart) is asked again
    until the deadline."""
    agent = clone_agent(args.n)
    if args.timeout <= 0:
        raise Usage("--timeout takes a positive number of seconds")
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    progress = Progress(agent, t0, quiet=args.json)
    client: Client | None = None
    row: dict[str, Any] = {}
    try:
        while True:
            try:
                if client is None:
                    client = _client(environ)
                    client.connect()
                row = client.call(protocol.CLONE_STATUS, {"agent": agent})["clones"][0]
            except DaemonNotRunning as e:
                if client is not None:
                    client.close()
                    client = None
                if not row or time.monotonic() >= deadline:
                    raise  # not there at the start, or never back: exit 3
                progress.note(f"netskyd is not answering ({e}); asking again")
            if row.get("state") in REPORTED + ENDED or time.monotonic() >= deadline:
                break
            progress.show(str(row.get("state")))
            time.sleep(max(0.0, min(WAIT_POLL_S, deadline - time.monotonic())))
    finally:
        progress.end()
        if client is not None:
            client.close()
    waited = time.monotonic() - t0
    state = row.get("state")
    if state in REPORTED:
        head = f"head {short_sha(row.get('head_sha'))}, {_commits(row.get('ahead'))} ahead"
        text = f"{agent} {state} after {waited:.0f}s: {head} of {row.get('base')}"
        if row.get("report"):
            text += f"\n  report: {preview(row['report'], 100)}"
        if state != "harvested":
            text += f"\nnext: netskyctl harvest {agent_n(agent)}"
        out(args, row, text)
        return protocol.EXIT_OK
    if state in ENDED:
        why = f": {row['error']}" if row.get("error") else ""
        out(args, row, f"{agent}'s brief {state} after {waited:.0f}s{why}")
        return protocol.EXIT_FAILED
    out(args, row, f"{agent} still {state} after {args.timeout:g}s")
    return EXIT_TIMEOUT


class Progress:
    """``clone wait``'s line on stderr: rewritten in place on a terminal, else one line
    every ``PROGRESS_EVERY_S``; nothing with ``quiet`` (``--json``)."""

    def __init__(self, agent: str, t0: float, *, quiet: bool) -> None:
        self.agent = agent
        self.t0 = t0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = t0
        self.drawn = False

    def show(self, state: str) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        line = f"  {self.agent}: {state}, {now - self.t0:.0f}s"
        if self.tty:
            sys.stderr.write(f"\r{line}\x1b[K")
            self.drawn = True
        elif now - self.last >= PROGRESS_EVERY_S:
            sys.stderr.write(line + "\n")
            self.last = now
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.end()
            sys.stderr.write(f"  {self.agent}: {text}\n")

    def end(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False


def cmd_kill(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    agent = clone_agent(args.n)
    if args.force and not args.rm:
        raise Usage("--force goes with --rm (it removes a workspace holding unharvested work)")
    params = {"agent": agent, "rm": args.rm, "force": args.force}
    # --rm counts unharvested commits (git) and deletes a whole repository.
    timeout_s = 2 * setting(environ, "git_timeout_s", 300) + MARGIN_S
    with _client(environ) as client:
        res = client.call(protocol.CLONE_KILL, params, timeout_s, if_late=STILL_WORKING)
    d = res["dispatch"]
    lines = [
        f"{agent} {'killed' if res['killed'] else 'was not running'}; "
        f"its brief in {d['workspace']} is {d['state']}"
    ]
    if res["removed"]:
        lines.append(f"workspace {d['workspace']} removed")
    elif args.rm:
        lines.append(f"workspace {d['workspace']} was already gone")
    else:
        lines.append(
            f"workspace kept at {d['repo']} (remove it: netskyctl clone kill {agent_n(agent)} --rm)"
        )
    out(args, res, "\n".join(lines))
    return protocol.EXIT_OK


def cmd_clone(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``netskyctl clone SUBCOMMAND``."""
    command = getattr(args, "clone_command", None)
    run = CLONE_COMMANDS.get(command or "")
    if run is None:
        raise Usage(f"clone needs a subcommand: {', '.join(SUBCOMMANDS)}")
    return run(args, environ)


CLONE_COMMANDS = {
    "brief": cmd_brief,
    "report": cmd_report,
    "status": cmd_status,
    "ls": cmd_ls,
    "wait": cmd_wait,
    "kill": cmd_kill,
}


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``clone`` and its subcommands to netskyctl's subcommands."""
    cl = sub.add_parser(
        "clone", parents=[common], help="the work loop: brief a clone, follow it, kill it"
    )
    # Any: typeshed wants the parents of a WordsParser to be WordsParsers too.
    csub: Any = cl.add_subparsers(
        dest="clone_command", metavar="SUBCOMMAND", parser_class=WordsParser
    )
    br = csub.add_parser(
        "brief", parents=[common], help="give a clone a task in a fresh clone of the repository"
    )
    br.add_argument("file", metavar="FILE", help="the brief, UTF-8 ('-': standard input)")
    br.add_argument(
        "--workspace", required=True, help="task name: workspaces/NAME/repo, branch netsky/NAME"
    )
    br.add_argument("--agent", help="this clone (default: the lowest free one)")
    br.add_argument("--runtime", choices=("claude", "codex", "shell", "demo", "custom"))
    br.add_argument("--repo", help="repository to clone (default: the 'repo' setting)")
    br.add_argument("--base", help="branch or commit to start from (default: the checked-out one)")
    br.add_argument(
        "--wait", type=float, metavar="S", help="also wait up to S seconds for the delivery"
    )
    rp = csub.add_parser("report", parents=[common], help="(in a clone) report work to agent0")
    rp.add_argument("text", metavar="TEXT", help="what you did ('-': standard input)")
    rp.add_argument("--sha", help="the commit to report (default: HEAD)")
    rp.add_argument("--done", action="store_true", help="the task is done")
    rp.add_argument("--agent", help="the reporting clone (default: $AGENT_N)")
    st = csub.add_parser("status", parents=[common], help="a clone's brief in detail, or all open")
    st.add_argument("n", nargs="?", metavar="N", help="clone number or id")
    ls = csub.add_parser("ls", parents=[common], help="briefs as a table")
    ls.add_argument("--all", action="store_true", help="also harvested, killed and failed ones")
    wt = csub.add_parser(
        "wait",
        parents=[common],
        help="wait until a clone reports (0), fails (1) or time's up (124)",
    )
    wt.add_argument("n", metavar="N", help="clone number or id")
    wt.add_argument("--timeout", type=float, required=True, metavar="S", help="deadline, seconds")
    kl = csub.add_parser("kill", parents=[common], help="end a clone and close its brief")
    kl.add_argument("n", metavar="N", help="clone number or id")
    kl.add_argument("--rm", action="store_true", help="also remove its workspace")
    kl.add_argument("--force", action="store_true", help="with --rm: even with unharvested work")


COMMANDS = {"clone": cmd_clone}
