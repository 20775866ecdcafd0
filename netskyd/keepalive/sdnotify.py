"""A small sd_notify client: tell a service manager (systemd) how netskyd is doing.

Protocol: sd_notify(3). The manager passes ``NOTIFY_SOCKET``, the address of an
``AF_UNIX``/``SOCK_DGRAM`` socket: an absolute path, or an abstract-namespace name when
it starts with ``@`` (the ``@`` stands for the leading NUL byte). Each notification is one
datagram of newline-separated ``VARIABLE=value`` assignments (``READY=1``,
``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``). Under ``WatchdogSec=``
the manager also passes ``WATCHDOG_USEC`` (the watchdog interval) and ``WATCHDOG_PID``
(the process it is meant for); sd_watchdog_enabled(3): a process whose pid differs must
not ping. Without ``NOTIFY_SOCKET`` (launchd, a terminal) every method is a no-op.

Sending never blocks and never raises: a notification that cannot be delivered is
logged, and the daemon carries on (sd_notify(3) itself returns an error the callers
are told to ignore). Stdlib only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from netskyd import log as logmod

log = logmod.get("netskyd")

#: What the manager puts in the environment (sd_notify(3), sd_watchdog_enabled(3)).
NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: STATUS= is shown by ``systemctl status``; one short line is what fits.
STATUS_MAX_CHARS = 200


def status_line(text: str, max_chars: int = STATUS_MAX_CHARS) -> str:
    """``text`` as one ``STATUS=`` value: newlines become spaces, at most ``max_chars``."""
    line = " ".join(text.split())
    if len(line) > max_chars:
        line = line[: max_chars - 3] + "..."
    return line


def socket_address(value: str | None) -> str | None:
    """The ``sendto`` address of a ``NOTIFY_SOCKET`` value, or None when unusable.

    sd_notify(3): ``/path`` is a file-system socket, ``@name`` an abstract one (a
    leading NUL for the kernel). Anything else (empty, relative, ``vsock:``) is not
    supported here and disables notifications.
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends sd_notify(3) datagrams to the service manager; a no-op when it is disabled.

    ``address``: the ``sendto`` address (see ``socket_address``), None = disabled.
    ``watchdog_usec``: ``WATCHDOG_USEC`` (None = no watchdog). ``watchdog_pid``:
    ``WATCHDOG_PID`` (None = any pid). ``pid``: this process (tests pass one).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        pid: int | None = None,
        raw: str | None = None,
    ) -> None:
        self.address = address
        #: NOTIFY_SOCKET as given (``@name`` for an abstract socket), for logs.
        self.raw = raw if raw is not None else address
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid
        self.pid = os.getpid() if pid is None else pid
        self.sent = 0
        self.failed = 0
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``environ``.

        A malformed ``WATCHDOG_USEC`` or ``WATCHDOG_PID`` disables the watchdog pings (as
        sd_watchdog_enabled(3) does); an unsupported ``NOTIFY_SOCKET`` disables the lot.
        """
        raw = environ.get("NOTIFY_SOCKET") or None
        usec = _positive_int(environ.get("WATCHDOG_USEC"))
        wpid_text = environ.get("WATCHDOG_PID")
        wpid = _positive_int(wpid_text)
        if wpid_text and wpid is None:
            usec = None
        return cls(socket_address(raw), watchdog_usec=usec, watchdog_pid=wpid, pid=pid, raw=raw)

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to notify."""
        return self.address is not None

    @property
    def watchdog_s(self) -> float | None:
        """The manager's watchdog interval in seconds (``WATCHDOG_USEC`` / 1e6), or None
        when there is none, or it is meant for another process (``WATCHDOG_PID``)."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != self.pid:
            return None
        return self.watchdog_usec / 1e6

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``VARIABLE=value`` each) as one datagram; True when sent.

        Non-blocking: a full or missing socket is logged, never raised.
        """
        if self.address is None or not lines:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as e:
            self.failed += 1
            # One warning per streak of failures; a vanished manager would repeat it
            # every heartbeat.
            level = "debug" if self._failing else "warning"
            self._failing = True
            getattr(log, level)(
                "sdnotify.send_failed", socket=self.raw, error=str(e), message=lines[0]
            )
            return False
        self.sent += 1
        if self._failing:
            self._failing = False
            log.info("sdnotify.send_recovered", socket=self.raw)
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (start-up finished), with a ``STATUS=`` line when given."""
        return self.send("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (sd_notify(3): required together for
        ``Type=notify-reload``); send ``ready()`` when the reload is done."""
        usec = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC, as the manager expects
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status(status))

    def status(self, text: str) -> bool:
        """``STATUS=<one line>`` (what ``systemctl status`` shows)."""
        return self.send(*self._status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``, only when the manager's watchdog is meant for this process."""
        if self.watchdog_s is None:
            return False
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (shutdown has begun), with a ``STATUS=`` line when given."""
        return self.send("STOPPING=1", *self._status(status))

    def describe(self) -> dict[str, Any]:
        """``{"sd_notify": bool, "watchdog_s": float | None}`` for events and reports."""
        return {"sd_notify": self.enabled, "watchdog_s": self.watchdog_s}

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={status_line(text)}",)


def _positive_int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None
