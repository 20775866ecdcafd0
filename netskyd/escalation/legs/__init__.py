"""Running the escalation legs: ``send(name, leg, page, ctx)``, and
``python -m netskyd.escalation.legs``.

The configuration and the data types live in ``netskyd.config.legs``; this package is the part
that talks to the world (osascript, SMTP, HTTP, the sentinel file, tmux). Every leg runs
under ``anyio.fail_after(ctx.timeout_s)``; a child process is started in its own session
and its whole process group is killed when the deadline passes or the caller cancels
(``process.run``).
The SMTP leg needs the asyncio backend (aiosmtplib).

``python -m netskyd.escalation.legs`` runs one leg in a process of its own: a JSON request on
stdin, a LegResult as one JSON line on stdout (see ``main``).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import time
from contextlib import suppress
from dataclasses import asdict
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import aiosmtplib
import anyio
import httpx
from pydantic import TypeAdapter, ValidationError

from netsky_shared.maildir import atomic_write_bytes
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
from netskyd.escalation.legs.failure import LegFailed, describe, one_line
from netskyd.escalation.legs.process import last_line, run, script_args, which

__all__ = ["MARKER", "LegFailed", "main", "refresh_marker", "send", "write_sentinel"]

#: The status-line marker: ``status-right`` gains this while an incident is open.
MARKER = "#{@netsky-page}"
_PAGE_OPTION = "@netsky-page"
_SAVED_OPTION = "@netsky-status-right-saved"
_NO_SERVER = ("no server running", "error connecting to")
_IMESSAGE_SCRIPT = (
    "on run argv",
    'tell application "Messages"',
    "send (item 1 of argv) to participant (item 2 of argv) "
    "of (1st account whose service type = iMessage)",
    "end tell",
    "end run",
)
_NOTIFY_SCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)
#: ntfy's Priority (5 max .. 1 min) and Tags (emoji short codes) by severity.
_PRIORITY = {"critical": "5", "warning": "4", "info": "3"}
_TAGS = {"critical": "rotating_light", "warning": "warning", "info": "information_source"}


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
            match leg:
                case IMessageLeg():
                    reason = await _imessage(leg, page, ctx)
                case EmailLeg():
                    reason = await _email(leg, page, ctx)
                case WebhookLeg():
                    reason = await _webhook(leg, page, ctx)
                case DesktopLeg():
                    reason = await _desktop(leg, page, ctx)
                case TmuxLeg():
                    reason = await _tmux_leg(leg, page, ctx)
    except LegUnavailable as e:
        return result("unavailable", str(e))
    except (TimeoutError, httpx.TimeoutException):
        return result("failed", f"timed out after {ctx.timeout_s:g}s")
    except Exception as e:  # anything else too: a page must never take its caller down
        return result("failed", describe(e))
    return result("delivered", reason)


# --- imessage ------------------------------------------------------------------------


async def _imessage(leg: IMessageLeg, page: Page, ctx: LegContext) -> str | None:
    if ctx.platform != "darwin":
        raise LegUnavailable(
            f"iMessage needs macOS (osascript and Messages.app); this is {ctx.platform}"
        )
    command = which(leg.command, ctx)
    if command is None:
        raise LegUnavailable(f"{leg.command} not found on PATH")
    # The text and the recipient travel as argv: nothing is spliced into the script.
    script = script_args(_IMESSAGE_SCRIPT)
    text = f"{page.title()}\n{page.text()}"
    failures = []
    for recipient in leg.to:
        code, _, err = await run([command, *script, text, recipient], ctx)
        if code != 0:
            failures.append(f"{recipient}: {last_line(err) or f'exit status {code}'}")
    if failures:
        raise LegFailed(f"{Path(command).name} failed for " + "; ".join(failures))
    return None


# --- email ---------------------------------------------------------------------------


def _email_message(leg: EmailLeg, page: Page) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = page.title()
    msg["From"] = leg.sender
    msg["To"] = ", ".join(leg.to)
    msg["Date"] = formatdate(usegmt=True)
    # An explicit domain: make_msgid's default asks DNS for our FQDN, which can hang.
    msg["Message-ID"] = make_msgid(domain=leg.sender.rpartition("@")[2] or "netsky.invalid")
    msg["X-Netsky-Incident"] = page.incident
    msg["X-Netsky-Key"] = page.key
    msg["X-Netsky-Severity"] = page.severity
    msg.set_content(page.text())
    return msg


async def _email(leg: EmailLeg, page: Page, ctx: LegContext) -> str | None:
    password = leg.password.resolve(ctx.environ) if leg.password is not None else None
    tls_context = (
        ssl.create_default_context(cafile=str(leg.ca_file.expanduser()))
        if leg.ca_file is not None
        else None
    )
    errors, _ = await aiosmtplib.send(
        _email_message(leg, page),
        hostname=leg.host,
        port=leg.effective_port(),
        use_tls=leg.security == "tls",
        start_tls=leg.security == "starttls",
        username=leg.username,
        password=password,
        timeout=ctx.timeout_s,
        tls_context=tls_context,
    )
    if errors:  # some recipients refused, the rest accepted: delivered, with a note
        return "refused: " + "; ".join(
            f"{rcpt} ({r.code} {one_line(r.message)})" for rcpt, r in errors.items()
        )
    return None


# --- webhook -------------------------------------------------------------------------


def _header_text(text: str) -> str:
    """``text`` as an HTTP header value: ASCII as is, else an RFC 2047 encoded word."""
    if text.isascii():
        return text
    return f"=?UTF-8?B?{base64.b64encode(text.encode()).decode('ascii')}?="


async def _webhook(leg: WebhookLeg, page: Page, ctx: LegContext) -> str | None:
    url = leg.url if isinstance(leg.url, str) else leg.url.resolve(ctx.environ)
    headers: dict[str, str] = {}
    if leg.format == "text":  # ntfy's convention
        all_clear = page.kind == "all-clear"
        headers = {
            "Title": _header_text(page.title()),
            "Priority": "2" if all_clear else _PRIORITY[page.severity],
            "Tags": "white_check_mark" if all_clear else _TAGS[page.severity],
            "Content-Type": "text/plain; charset=utf-8",
        }
    headers |= leg.headers
    if leg.token is not None:
        headers["Authorization"] = f"Bearer {leg.token.resolve(ctx.environ)}"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(leg.ca_file.expanduser()))
        if leg.ca_file is not None
        else True
    )
    async with httpx.AsyncClient(timeout=ctx.timeout_s, verify=verify) as client:
        if leg.format == "json":
            payload = {**page.to_json(), "title": page.title(), "text": page.text()}
            response = await client.post(url, json=payload, headers=headers)
        else:
            response = await client.post(url, content=page.text().encode(), headers=headers)
    if not response.is_success:
        body = one_line(response.text)
        raise LegFailed(f"HTTP {response.status_code}" + (f": {body}" if body else ""))
    return None


# --- desktop -------------------------------------------------------------------------


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


_DISPLAY_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
_URGENCY = {"critical": "critical", "warning": "normal", "info": "low"}


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


async def _desktop(leg: DesktopLeg, page: Page, ctx: LegContext) -> str | None:
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


# --- tmux ----------------------------------------------------------------------------


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


async def _tmux_leg(leg: TmuxLeg, page: Page, ctx: LegContext) -> str | None:
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
