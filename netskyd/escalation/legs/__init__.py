"""Running the escalation legs: ``send(name, leg, page, ctx)``, and
``python -m netskyd.escalation.legs``.

The configuration and the data types live in ``netskyd.config.legs``; this package is the
part that talks to the world (osascript, SMTP, HTTP, the sentinel file, tmux), one module
per leg kind, named in ``KINDS``. Every leg runs under ``anyio.fail_after(ctx.timeout_s)``;
a child process is started in its own session and its whole process group is killed when
the deadline passes or the caller cancels (``process.run``). The SMTP leg needs the asyncio
backend (aiosmtplib).

A new leg kind is its settings model in ``netskyd.config.legs`` (its name in ``LEG_TYPES``),
its module here with ``async def send(leg, page, ctx) -> str | None`` (see ``LegKind``), and
its line in ``KINDS``.

``python -m netskyd.escalation.legs`` runs one leg in a process of its own: a JSON request on
stdin, a LegResult as one JSON line on stdout (see ``main``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import httpx
from pydantic import TypeAdapter, ValidationError

from netskyd.config.legs import (
    DesktopLeg,
    EmailLeg,
    IMessageLeg,
    Leg,
    LegContext,
    LegResult,
    LegUnavailable,
    Page,
    Status,
    TmuxLeg,
    WebhookLeg,
    elapsed_ms,
)
from netskyd.escalation.legs import desktop, email, imessage, tmux_banner, webhook
from netskyd.escalation.legs.desktop import write_sentinel
from netskyd.escalation.legs.failure import LegFailed, describe
from netskyd.escalation.legs.tmux_banner import MARKER, refresh_marker

__all__ = [
    "KINDS",
    "MARKER",
    "LegFailed",
    "LegKind",
    "main",
    "refresh_marker",
    "send",
    "write_sentinel",
]


class LegKind(Protocol):
    """A leg kind's module, as ``KINDS`` holds it."""

    # ``leg`` is Any because each kind takes its own settings model; ``send`` below picks
    # the module by ``leg.type``, so the model always matches.
    async def send(self, leg: Any, page: Page, ctx: LegContext) -> str | None:
        """Deliver ``page`` on ``leg`` once: None, or a note on a page delivered with a
        caveat ("no attached clients"). Raises LegUnavailable when the leg cannot work
        here, LegFailed (or any other exception) when it failed. The deadline is the
        caller's (``send`` below cancels it after ``ctx.timeout_s``)."""
        ...


#: Each leg kind's module by its ``type`` (``netskyd.config.legs.LEG_TYPES``), one line each.
KINDS: Final[Mapping[str, LegKind]] = {
    "imessage": imessage,
    "email": email,
    "webhook": webhook,
    "desktop": desktop,
    "tmux": tmux_banner,
}


async def send(
    name: str,
    leg: IMessageLeg | EmailLeg | WebhookLeg | DesktopLeg | TmuxLeg,
    page: Page,
    ctx: LegContext,
) -> LegResult:
    """Run one leg once and say how it went; never raises for the leg's own trouble.

    ``status`` is ``delivered`` (``reason`` None, or a note such as "no attached
    clients"), ``failed`` with a one-line reason ("SMTP 535 ...", "HTTP 500: <body>",
    "timed out after 10s") or ``unavailable`` (LegUnavailable: not macOS, a credential
    variable unset, no tmux server). Returns within ``ctx.timeout_s`` seconds; children
    it started are killed by then. Cancellation from outside propagates.
    """
    t0 = time.monotonic()

    def result(status: Status, reason: str | None) -> LegResult:
        return LegResult(name, status, reason, elapsed_ms(t0))

    try:
        with anyio.fail_after(ctx.timeout_s):
            reason = await KINDS[leg.type].send(leg, page, ctx)
    except LegUnavailable as e:
        return result("unavailable", str(e))
    except (TimeoutError, httpx.TimeoutException):
        return result("failed", f"timed out after {ctx.timeout_s:g}s")
    except Exception as e:  # anything else too: a page must never take its caller down
        return result("failed", describe(e))
    return result("delivered", reason)


# --- python -m netskyd.escalation.legs ---------------------------------------------------------


def main() -> None:
    """Run one leg from a JSON request on stdin; print its LegResult as one JSON line.

    stdin: ``{"name": str, "leg": {<leg config, with "type">}, "page": Page.to_json(),
    "timeout_s": float, "home": str, "tmux_socket": str | null}``. stdout:
    ``{"leg", "status", "reason", "duration_ms"}``. The leg's environment (secrets,
    PATH, DISPLAY) is this process's. Exit status 0 whenever a result was printed
    (whatever the status), 2 with a message on stderr for a malformed request.
    """
    try:
        request = json.loads(sys.stdin.read())
        name = request["name"]
        if not isinstance(name, str):
            raise TypeError("name must be a string")
        leg: IMessageLeg | EmailLeg | WebhookLeg | DesktopLeg | TmuxLeg = TypeAdapter(
            Leg
        ).validate_python(request["leg"])
        page = TypeAdapter(Page).validate_python(request["page"])
        socket = request.get("tmux_socket")
        ctx = LegContext(
            environ=dict(os.environ),
            timeout_s=float(request["timeout_s"]),
            home=Path(request["home"]),
            tmux_socket=str(socket) if socket is not None else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as e:
        sys.stderr.write(f"netskyd.escalation.legs: bad request: {type(e).__name__}: {e}\n")
        sys.exit(2)
    result = anyio.run(send, name, leg, page, ctx)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
