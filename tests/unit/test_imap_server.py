"""The IMAP test fixture (tests/imap_server.py) against a real dovecot on 127.0.0.1.

Skipped when dovecot is not installed (scripts/test installs it on Linux with apt-get).
"""

from __future__ import annotations

import imaplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.imap_server import ImapServer, StallingProxy, dovecot_path, process_alive

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        dovecot_path() is None,
        reason="dovecot is not installed (scripts/test installs dovecot-imapd on Linux)",
    ),
]

MESSAGE = (
    b"From: agent0 <agent0@example.org>\r\n"
    b"To: owner <owner@example.org>\r\n"
    b"Subject: envelope 1\r\n"
    b"Message-ID: <1@netsky.test>\r\n"
    b"\r\n"
    b"first body line\r\n"
)


@pytest.fixture
def imap() -> Iterator[ImapServer]:
    with ImapServer() as server:
        yield server


def capabilities(server: ImapServer) -> set[str]:
    """The post-login CAPABILITY words, upper-cased."""
    with server.connect() as conn:
        typ, data = conn.capability()
        assert typ == "OK"
        return {word.upper() for line in data for word in line.decode().split()}


def test_tls_login_with_the_right_password_and_refusal_with_a_wrong_one(
    imap: ImapServer,
) -> None:
    ctx = ssl.create_default_context(cafile=str(imap.ca_file))
    conn = imaplib.IMAP4_SSL(imap.host, imap.port, ssl_context=ctx, timeout=10)
    try:
        typ, _ = conn.login("owner", "pw")
        assert typ == "OK"
        assert isinstance(conn.sock, ssl.SSLSocket)
    finally:
        conn.logout()
    with pytest.raises(imaplib.IMAP4.error), imap.connect("owner", password="wrong"):
        pass


def test_the_certificate_is_only_trusted_through_ca_file(imap: ImapServer) -> None:
    # A default context (system CAs) must not trust the throwaway certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(
            imap.host, imap.port, ssl_context=ssl.create_default_context(), timeout=10
        )


def test_plain_text_mode_allows_login_without_tls() -> None:
    with ImapServer(tls=False, users={"agent0": "secret"}) as server:
        conn = imaplib.IMAP4(server.host, server.port, timeout=10)
        try:
            assert conn.login("agent0", "secret")[0] == "OK"
        finally:
            conn.logout()


def test_deliver_then_fetch_and_drafts_exists(imap: ImapServer) -> None:
    assert imap.messages() == []
    imap.deliver(MESSAGE)
    imap.deliver(MESSAGE.replace(b"envelope 1", b"envelope 2"), mailbox="Drafts")
    assert imap.messages() == [MESSAGE]
    [draft] = imap.messages(mailbox="Drafts")
    assert b"Subject: envelope 2" in draft
    with imap.connect() as conn:
        typ, data = conn.list()
        assert typ == "OK"
        listing = b"\n".join(line for line in data if isinstance(line, bytes))
    assert b"\\Drafts" in listing and b"INBOX" in listing


def test_users_have_separate_maildirs() -> None:
    with ImapServer(users={"owner": "pw", "agent1": "pw1"}) as server:
        server.deliver(MESSAGE, user="agent1")
        assert server.messages(user="agent1") == [MESSAGE]
        assert server.messages(user="owner") == []


@pytest.mark.parametrize("idle", [True, False])
def test_idle_is_advertised_only_when_asked(idle: bool) -> None:
    with ImapServer(idle=idle) as server:
        caps = capabilities(server)
    assert "IMAP4REV1" in caps
    assert ("IDLE" in caps) is idle


def test_stop_then_start_keeps_port_messages_and_uidvalidity(imap: ImapServer) -> None:
    imap.deliver(MESSAGE)
    port, validity = imap.port, imap.uidvalidity()
    imap.stop()
    assert imap.pids() == set()
    with pytest.raises(OSError):
        socket.create_connection((imap.host, port), timeout=2).close()
    imap.start()
    assert imap.port == port
    assert imap.messages() == [MESSAGE]
    assert imap.uidvalidity() == validity


def test_every_dovecot_process_is_gone_after_exit() -> None:
    with ImapServer() as server:
        with server.connect() as conn:
            # A logged-in session: an imap process exists besides the master's helpers.
            seen = server.pids()
            assert conn.noop()[0] == "OK"
        seen |= server.pids()
        root = server.root
        assert len(seen) > 1
        assert "starting up" in server.log_text()
    assert not root.exists()
    assert [pid for pid in seen if process_alive(pid)] == []


def test_stalling_proxy_accepts_and_never_answers() -> None:
    with StallingProxy() as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        assert proxy.accepted == 1
        port = proxy.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
