"""The ``tmux`` leg: ``display-message`` on every attached client of netsky's tmux server
and a marker in the status line (``status-right`` gains ``#{@netsky-page}`` while any
incident is open; the owner's own ``status-right`` is kept and put back)."""

from __future__ import annotations

from contextlib import suppress

import anyio

from netskyd.config.legs import LegContext, LegUnavailable, Page, TmuxLeg
from netskyd.escalation.legs.failure import LegFailed
from netskyd.escalation.legs.process import last_line, run, which

#: The status-line marker: ``status-right`` gains this while an incident is open.
MARKER = "#{@netsky-page}"
_PAGE_OPTION = "@netsky-page"
_SAVED_OPTION = "@netsky-status-right-saved"
_NO_SERVER = ("no server running", "error connecting to")


async def _tmux(ctx: LegContext, *args: str, check: bool = True) -> tuple[int, str, str]:
    """Run ``tmux [-L socket] args``; return (status, stdout, stderr).

    Raises LegUnavailable when tmux is missing or no server runs on the socket, and
    (with ``check``) LegFailed for any other non-zero exit.
    """
    tmux = which("tmux", ctx)
    if tmux is None:
        raise LegUnavailable("tmux is not installed")
    socket = ["-L", ctx.tmux_socket] if ctx.tmux_socket else []
    code, out, err = await run([tmux, *socket, *args], ctx)
    if code != 0 and any(s in err for s in _NO_SERVER):
        raise LegUnavailable(f"no tmux server on socket {ctx.tmux_socket or 'default'}")
    if code != 0 and check:
        raise LegFailed(f"tmux {args[0]}: {last_line(err) or f'exit status {code}'}")
    return code, out, err


async def _option(ctx: LegContext, name: str) -> str | None:
    """A global option's value, None when unset (a user option never set)."""
    code, out, _ = await _tmux(ctx, "show-options", "-gv", name, check=False)
    return out.removesuffix("\n") if code == 0 else None


async def _mark(ctx: LegContext, n_open: int) -> None:
    """Show ``n_open`` in the status line, or put the owner's status line back at 0."""
    current = await _option(ctx, "status-right") or ""
    if n_open:
        text = f"#[reverse,bold] netsky: {n_open} open — netskyctl incidents #[default] "
        await _tmux(ctx, "set-option", "-g", _PAGE_OPTION, text)
        if MARKER not in current:
            await _tmux(ctx, "set-option", "-g", _SAVED_OPTION, current)
            await _tmux(ctx, "set-option", "-g", "status-right", MARKER + current)
        return
    saved = await _option(ctx, _SAVED_OPTION)
    if saved is not None and MARKER in current:
        await _tmux(ctx, "set-option", "-g", "status-right", saved)
    await _tmux(ctx, "set-option", "-gqu", _SAVED_OPTION)
    await _tmux(ctx, "set-option", "-gqu", _PAGE_OPTION)


async def send(leg: TmuxLeg, page: Page, ctx: LegContext) -> str | None:
    """Mark the status line (with ``leg.status_line``), then show the page's title for
    ``leg.display_ms`` milliseconds on every attached client.

    Returns None, or ``no attached clients`` (after ``status line marked; `` when it
    was). Raises LegUnavailable when tmux is missing or no server runs on
    ``ctx.tmux_socket``, LegFailed when a tmux command fails or no client could be
    shown the message (a client that detached meanwhile is no failure on its own).
    """
    if leg.status_line:
        await _mark(ctx, len(page.open_incidents))
    _, out, _ = await _tmux(ctx, "list-clients", "-F", "#{client_name}")
    clients = out.split()
    message = page.title().replace("#", "##")  # display-message takes a format
    shown, failures = 0, []
    for client in clients:
        try:
            await _tmux(ctx, "display-message", "-c", client, "-d", str(leg.display_ms), message)
            shown += 1
        except LegFailed as e:  # a client that detached meanwhile is no failure
            failures.append(str(e))
    if clients and not shown:
        raise LegFailed(failures[-1])
    if not clients:
        return ("status line marked; " if leg.status_line else "") + "no attached clients"
    return None


async def refresh_marker(ctx: LegContext, open_incidents: list[dict[str, str]]) -> None:
    """Bring the tmux status-line marker up to date with ``open_incidents`` (the
    incidents still open, e.g. after an ack elsewhere): ``N open`` while any is open,
    the owner's ``status-right`` put back at none. Bounded by ``ctx.timeout_s``;
    swallows every failure (no server, tmux missing, timeout)."""
    with anyio.move_on_after(ctx.timeout_s), suppress(LegUnavailable, LegFailed, OSError):
        await _mark(ctx, len(open_incidents))
