"""The daemon lock: ``state/netskyd.lock`` (flock), one netskyd per NETSKY_HOME."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from netsky_shared.errors import DaemonAlreadyRunning


class DaemonLock:
    """An exclusive, non-blocking flock held for the daemon's lifetime; the file holds its pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock. Raises DaemonAlreadyRunning naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise DaemonAlreadyRunning(
                f"netskyd is already running for NETSKY_HOME={self.path.parent.parent} "
                f"(pid {holder}); stop it first, or use another NETSKY_HOME"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
