"""The IMAP side of the email source and of ``email draft``: aioimaplib with a deadline on
every call (docs/owner.md).

``Mailbox`` is one connection: ``open()`` connects (implicit TLS, or none for a local
server), logs in and selects the mailbox, learning its UIDVALIDITY and whether the server
offers IDLE (RFC 2177); ``uids_after(uid)`` lists newer messages, ``fetch(uid)`` reads one
whole (``BODY.PEEK[]``: the owner's \\Seen flags are left alone), ``size(uid)`` its size
first, ``wait(timeout)`` idles until the server announces new mail (or polls: it sleeps),
``append`` files a message (``email draft``). Every failure is ``ImapError`` with one line
saying which step failed; aioimaplib is asyncio-only, like aiosmtplib for the email leg.
"""

from __future__ import annotations

import re
import ssl
from types import TracebackType
from typing import Any

import anyio
from aioimaplib import aioimaplib

from netskyd.config.owner import OwnerEmail

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(Exception):
    """An IMAP step failed (connect, login, select, search, fetch, append, a deadline)."""


def tls_context(cfg: OwnerEmail) -> ssl.SSLContext:
    """The TLS context for ``cfg``: the system's trust, or ``ca_file``'s."""
    if cfg.ca_file is not None:
        return ssl.create_default_context(cafile=str(cfg.ca_file.expanduser()))
    return ssl.create_default_context()


class Mailbox:
    """One IMAP connection to ``cfg``'s server (module docstring). Use as an async
    context manager, or ``open()`` and ``close()``."""

    def __init__(self, cfg: OwnerEmail, password: str, mailbox: str | None = None) -> None:
        self.cfg = cfg
        self.password = password
        self.mailbox = mailbox or cfg.mailbox
        self.uidvalidity = 0
        self.idle = False
        self._client: Any = None

    async def __aenter__(self) -> Mailbox:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _step(self, what: str, call: Any) -> Any:
        """Await one aioimaplib call with the deadline; a NO/BAD answer, a timeout or a
        lost connection is ImapError naming ``what``."""
        try:
            with anyio.fail_after(self.cfg.timeout_s):
                res = await call
        except TimeoutError as e:
            raise ImapError(f"{what}: no answer within {self.cfg.timeout_s:g}s") from e
        except (OSError, aioimaplib.AioImapException, ssl.SSLError) as e:
            raise ImapError(f"{what}: {type(e).__name__}: {e}") from e
        # A command answers a Response (result, lines); idle_start answers its task.
        result = getattr(res, "result", None) if isinstance(res, tuple) else None
        if result is not None and result != "OK":
            lines = [ln.decode(errors="replace") if isinstance(ln, bytes | bytearray) else str(ln)
                     for ln in res.lines]  # fmt: skip
            raise ImapError(f"{what}: {result} {' '.join(lines)[:200]}")
        return res

    async def open(self) -> None:
        """Connect, log in, select. Raises ImapError."""
        cfg = self.cfg
        port = cfg.imap_port()
        if cfg.security == "tls":
            self._client = aioimaplib.IMAP4_SSL(
                host=cfg.host, port=port, timeout=cfg.timeout_s, ssl_context=tls_context(cfg)
            )
        else:
            self._client = aioimaplib.IMAP4(host=cfg.host, port=port, timeout=cfg.timeout_s)
        where = f"{cfg.host}:{port}"
        await self._step(f"connect to {where}", self._client.wait_hello_from_server())
        await self._step(f"login as {cfg.username} at {where}",
                         self._client.login(cfg.username, self.password))  # fmt: skip
        res = await self._step(f"select {self.mailbox}", self._client.select(self.mailbox))
        for line in res.lines:
            m = _UIDVALIDITY.search(bytes(line)) if isinstance(line, bytes | bytearray) else None
            if m:
                self.uidvalidity = int(m.group(1))
        caps: set[str] = getattr(self._client.protocol, "capabilities", set()) or set()
        self.idle = "IDLE" in {str(c).upper() for c in caps}

    async def close(self) -> None:
        """Log out (with the deadline), then drop the connection whatever happened."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            with anyio.move_on_after(min(self.cfg.timeout_s, 5.0)):
                if client.get_state() in ("AUTH", "SELECTED"):
                    await client.logout()
        except Exception:  # noqa: BLE001 - closing; the transport goes below anyway
            pass
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()

    async def uids_after(self, uid: int) -> list[int]:
        """UIDs greater than ``uid``, ascending. Raises ImapError."""
        res = await self._step("search", self._client.uid_search(f"UID {uid + 1}:*"))
        found: list[int] = []
        for line in res.lines:
            if isinstance(line, bytes | bytearray) and not line.startswith(b"SEARCH"):
                found += [int(t) for t in bytes(line).split() if t.isdigit()]
        return sorted(u for u in set(found) if u > uid)  # "N:*" always names the newest

    async def max_uid(self) -> int:
        """The newest UID in the mailbox (0 when empty)."""
        return max(await self.uids_after(0), default=0)

    async def size(self, uid: int) -> int | None:
        """``RFC822.SIZE`` of message ``uid`` (None when it is gone). Raises ImapError."""
        call = self._client.uid("fetch", str(uid), "(RFC822.SIZE)")
        res = await self._step(f"fetch size of {uid}", call)
        for line in res.lines:
            if isinstance(line, bytes | bytearray):
                m = _FETCH_SIZE.search(bytes(line))
                if m:
                    return int(m.group(1))
        return None

    async def fetch(self, uid: int) -> bytes | None:
        """Message ``uid`` whole, without setting \\Seen (None when it is gone). Raises
        ImapError."""
        res = await self._step(f"fetch {uid}", self._client.uid("fetch", str(uid), "(BODY.PEEK[])"))
        for i, line in enumerate(res.lines):
            if isinstance(line, bytearray):  # aioimaplib hands the literal as a bytearray
                return bytes(line)
            if isinstance(line, bytes) and line.endswith(b"}") and i + 1 < len(res.lines):
                nxt = res.lines[i + 1]
                if isinstance(nxt, bytes | bytearray):
                    return bytes(nxt)
        return None

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for new mail: IDLE where the server offers it (True
        when it announced EXISTS), else a plain sleep (False). Raises ImapError."""
        if not self.idle:
            await anyio.sleep(timeout_s)
            return False
        client = self._client
        idle = await self._step("idle", client.idle_start(timeout=timeout_s))
        news = False
        try:
            with anyio.move_on_after(timeout_s + self.cfg.timeout_s):
                push = await client.wait_server_push(timeout=timeout_s + 1)
                lines = push if isinstance(push, list) else [push]
                news = any(b"EXISTS" in bytes(ln) for ln in lines
                           if isinstance(ln, bytes | bytearray))  # fmt: skip
        except TimeoutError:
            pass
        finally:
            client.idle_done()
        try:
            with anyio.fail_after(self.cfg.timeout_s):
                await idle
        except TimeoutError as e:
            raise ImapError(f"idle: DONE not answered within {self.cfg.timeout_s:g}s") from e
        except (OSError, aioimaplib.AioImapException) as e:
            raise ImapError(f"idle: {type(e).__name__}: {e}") from e
        return news

    async def append(self, raw: bytes, mailbox: str, flags: str = r"(\Draft \Seen)") -> None:
        """File ``raw`` in ``mailbox`` with ``flags``. Raises ImapError."""
        await self._step(f"append to {mailbox}", self._client.append(raw, mailbox=mailbox,
                                                                      flags=flags))  # fmt: skip
