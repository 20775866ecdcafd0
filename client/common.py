"""What netskyctl's command modules share: settings lookup, output, tables (stdlib only)."""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import Any


PREVIEW_CHARS = 80


class Usage(Exception):
    """Raised for a command line that makes no sense (exit 2)."""


def config(environ: Mapping[str, str]) -> dict[str, Any]:
    path_s = environ.get("NETSKY_CONFIG")
    home = os.path.expanduser(environ.get("NETSKY_HOME") or "~/.netsky")
    path = os.path.expanduser(path_s) if path_s else os.path.join(home, "config.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return {}
    import tomllib  # only when there is a file: the import is ~15 ms of start-up

    try:
        return tomllib.loads(text)
    except ValueError:
        return {}


def home_of(environ: Mapping[str, str]) -> str:
    """NETSKY_HOME as the daemon computes it: env, else config.toml's ``home``, else ~/.netsky."""
    home = environ.get("NETSKY_HOME")
    if not home and environ.get("NETSKY_CONFIG"):
        configured = config(environ).get("home")
        home = configured if isinstance(configured, str) else None
    return os.path.abspath(os.path.expanduser(home or "~/.netsky"))


def setting(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(f"NETSKY_{name.upper()}")
    if raw is None:
        raw = config(environ).get(name, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def out(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    elif text:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


def table(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> str:
    """Left-aligned columns two spaces apart; non-printable characters show as '?'."""
    cells = [list(header)] + [
        ["-" if c is None else "".join(ch if ch.isprintable() else "?" for ch in c) for c in r]
        for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def preview(text: object, limit: int = PREVIEW_CHARS) -> str:
    """One line of at most ``limit`` chars; whitespace and control chars become single spaces."""
    s = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
