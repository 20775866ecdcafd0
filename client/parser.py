"""netskyctl's command-line parser, built for the one command a call runs (stdlib only).

``COMMANDS`` names every subcommand, the module that adds its parser and runs it,
and its one-line help. ``build_parser(command)`` imports only that command's
module; the other commands are stubs with their name and help, so ``--help`` and
"invalid choice" read as they always have. Importing every module to build the
whole tree was a third of what a ``netskyctl status`` cost (bench/status_latency.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from netsky_shared import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

RUNTIMES = ("claude", "codex", "shell", "demo", "custom")

#: Every subcommand in ``--help`` order: name -> (the module that adds its parser
#: and runs it, its one-line help). "" is client.netskyctl (the RPC commands and
#: ``channel``, whose parser is here and whose commands run in client.channel).
#: A module's ``add_parsers(sub, common)`` adds its names with the same help (the
#: top-level ``--help`` lists this one; tests/unit/test_client_imports.py checks that
#: they agree); all but restarts, why and escalate (run by client.netskyctl) run them
#: as ``module.COMMANDS[name](args, environ)``.
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("", "daemon and per-agent state"),
    "ping": ("", "check that netskyd answers"),
    "up": ("", "bring up agent0, N clones and agentinfinity"),
    "down": ("", "stop every agent and keep them down"),
    "agent": ("", "bring up one agent (e.g. 'agent 3')"),
    "kill": ("", "kill an agent's session"),
    "restart": (
        "client.restarts",
        "planned restart of agent0 and N clones, with a handoff (agentinfinity survives)",
    ),
    "restarts": ("client.restarts", "restart history from meta.db"),
    "channel": ("", "the agent bus"),
    "clone": ("client.clone", "the work loop: brief a clone, follow it, kill it"),
    "harvest": (
        "client.harvest",
        "land a clone's commits on the target branch, only if the check passes",
    ),
    "cron": ("client.schedule", "recurring prompts (cron.toml)"),
    "loop": ("client.schedule", "self-paced follow-ups into an agent"),
    "notes": ("client.notes", "the agents' dated notes (no daemon)"),
    "imessage": ("client.owner", "agent0's iMessage to its owner"),
    "email": ("client.owner", "agent0's mail to its owner"),
    "incidents": ("client.incidents", "open incidents paged to the owner (no daemon needed)"),
    "ack": ("client.incidents", "acknowledge an incident (no daemon needed)"),
    "why": (
        "client.why",
        "what an agent is doing (busy, idle, waiting, limited, hung, dead), and why",
    ),
    "escalate": (
        "client.escalate",
        "page the owner on every configured leg (--direct: without netskyd)",
    ),
    "health": ("client.health", "health report: ok, degraded or down (no daemon needed)"),
    "doctor": ("client.doctor", "check the install: tmux, socket, units, ..."),
    "self-repair": ("client.selfrepair", "check, record or roll back to the last-known-good"),
    "service": ("client.service", "run netskyd under systemd/launchd with the keepalive shim"),
    "drill": (
        "client.drill",
        "inject a real fault into a sandbox and judge the repair ('drill list')",
    ),
}


def load(name: str) -> ModuleType:
    """Import the module ``name`` (``client.doctor``) and return it."""
    __import__(name)
    return sys.modules[name]


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS if a positive integer, else the
    terminal's (standard output's), else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    if sys.__stdout__ is None:
        return 80
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (ValueError, OSError):
        return 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with the width found as argparse finds it, minus its ``import shutil``.

    argparse makes a formatter for every ``add_argument`` (to check the metavar), and
    shutil brings zlib, bz2 and lzma: 1.7 ms of a 25 ms ``status``.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with ``HelpFormatter`` by default (subparsers are of the same class)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)


class WordsParser(ArgumentParser):
    """``ArgumentParser`` for which a word starting with ``-`` that names none of its
    options is a value, not an unknown option: ``clone brief --workspace -rf`` (netskyd
    makes the name safe) and ``clone report -x`` parse, where argparse would stop at
    "expected one argument" (``add_subparsers(parser_class=WordsParser)``)."""

    def _parse_optional(self, arg_string: str) -> Any:
        found = super()._parse_optional(arg_string)
        # (action, option, value), or from Python 3.12.7 a list of such tuples; no action
        # means no option of this parser goes by that name.
        first = found[0] if isinstance(found, list) and found else found
        if isinstance(first, tuple) and first[0] is None:
            return None
        return found


def build_parser(command: str | None = None, *, listing: bool = True) -> argparse.ArgumentParser:
    """netskyctl's parser, with the real parser of ``command`` and of the commands its module adds.

    ``listing``: also a stub (name and help only, from ``COMMANDS``) for every other
    command, so the top-level ``--help`` and an unknown command's "invalid choice"
    read as they always have without importing those modules. A command line whose
    first positional is ``command`` parses the same with or without the stubs.
    ``command`` None with ``listing`` False is no command at all.
    """
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    p = ArgumentParser(
        prog="netskyctl",
        parents=[common],
        description="Talk to netskyd, the netsky supervisor. Exit codes: 0 ok, 1 failed, "
        "2 usage, 3 daemon not running, 4 version skew, 75 temporary failure.",
    )
    p.add_argument("--version", action="version", version=f"netskyctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    chosen = COMMANDS[command][0] if command is not None else None
    for name, (module, help_) in COMMANDS.items():
        if name in sub.choices:
            continue  # its module added it with the name before (restarts, incidents)
        if name == command or (module and module == chosen):
            if module:
                load(module).add_parsers(sub, common)
            else:
                _add_own_parser(sub, common, name)
        elif listing:
            sub.add_parser(name, help=help_)
    return p


def _add_own_parser(
    sub: argparse._SubParsersAction[ArgumentParser],
    common: ArgumentParser,
    name: str,
) -> None:
    """Add the parser of ``name``, one of this module's commands (``COMMANDS[name][0]`` "")."""
    p = sub.add_parser(name, parents=[common], help=COMMANDS[name][1])
    if name == "up":
        p.add_argument("n", nargs="?", type=int, help="clones (default: the 'clones' setting)")
        p.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
        p.add_argument("--timeout", type=float, help="readiness deadline in seconds")
    elif name == "agent":
        p.add_argument("n", help="agent number or id: 3, agent3, infinity")
        p.add_argument("--runtime", choices=RUNTIMES, help="runtime for this agent")
        p.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
        p.add_argument("--timeout", type=float, help="readiness deadline in seconds")
    elif name == "kill":
        p.add_argument("agent")
    elif name == "channel":
        _add_channel_parsers(p, common)


def _add_channel_parsers(ch: ArgumentParser, common: ArgumentParser) -> None:
    chsub = ch.add_subparsers(dest="channel_command", metavar="SUBCOMMAND")
    send = chsub.add_parser("send", parents=[common], help="send an envelope (no daemon needed)")
    send.add_argument("agent", help="target agent")
    send.add_argument("text", nargs="?", help="message text ('-' reads standard input)")
    send.add_argument("--file", help="read the message text from this UTF-8 file instead")
    send.add_argument("--from", dest="sender", required=True, help="sending agent id")
    send.add_argument(
        "--kind",
        default="message",
        choices=("message", "brief", "report", "handoff", "cron", "loop", "escalation", "harvest"),
    )
    send.add_argument("--reply-to", dest="reply_to", default=None, help="envelope id answered")
    ls = chsub.add_parser("ls", parents=[common], help="envelope counts per agent (no daemon)")
    ls.add_argument("agent", nargs="?", help="only this agent")
    pk = chsub.add_parser("peek", parents=[common], help="what waits for an agent (no daemon)")
    pk.add_argument("agent")
    pk.add_argument("--limit", type=int, default=20, help="show at most N (0: all; default 20)")
    po = chsub.add_parser("poison", parents=[common], help="poisoned envelopes and why (no daemon)")
    po.add_argument("agent", nargs="?", help="only this agent")
    rt = chsub.add_parser(
        "retry", parents=[common], help="move a poisoned envelope back to its inbox (no daemon)"
    )
    rt.add_argument("id", help="envelope id or file name, or a unique prefix of either")
    rt.add_argument("--agent", help="look only in this agent's poison/")
    rp = chsub.add_parser(
        "replay", parents=[common], help="deliver an agent's recent envelopes again (daemon)"
    )
    rp.add_argument("agent")
    rp.add_argument(
        "--since", required=True, help="RFC 3339 time (2026-11-21T10:00:00Z) or age (30s, 2h, 1d)"
    )


def command_of(argv: Sequence[str]) -> tuple[str | None, bool]:
    """(the command ``argv`` runs, whether the parser needs every command listed).

    The command is the first word that is not an option, if it is one of
    ``COMMANDS``. The top-level options take no values, so that word is the
    first positional argparse sees, unless an earlier one (``-``, ``-1``, one after
    ``--``) is an unknown command; for that, for ``--help`` and for no or an unknown
    command the parser lists every command. Only ``--json`` before a known command
    needs no listing.
    """
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            if arg not in COMMANDS:
                return None, True
            return arg, any(a != "--json" for a in argv[:i])
    return None, True
