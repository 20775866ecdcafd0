"""netskyctl service: STUB — filled in by its issue-7 work."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add service to netskyctl's subcommands (``common`` holds ``--json``)."""
    sub.add_parser("service", parents=[common], help="(not yet)")


def cmd_service(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl service."""
    return 1



COMMANDS = {"service": cmd_service}
