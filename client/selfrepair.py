"""netskyctl self-repair: STUB — filled in by its issue-7 work."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add self-repair to netskyctl's subcommands (``common`` holds ``--json``)."""
    sub.add_parser("self-repair", parents=[common], help="(not yet)")


def cmd_self_repair(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl self-repair."""
    return 1



COMMANDS = {"self-repair": cmd_self_repair}
