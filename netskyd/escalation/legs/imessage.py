"""The ``imessage`` leg: ``osascript`` tells Messages.app to send the page to each of
``to``; ``unavailable`` on anything but macOS."""

from __future__ import annotations

from pathlib import Path

from netsky_shared.imessage import SEND_SCRIPT
from netskyd.config.legs import IMessageLeg, LegContext, LegUnavailable, Page
from netskyd.escalation.legs.failure import LegFailed
from netskyd.escalation.legs.process import last_line, run, script_args, which


async def send(leg: IMessageLeg, page: Page, ctx: LegContext) -> str | None:
    """Send the page's title and text to each of ``leg.to``, one osascript run each; None.

    Raises LegUnavailable off macOS or when ``leg.command`` is not on PATH, LegFailed
    naming every recipient it failed for (with osascript's last line of stderr), OSError
    when the command cannot start.
    """
    if ctx.platform != "darwin":
        raise LegUnavailable(
            f"iMessage needs macOS (osascript and Messages.app); this is {ctx.platform}"
        )
    command = which(leg.command, ctx)
    if command is None:
        raise LegUnavailable(f"{leg.command} not found on PATH")
    # The text and the recipient travel as argv: nothing is spliced into the script.
    script = script_args(SEND_SCRIPT)
    text = f"{page.title()}\n{page.text()}"
    failures = []
    for recipient in leg.to:
        code, _, err = await run([command, *script, text, recipient], ctx)
        if code != 0:
            failures.append(f"{recipient}: {last_line(err) or f'exit status {code}'}")
    if failures:
        raise LegFailed(f"{Path(command).name} failed for " + "; ".join(failures))
    return None
