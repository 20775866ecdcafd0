"""Real servers on 127.0.0.1 for the owner-paging tests: SMTP (aiosmtpd) and HTTP.

Both are context managers that run in threads of their own, so async tests can use
them from the event loop and sync tests (or a subprocess under test) just the same::

    with SmtpServer("starttls", auth=("owner", "pw")) as smtp:
        ... EmailLeg(host=smtp.host, port=smtp.port, ca_file=smtp.ca_file, ...)
        [msg] = smtp.wait_for_messages(1)

    with HttpServer() as http:
        ... WebhookLeg(url=http.url + "/hook")
        [req] = http.wait_for_requests(1)

TLS certificates come from a throwaway trustme CA (the server's for ``127.0.0.1`` and
``localhost``); ``ca_file`` is that CA as a PEM file a client can trust. On exit every
thread is joined, every port closed and every temporary file removed.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (also: a port that refuses)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _Tls:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, and the CA as a
    PEM file in a temporary directory (removed by ``close``)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="netsky-test-ca-")
        ca = trustme.CA()
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST, "localhost").configure_cert(self.server_context)
        self.ca_file = Path(self._dir.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))

    def close(self) -> None:
        self._dir.cleanup()


class _Recorder(Generic[T]):
    """A list filled by server threads and waited on by tests."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._changed = threading.Condition()

    def add(self, item: T) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def snapshot(self) -> list[T]:
        with self._changed:
            return list(self._items)

    def wait_for(self, n: int, timeout_s: float, what: str) -> list[T]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._items) >= n, timeout_s):
                raise AssertionError(
                    f"expected {n} {what} within {timeout_s:g}s, got {len(self._items)}"
                )
            return list(self._items)


class _Controller(Controller):
    def factory(self) -> SMTP:
        # aiosmtpd warns about AUTH without STARTTLS even on an implicit-TLS port.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(self.handler, **self.SMTP_kwargs)


SmtpMode = Literal["starttls", "tls", "none"]


class SmtpServer:
    """An SMTP server on 127.0.0.1 (aiosmtpd's threaded Controller) that keeps what it
    receives.

    ``mode``: ``starttls`` (STARTTLS offered and required before MAIL), ``tls`` (implicit
    TLS from the first byte, like port 465) or ``none`` (plain text). ``auth``: a
    ``(user, password)`` pair that AUTH must present before MAIL (AUTH is offered only
    over TLS in ``starttls`` mode). ``fail_with``: an SMTP reply such as ``"550 mailbox
    unavailable"`` given to every RCPT and DATA. Attributes once entered: ``host``,
    ``port``, ``ca_file`` (the CA to trust, a PEM path; also set in ``none`` mode) and
    ``messages`` (the accepted messages as parsed EmailMessage objects, a copy).
    """

    host = HOST

    def __init__(
        self,
        mode: SmtpMode = "starttls",
        *,
        auth: tuple[str, str] | None = None,
        fail_with: str | None = None,
    ) -> None:
        self.mode = mode
        self.auth = auth
        self.fail_with = fail_with
        self.port = free_port()
        self._received: _Recorder[EmailMessage] = _Recorder()
        self._tls = _Tls()
        self.ca_file = self._tls.ca_file
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            kwargs |= {"tls_context": self._tls.server_context, "require_starttls": True}
        if auth is not None:
            # Only STARTTLS counts as TLS for aiosmtpd's auth_require_tls; on an
            # implicit-TLS connection AUTH must be allowed outright.
            kwargs |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": mode == "starttls",
            }
        self._controller = _Controller(
            self,
            hostname=HOST,
            port=self.port,
            ssl_context=self._tls.server_context if mode == "tls" else None,
            **kwargs,
        )

    @property
    def messages(self) -> list[EmailMessage]:
        return self._received.snapshot()

    def wait_for_messages(self, n: int, timeout_s: float = 10.0) -> list[EmailMessage]:
        """Block until at least ``n`` messages arrived; return them all. Raises
        AssertionError after ``timeout_s`` seconds."""
        return self._received.wait_for(n, timeout_s, "messages")

    def __enter__(self) -> Self:
        try:
            self._controller.start()
        except BaseException:
            self._tls.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._controller.stop()
        finally:
            self._tls.close()

    # aiosmtpd's hooks, by aiosmtpd's names (the server object is its own handler).

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        user, password = self.auth
        ok = (
            isinstance(data, LoginPassword)
            and data.login == user.encode()
            and data.password == password.encode()
        )
        # handled=False: aiosmtpd then answers 535 itself (True would mean we had).
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.fail_with:
            return self.fail_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_with:
            return self.fail_with
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self._received.add(msg)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Request:
    """One request as HttpServer saw it; ``headers`` keeps the last value of each name,
    in the case the client sent it (look up with ``header``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The header's value, looked up case-insensitively; None when absent."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class HttpServer:
    """An HTTP server on 127.0.0.1 (``http.server.ThreadingHTTPServer`` in a thread)
    that records every request and answers each with ``status`` and ``body``.

    ``status``, ``body`` and ``delay_s`` (seconds to wait before answering, after the
    request is recorded) may be changed while it runs. ``tls``: serve HTTPS with a
    certificate from a throwaway CA (``ca_file``, a PEM path; None without ``tls``).
    ``url`` is ``http://127.0.0.1:<port>`` (``https`` with tls), no trailing slash.
    """

    def __init__(
        self,
        *,
        status: int = 200,
        body: bytes = b"ok",
        delay_s: float = 0.0,
        tls: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.delay_s = delay_s
        self._received: _Recorder[Request] = _Recorder()
        self._stopping = threading.Event()
        self._tls = _Tls() if tls else None
        self.ca_file = self._tls.ca_file if self._tls else None
        self._httpd = ThreadingHTTPServer((HOST, 0), self._handler_class())
        # Handler threads are joined on close (not daemonic): nothing outlives the server.
        self._httpd.daemon_threads = False
        if self._tls is not None:
            # The handshake happens in the handler thread, not in accept(): a client
            # that never speaks cannot stall the server.
            self._httpd.socket = self._tls.server_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"HttpServer:{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{HOST}:{self.port}"

    @property
    def requests(self) -> list[Request]:
        return self._received.snapshot()

    def wait_for_requests(self, n: int, timeout_s: float = 10.0) -> list[Request]:
        """Block until at least ``n`` requests arrived; return them all. Raises
        AssertionError after ``timeout_s`` seconds."""
        return self._received.wait_for(n, timeout_s, "requests")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()  # cuts any delay_s short
        try:
            self._httpd.shutdown()
            self._httpd.server_close()  # closes the port, joins the handler threads
            self._thread.join()
        finally:
            if self._tls is not None:
                self._tls.close()

    def _handler_class(self) -> Callable[..., BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a silent client cannot hold a handler thread (and close) for long

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server._received.add(
                    Request(self.command, self.path, dict(self.headers.items()), body)
                )
                if server.delay_s:
                    server._stopping.wait(server.delay_s)
                try:
                    self.send_response(server.status)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    self.wfile.write(server.body)
                except OSError:
                    pass  # the client gave up (a timeout under test)

            do_GET = do_POST = do_PUT = _answer

            def handle(self) -> None:
                try:
                    super().handle()
                except OSError:
                    pass  # a failed TLS handshake (an untrusting client) or a reset

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
