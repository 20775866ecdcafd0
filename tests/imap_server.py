"""A real IMAP server for tests: a private dovecot on 127.0.0.1, plus a proxy that stalls.

``ImapServer`` writes a throwaway dovecot.conf into a temporary directory and runs
``dovecot -F -c CONF`` as a child process of the test, as the current user. Everything
the server owns lives in that directory: base_dir (its Unix sockets), state_dir, the
log, a passwd-file with the users and one maildir per user (``INBOX`` and ``Drafts``).
It listens only on 127.0.0.1, on a free port, with implicit TLS by default (a throwaway
trustme CA; ``ca_file`` is that CA as a PEM file a client trusts)::

    if dovecot_path() is None:
        pytest.skip("dovecot is not installed (scripts/test installs it on Linux)")
    with ImapServer(users={"owner": "pw"}) as imap:
        ... client(host=imap.host, port=imap.port, ca_file=imap.ca_file, ...)
        imap.deliver(b"From: a@b\\r\\nSubject: hi\\r\\n\\r\\nbody\\r\\n")
        imap.stop()   # the client sees the server go away...
        imap.start()  # ...and come back on the same port with the same mail
        [raw] = imap.messages("owner", "Drafts")

``idle=False`` leaves IDLE out of the advertised capabilities, so a client has to poll.
``StallingProxy`` is a port that accepts connections and then never says a word (for
connect/greeting timeouts). On exit every process is ended and every file removed.
Debian: ``apt-get install dovecot-imapd``; ``scripts/lib.sh::ensure_dovecot`` does it
without starting the system service.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import trustme

from tests.owner_servers import HOST, free_port

DOVECOT = "/usr/sbin/dovecot"
START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
CLIENT_TIMEOUT_S = 10.0

# dovecot 2.3's built-in post-login CAPABILITY (imap-common.h CAPABILITY_STRING) without
# IDLE. Setting imap_capability replaces the list (pre- and post-login) rather than
# editing it, so idle=False has to spell out the rest.
_CAPABILITY_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES"
    " THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT"
    " CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH"
    " ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY"
    " PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)


class DovecotFailed(RuntimeError):
    """Raised when the private dovecot does not start (answer ``* OK``) or stop within
    its deadline; the message carries the tail of its log."""


def dovecot_path() -> str | None:
    """The dovecot binary (``/usr/sbin/dovecot``, else ``dovecot`` on PATH), or None
    when it is not installed (tests then skip)."""
    if os.access(DOVECOT, os.X_OK):
        return DOVECOT
    return shutil.which("dovecot")


def _run_as() -> tuple[int, int]:
    """The (uid, gid) dovecot runs as: the current user's, or ``nobody``'s when that is
    root (dovecot refuses to run its login processes as root, and a root test run
    should not need the package's system accounts)."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def process_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie nobody reaped counts as gone:
    PID 1 in a container may never reap dovecot's orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            return True
        return False
    # Field 3 is the state; the command name before it is in parentheses and may
    # contain spaces, so split after the last ")".
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _process_group(pgid: int) -> set[int]:
    """Live pids whose process group is ``pgid`` (Linux /proc; empty elsewhere)."""
    pids: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the name: state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.add(int(entry.name))
    return pids


class ImapServer:
    """A private dovecot IMAP server on 127.0.0.1 with maildirs in a temporary directory.

    ``tls``: implicit TLS on the port (like 993) with a throwaway trustme certificate
    for 127.0.0.1/localhost; otherwise plain text with plaintext LOGIN allowed.
    ``users``: login name -> password (``{PLAIN}`` in a passwd-file); each user has
    ``INBOX`` and ``Drafts`` (special-use ``\\Drafts``), created at first login.
    ``idle``: when False, IDLE is not advertised in CAPABILITY. Raises ValueError for a
    name or password with ``:`` or a line break (the passwd-file format).

    dovecot runs as the current user; under root it runs as ``nobody`` (dovecot will not
    run its login processes as root) and the temporary directory is chowned to it.

    Attributes: ``host`` (``127.0.0.1``), ``port`` (int, fixed for the object's life,
    kept across ``stop``/``start``), ``ca_file`` (Path of the CA PEM to trust; set in
    plain mode too), ``root`` (the temporary directory). ``__enter__`` starts dovecot
    (raises DovecotFailed if it does not answer within 10 s, FileNotFoundError if
    dovecot is not installed: check ``dovecot_path()`` first and skip); ``__exit__``
    stops it and removes the directory.
    """

    host = HOST

    def __init__(
        self,
        *,
        tls: bool = True,
        users: dict[str, str] | None = None,
        idle: bool = True,
    ) -> None:
        self.tls = tls
        self.users = dict(users) if users is not None else {"owner": "pw"}
        for name, pw in self.users.items():
            # passwd-file fields are colon-separated, one user a line.
            if not name or any(c in name + pw for c in ":\n\r"):
                raise ValueError(f"user {name!r}: no ':' or line breaks in names or passwords")
        self.idle = idle
        self.port = free_port()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.root = Path()
        self.ca_file = Path()
        self._conf = Path()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> Self:
        binary = dovecot_path()
        if binary is None:
            raise FileNotFoundError("dovecot is not installed (apt-get install dovecot-imapd)")
        # A short prefix: dovecot's Unix sockets live under base_dir and sun_path is
        # limited to 108 bytes.
        self._dir = tempfile.TemporaryDirectory(prefix="netsky-imap-")
        try:
            self.root = Path(self._dir.name)
            self._write_config()
            self.start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None

    def start(self) -> None:
        """Start dovecot (again) on ``port`` with the same config and maildirs; return
        once the port answers ``* OK``. Raises DovecotFailed after 10 s or when dovecot
        exits early. A no-op while it is running."""
        if self._proc is not None and self._proc.poll() is None:
            return
        binary = dovecot_path()
        assert binary is not None
        uid, gid = _run_as()
        as_root = os.geteuid() == 0
        with (self.root / "stderr.log").open("ab") as stderr:
            # Its own process group, so stop() can find every child dovecot forked.
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self._conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                user=uid if as_root else None,
                group=gid if as_root else None,
                extra_groups=[] if as_root else None,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise DovecotFailed(f"dovecot exited with {code}:\n{self._log_tail()}")
            try:
                # One probe must not eat the whole deadline if a handshake hangs.
                self._greeting(timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except (OSError, DovecotFailed) as e:
                last_error = e
                time.sleep(0.05)
        self.stop()
        raise DovecotFailed(
            f"dovecot did not answer on {HOST}:{self.port} within {START_DEADLINE_S:g}s"
            f" ({last_error}):\n{self._log_tail()}"
        )

    def stop(self) -> None:
        """End dovecot and every process it forked: SIGTERM to the master by pid, then
        SIGKILL (by pid) to whatever is left after 5 s. A no-op when it is not running."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        group = self.pids(proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_DEADLINE_S)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while True:
            # Children dovecot forked after we looked count too: they share the group.
            left = {p for p in group if process_alive(p)} | _process_group(proc.pid)
            if not left:
                return
            if time.monotonic() >= deadline:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    def pids(self, proc: subprocess.Popen[bytes] | None = None) -> set[int]:
        """Pids of the running dovecot master and every live process it forked (its
        process group); empty when stopped."""
        proc = proc if proc is not None else self._proc
        if proc is None or proc.poll() is not None:
            return set()
        return {proc.pid} | _process_group(proc.pid)

    def log_text(self) -> str:
        """dovecot's log so far (log_path and info_log_path, plus its stderr)."""
        parts = []
        for name in ("dovecot.log", "stderr.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- IMAP helpers (stdlib imaplib, 10 s timeout) ---------------------------

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts ``ca_file`` (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @contextlib.contextmanager
    def connect(self, user: str = "owner", password: str | None = None) -> Iterator[imaplib.IMAP4]:
        """An imaplib connection logged in as ``user`` (password from ``users`` unless
        given); logged out on exit. Raises imaplib.IMAP4.error on a refused login."""
        if self.tls:
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                HOST, self.port, ssl_context=self.client_ssl_context(), timeout=CLIENT_TIMEOUT_S
            )
        else:
            conn = imaplib.IMAP4(HOST, self.port, timeout=CLIENT_TIMEOUT_S)
        try:
            conn.login(user, self.users[user] if password is None else password)
            yield conn
        finally:
            # logout() closes the socket even when the LOGOUT command fails.
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def deliver(self, raw: bytes, user: str = "owner", mailbox: str = "INBOX") -> None:
        """Put ``raw`` (a whole RFC 5322 message, CRLF line ends preferred) into
        ``mailbox`` of ``user`` with IMAP APPEND. Raises imaplib.IMAP4.error on refusal."""
        with self.connect(user) as conn:
            typ, data = conn.append(_quote(mailbox), None, None, raw)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"APPEND {mailbox}: {typ} {data!r}")

    def messages(self, user: str = "owner", mailbox: str = "INBOX") -> list[bytes]:
        """Every message in ``mailbox`` of ``user``, raw bytes, in UID order (read with
        BODY.PEEK[], so \\Seen flags are left alone)."""
        with self.connect(user) as conn:
            _ok(conn.select(_quote(mailbox), readonly=True), f"SELECT {mailbox}")
            typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"FETCH {mailbox}: {typ} {data!r}")
            # An empty mailbox answers "1:*" with nothing (or [None]).
            return [item[1] for item in data if isinstance(item, tuple)]

    def uidvalidity(self, user: str = "owner", mailbox: str = "INBOX") -> int:
        """UIDVALIDITY of ``mailbox`` of ``user`` (IMAP STATUS)."""
        with self.connect(user) as conn:
            typ, data = conn.status(_quote(mailbox), "(UIDVALIDITY)")
            _ok((typ, data), f"STATUS {mailbox}")
            line = data[0]
            text = line.decode() if isinstance(line, bytes) else str(line)
            m = re.search(r"UIDVALIDITY (\d+)", text)
            if m is None:
                raise imaplib.IMAP4.error(f"no UIDVALIDITY in {text!r}")
            return int(m.group(1))

    # -- internals ------------------------------------------------------------

    def _greeting(self, timeout_s: float) -> bytes:
        """Connect once and read the first line; raise unless it starts ``* OK``."""
        with socket.create_connection((HOST, self.port), timeout=timeout_s) as raw:
            sock: socket.socket = raw
            if self.tls:
                sock = self.client_ssl_context().wrap_socket(raw, server_hostname=HOST)
            line = sock.recv(4096)
            if not line.startswith(b"* OK"):
                raise DovecotFailed(f"unexpected greeting {line!r}")
            return line

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _write_config(self) -> None:
        root = self.root
        uid, gid = _run_as()
        user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
        # dovecot wants base_dir world-readable (it fixes it itself, with a warning).
        (root / "run").mkdir(mode=0o755)
        (root / "state").mkdir(mode=0o700)
        for name in self.users:
            (root / "mail" / name).mkdir(mode=0o700, parents=True)

        self.ca_file = root / "ca.pem"
        ca = trustme.CA()
        cert = ca.issue_cert(HOST, "localhost")
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(root / "key.pem"))
        # Leaf first, then the chain (trustme issues leaves from an intermediate-free CA,
        # but the list form is right either way).
        with (root / "cert.pem").open("wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        (root / "key.pem").chmod(0o600)

        passwd = root / "passwd"
        passwd.write_text(
            "".join(
                f"{name}:{{PLAIN}}{pw}:{uid}:{gid}::{root / 'mail' / name}::\n"
                for name, pw in self.users.items()
            )
        )
        passwd.chmod(0o600)

        tls_port, plain_port = (self.port, 0) if self.tls else (0, self.port)
        tls_settings = (
            f"ssl = required\nssl_cert = <{root / 'cert.pem'}\nssl_key = <{root / 'key.pem'}\n"
            if self.tls
            else "ssl = no\n"
        )
        capability = "" if self.idle else f"imap_capability = {_CAPABILITY_WITHOUT_IDLE}\n"
        self._conf = root / "dovecot.conf"
        self._conf.write_text(
            f"""\
# Throwaway config written by tests/imap_server.py; nothing here is read from /etc.
instance_name = netsky-imap-{self.port}
protocols = imap
listen = {HOST}
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
info_log_path = {root / "dovecot.log"}
auth_verbose = yes

# Every process runs as one unprivileged user (the test's, or nobody under root): no
# chroot, no system accounts.
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_privileged_group =
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {plain_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {tls_port}
    ssl = yes
  }}
}}

{tls_settings}disable_plaintext_auth = no
auth_mechanisms = plain login
# Refuse a wrong password at once (the default waits 2 s, which only slows tests).
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}

mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    auto = create
    special_use = \\Drafts
  }}
}}
{capability}"""
        )
        if os.geteuid() == 0:
            for path in [root, *root.rglob("*")]:
                os.chown(path, uid, gid)


def _quote(mailbox: str) -> str:
    """An IMAP quoted string for a mailbox name (imaplib sends names as given)."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(result: tuple[str, Sequence[object]], what: str) -> None:
    """Raise imaplib.IMAP4.error unless an imaplib ``(typ, data)`` result is OK."""
    typ, data = result
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what}: {typ} {data!r}")


class StallingProxy:
    """A port on 127.0.0.1 that accepts TCP connections and never sends a byte nor
    forwards one: a server that hangs before its greeting.

    Attributes: ``host``, ``port``; ``accepted`` (int, connections taken so far). On
    exit the listener and every accepted connection are closed and the accept thread
    is joined.
    """

    host = HOST

    def __init__(self) -> None:
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="stalling-proxy", daemon=True)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._conns)

    def __enter__(self) -> Self:
        # A short accept timeout lets the thread notice shutdown without relying on
        # close() waking a blocked accept() (it does not on every platform).
        self._listener.settimeout(0.1)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._closing.is_set():
                    conn.close()
                    return
                self._conns.append(conn)
