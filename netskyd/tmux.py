"""The tmux port: every tmux call the daemon makes, each bounded by a deadline.

Each call runs one ``tmux`` client from a worker thread with ``subprocess.run``'s
own deadline (the client is killed when it passes) under an outer
``anyio.fail_after``; TmuxTimeout is raised, so a wedged tmux server (even a
SIGSTOPped one) can never wedge the tick or the event loop. (libtmux's calls
block without a timeout, so the daemon does not use it; the tests use it as an
independent observer.) Targets always use tmux's exact-match form ``=name``:
a plain ``-t agent1`` would prefix-match ``agent10`` when agent1 is gone.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from netskyd.errors import SessionNotFound, TmuxError, TmuxTimeout

_NO_SERVER = ("no server running", "error connecting to", "No such file or directory")
_FMT = "#{session_name}\t#{session_id}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{session_created}"


@dataclass(frozen=True)
class PaneInfo:
    """The first pane of one tmux session."""

    session: str
    session_id: str
    pane_id: str
    pane_pid: int
    pane_dead: bool
    created: int


def _run_client(argv: list[str], input: bytes | None, deadline: float) -> tuple[int, bytes, bytes]:
    """Run one tmux client to completion (blocking); return (status, stdout, stderr).

    Output goes to temporary files, not pipes: the tmux server that a first command
    forks inherits the client's descriptors, and waiting for EOF on a pipe the server
    holds would hang until the deadline. (Pipes for the commands that cannot start a
    server were tried: P2 throughput fell by a tenth.) Raises subprocess.TimeoutExpired
    (the client killed) past ``deadline`` seconds, OSError when tmux cannot start.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=deadline,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read()


def _session_target(name: str) -> str:
    return f"={name}"


def _pane_target(name: str) -> str:
    return f"={name}:"


class Tmux:
    """Bounded async access to one tmux server (``tmux -L socket``, or the default one)."""

    def __init__(self, socket: str | None, timeout_s: float = 5.0) -> None:
        self.socket = socket
        self.timeout_s = timeout_s

    def argv(self, *args: str) -> list[str]:
        """The full command line for a tmux subcommand on this server."""
        base = ["tmux"] + (["-L", self.socket] if self.socket else [])
        return [*base, *args]

    async def run(
        self, *args: str, input: bytes | None = None, timeout_s: float | None = None
    ) -> str:
        """Run one tmux subcommand; return its stdout.

        Raises TmuxTimeout past the deadline (``timeout_s``, default the port's),
        SessionNotFound when tmux reports a missing session, TmuxError otherwise.
        """
        deadline = self.timeout_s if timeout_s is None else timeout_s
        argv = self.argv(*args)
        try:
            # The client runs from a worker thread with subprocess.run's own deadline
            # (it kills the client when it passes): a process start from the event loop
            # costs twice as much, and a blocked client never holds the loop. The outer
            # deadline is a backstop, should the thread itself stall.
            with anyio.fail_after(deadline + 1.0):
                returncode, stdout, stderr = await anyio.to_thread.run_sync(
                    _run_client, argv, input, deadline, abandon_on_cancel=True
                )
        except (TimeoutError, subprocess.TimeoutExpired) as e:
            raise TmuxTimeout(f"tmux {args[0]} did not answer within {deadline:g}s") from e
        except OSError as e:
            raise TmuxError(f"cannot run tmux: {e}") from e
        if returncode != 0:
            message = stderr.decode(errors="replace").strip()
            if "can't find" in message or "session not found" in message:
                raise SessionNotFound(message)
            if any(s in message for s in _NO_SERVER):
                raise SessionNotFound(f"no tmux server: {message}")
            raise TmuxError(f"tmux {args[0]} failed ({returncode}): {message}")
        return stdout.decode(errors="replace")

    async def list_panes(self) -> dict[str, PaneInfo]:
        """Return the first pane of every session, by session name ({} with no server)."""
        try:
            out = await self.run("list-panes", "-a", "-F", _FMT)
        except SessionNotFound:
            return {}
        panes: dict[str, PaneInfo] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 6 or parts[0] in panes:
                continue
            panes[parts[0]] = PaneInfo(
                session=parts[0],
                session_id=parts[1],
                pane_id=parts[2],
                pane_pid=int(parts[3] or 0),
                pane_dead=parts[4] == "1",
                created=int(parts[5] or 0),
            )
        return panes

    async def has_session(self, name: str) -> bool:
        try:
            await self.run("has-session", "-t", _session_target(name))
        except SessionNotFound:
            return False
        return True

    async def new_session(
        self,
        name: str,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        width: int,
        height: int,
    ) -> PaneInfo:
        """Create a detached session running ``command`` (a shell command line).

        Raises TmuxError when tmux refuses (e.g. the session already exists).
        """
        args = ["new-session", "-d", "-s", name, "-x", str(width), "-y", str(height)]
        args += ["-c", str(cwd)]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        args += ["-P", "-F", _FMT, command]
        out = await self.run(*args)
        parts = out.strip().split("\t")
        if len(parts) != 6:
            raise TmuxError(f"tmux new-session printed an unexpected line: {out!r}")
        return PaneInfo(parts[0], parts[1], parts[2], int(parts[3]), parts[4] == "1", int(parts[5]))

    async def kill_session(self, name: str) -> bool:
        """Kill a session; return False when it did not exist."""
        try:
            await self.run("kill-session", "-t", _session_target(name))
        except SessionNotFound:
            return False
        return True

    async def capture(self, name: str, lines: int | None = None) -> str:
        """Return the visible pane text (plus ``lines`` of history when given)."""
        args = ["capture-pane", "-p", "-J", "-t", _pane_target(name)]
        if lines:
            args += ["-S", f"-{lines}"]
        return await self.run(*args)

    async def paste(self, name: str, text: str, buffer: str) -> None:
        """Bracketed-paste ``text`` into the session's pane via a named, deleted buffer."""
        # One tmux client process for both commands (``;`` separates them): half the
        # process start-ups on the delivery hot path.
        await self.run(
            "load-buffer", "-b", buffer, "-", ";",
            "paste-buffer", "-p", "-d", "-b", buffer, "-t", _pane_target(name),
            input=text.encode(),
        )

    async def send_keys(self, name: str, *keys: str) -> None:
        await self.run("send-keys", "-t", _pane_target(name), *keys)

    async def show_env(self, name: str, var: str) -> str | None:
        """Return a session environment variable, or None when unset."""
        try:
            out = await self.run("show-environment", "-t", _session_target(name), var)
        except TmuxError as e:
            if isinstance(e, SessionNotFound):
                raise
            return None
        line = out.strip()
        if line.startswith("-") or "=" not in line:
            return None
        return line.split("=", 1)[1]
