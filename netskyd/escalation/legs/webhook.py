"""The ``webhook`` leg: an HTTP POST through httpx; ``format = "json"`` posts the Page as
JSON, ``format = "text"`` posts the text with ``Title``/``Priority``/``Tags`` headers
(ntfy's convention). 2xx is delivered."""

from __future__ import annotations

import base64
import ssl

import httpx

from netskyd.config.legs import LegContext, Page, WebhookLeg
from netskyd.escalation.legs.failure import LegFailed, one_line

#: ntfy's Priority (5 max .. 1 min) and Tags (emoji short codes) by severity.
_PRIORITY = {"critical": "5", "warning": "4", "info": "3"}
_TAGS = {"critical": "rotating_light", "warning": "warning", "info": "information_source"}


def _header_text(text: str) -> str:
    """``text`` as an HTTP header value: ASCII as is, else an RFC 2047 encoded word."""
    if text.isascii():
        return text
    return f"=?UTF-8?B?{base64.b64encode(text.encode()).decode('ascii')}?="


async def send(leg: WebhookLeg, page: Page, ctx: LegContext) -> str | None:
    """POST the page to ``leg.url``; None when the answer is 2xx.

    ``json``: the Page's JSON with ``title`` and ``text`` added; ``text``: the text as
    UTF-8 with ntfy's headers. ``leg.headers`` are added last (they win), then
    ``Authorization: Bearer <token>``. Each HTTP step waits ``ctx.timeout_s`` seconds at
    most. Raises LegFailed ``HTTP <status>: <body's first line>`` for any other answer,
    LegUnavailable when the URL or token reference is unset, httpx's errors (connection
    refused, timeouts), OSError (the CA file).
    """
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
