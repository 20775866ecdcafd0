"""A small blocking JSON-RPC client for ``netskyd.sock`` (stdlib only).

Every call has a deadline. Connection failures map to DaemonNotRunning, an
``api_version`` mismatch to VersionSkew, an error response to RpcFailed.
"""

from __future__ import annotations

# _socket is the C module under socket.py: socket.py adds enums, selectors and
# makefile, none of which one blocking connection needs, and costs about 2 ms of every
# netskyctl call (bench/status_latency.py). Its socket type has the same methods and
# raises the same OSError subclasses (TimeoutError on a deadline).
import _socket
import json
import os

from netsky_shared import protocol
from netsky_shared.errors import DaemonNotRunning, NetskyError, VersionSkew

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class RpcFailed(NetskyError):
    """Raised when the daemon answers a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class Client:
    """One connection to netskyd; use as a context manager."""

    def __init__(self, socket_path: str | os.PathLike[str], timeout_s: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._sock: _socket.socket | None = None
        self._buf = b""
        self._next_id = 0
        self.hello: dict[str, Any] = {}

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect and check the API version. Raises DaemonNotRunning or VersionSkew."""
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise DaemonNotRunning(
                f"netskyd is not running (no answer on {self.socket_path})"
            ) from e
        except OSError as e:
            sock.close()
            raise DaemonNotRunning(f"cannot reach netskyd at {self.socket_path}: {e}") from e
        self._sock = sock
        try:
            self.hello = self.call(protocol.HELLO, {"api_version": protocol.API_VERSION})
        except RpcFailed as e:
            if e.code == protocol.VERSION_SKEW:
                raise VersionSkew(str(e)) from e
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        *,
        if_late: str | None = None,
    ) -> Any:
        """Send one request and return its result. Raises RpcFailed, DaemonNotRunning, and
        NetskyError when no answer came within ``timeout_s``; ``if_late`` is added to that
        message (for long work netskyd finishes anyway: where to look for it)."""
        assert self._sock is not None, "not connected"
        self._next_id += 1
        req = protocol.request(self._next_id, method, params)
        self._sock.settimeout(timeout_s or self.timeout_s)
        try:
            self._sock.sendall((json.dumps(req) + "\n").encode())
            line = self._readline()
        except TimeoutError as e:
            late = f"netskyd did not answer {method} within {timeout_s or self.timeout_s:g}s"
            raise NetskyError(late + (f"; {if_late}" if if_late else "")) from e
        except OSError as e:
            raise DaemonNotRunning(f"lost the connection to netskyd: {e}") from e
        resp = json.loads(line)
        if "error" in resp:
            err = resp["error"]
            raise RpcFailed(
                int(err.get("code", protocol.INTERNAL_ERROR)),
                str(err.get("message", "error")),
                err.get("data"),
            )
        return resp.get("result")

    def _readline(self) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise DaemonNotRunning("netskyd closed the connection")
            self._buf += chunk
            if len(self._buf) > protocol.MAX_LINE_BYTES:
                raise NetskyError("response line too long")
        line, self._buf = self._buf.split(b"\n", 1)
        return line
