"""netskyctl drill: STUB — filled in by its issue-7 work."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add drill to netskyctl's subcommands (``common`` holds ``--json``)."""
    sub.add_parser("drill", parents=[common], help="(not yet)")


def cmd_drill(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl drill."""
    return 1



COMMANDS = {"drill": cmd_drill}
