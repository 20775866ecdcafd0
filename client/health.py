"""netskyctl health, doctor: STUB — filled in by its issue-7 work."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add health, doctor to netskyctl's subcommands (``common`` holds ``--json``)."""
    sub.add_parser("health", parents=[common], help="(not yet)")
    sub.add_parser("doctor", parents=[common], help="(not yet)")


def cmd_health(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl health."""
    return 1


def cmd_doctor(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """netskyctl doctor."""
    return 1



COMMANDS = {"health": cmd_health, "doctor": cmd_doctor}
