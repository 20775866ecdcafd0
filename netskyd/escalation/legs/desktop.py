"""The ``desktop`` leg: the sentinel file (default ``$NETSKY_HOME/OWNER-PAGE.txt``) lists
every open incident and is removed when none is open; plus a desktop notification
(``notify-send`` where a display or session bus exists, ``osascript`` on macOS) when
``notify`` is on. The file is what counts as delivered."""

from __future__ import annotations

from pathlib import Path

import anyio

from netsky_shared.maildir import atomic_write_bytes
from netskyd.config.legs import DesktopLeg, LegContext, Page
from netskyd.escalation.legs.process import last_line, run, script_args, which

_NOTIFY_SCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)
_DISPLAY_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
_URGENCY = {"critical": "critical", "warning": "normal", "info": "low"}


def write_sentinel(path: Path, page: Page) -> None:
    """Write the owner-page sentinel at ``path``, or remove it when nothing is open.

    The file lists ``page.open_incidents`` (``{"id", "subject", "severity",
    "opened_ts", "ack_command"}`` each) with the command that acknowledges each, then the page's own
    title and text. Written atomically: a temporary file in the same directory (made
    if missing), renamed over ``path``. A missing file is fine when removing. Raises
    OSError when the file cannot be written or removed.
    """
    if not page.open_incidents:
        path.unlink(missing_ok=True)
        return
    n = len(page.open_incidents)
    lines = [f"netsky needs you: {n} open incident{'s' if n != 1 else ''}"]
    for inc in page.open_incidents:
        iid = inc.get("id", "?")
        lines.append(
            f"- {iid} [{inc.get('severity', '?')}] {inc.get('subject', '')} "
            f"(since {inc.get('opened_ts', '?')})  "
            f"ack: {inc.get('ack_command') or f'netskyctl ack {iid}'}"
        )
    text = "\n".join([*lines, "", page.title(), page.text(), ""])
    atomic_write_bytes(path, text.encode("utf-8"), mode=0o600)  # 0600, as mkstemp made it


async def _notify(page: Page, ctx: LegContext) -> str | None:
    """Raise a desktop notification; return None, or why there was none."""
    if ctx.platform == "darwin":
        tool, args = "osascript", [*script_args(_NOTIFY_SCRIPT), page.title(), page.text()]
    elif ctx.platform.startswith("linux"):
        if not any(ctx.environ.get(v) for v in _DISPLAY_VARS):
            return "no display"
        urgency = _URGENCY[page.severity]
        tool, args = "notify-send", ["-a", "netsky", "-u", urgency, "--", page.title(), page.text()]
    else:
        return f"not supported on {ctx.platform}"
    command = which(tool, ctx)
    if command is None:
        return f"{tool} not found"
    # Half the budget at most: the sentinel is written already and counts as delivered.
    with anyio.move_on_after(ctx.timeout_s / 2):
        try:
            code, _, err = await run([command, *args], ctx)
        except OSError as e:
            return f"failed: {e.strerror or e}"
        return f"failed: {last_line(err) or f'exit status {code}'}" if code else None
    return "timed out"


async def send(leg: DesktopLeg, page: Page, ctx: LegContext) -> str | None:
    """Write (or remove) the sentinel at ``leg.path`` (None: ``ctx.home/OWNER-PAGE.txt``),
    then, with ``leg.notify``, raise a desktop notification within ``ctx.timeout_s / 2``.

    Returns None, or a note when the notification did not happen: ``sentinel written;
    no desktop notification (no display)``, ``sentinel removed; desktop notification
    failed: <why>``. Raises OSError when the sentinel cannot be written or removed.
    """
    path = leg.path.expanduser() if leg.path is not None else ctx.home / "OWNER-PAGE.txt"
    await anyio.to_thread.run_sync(write_sentinel, path, page, abandon_on_cancel=True)
    if not leg.notify:
        return None
    why_not = await _notify(page, ctx)
    if why_not is None:
        return None
    done = "sentinel written" if page.open_incidents else "sentinel removed"
    if why_not.startswith(("failed", "timed out")):
        return f"{done}; desktop notification {why_not}"
    return f"{done}; no desktop notification ({why_not})"
