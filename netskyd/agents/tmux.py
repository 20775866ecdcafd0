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

import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from netsky_shared.errors import SessionNotFound, TmuxError, TmuxTimeout
from netskyd.agents.tmux_format import (
    FMT,
    HOOK_INDEX,
    PaneInfo,
    Snapshot,
    Sweep,
    hook_commands,
    int_or_none,
    parse_pane,
    parse_panes,
    split_captures,
)

__all__ = ["HOOK_INDEX", "PaneInfo", "Snapshot", "Sweep", "Tmux"]

_NO_SERVER = ("no server running", "error connecting to", "No such file or directory")


def _run_client(
    argv: list[str], input: bytes | None, deadline: float, pipes: bool = False
) -> tuple[int, bytes, bytes]:
    """Run one tmux client to completion (blocking); return (status, stdout, stderr).

    Output goes to temporary files, not pipes: the tmux server that a first command
    forks inherits the client's descriptors, and waiting for EOF on a pipe the server
    holds would hang until the deadline. (Pipes for the commands that cannot start a
    server were tried: P2 throughput fell by a tenth.) ``pipes`` is for large outputs
    of commands that cannot start a server (``Tmux.snapshot``): 800 kB through a
    temporary file cost 13 ms more than through a pipe. Raises subprocess.TimeoutExpired
    (the client killed) past ``deadline`` seconds, OSError when tmux cannot start.
    """
    if pipes:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=deadline,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr
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
        self,
        *args: str,
        input: bytes | None = None,
        timeout_s: float | None = None,
        pipes: bool = False,
    ) -> str:
        """Run one tmux subcommand; return its stdout.

        ``pipes``: read the output through pipes, faster for large outputs; only for
        commands that cannot start a server (see ``_run_client``).
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
                    _run_client, argv, input, deadline, pipes, abandon_on_cancel=True
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
            out = await self.run("list-panes", "-a", "-F", FMT)
        except SessionNotFound:
            return {}
        return parse_panes(out)

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
        remain_on_exit: bool = True,
    ) -> PaneInfo:
        """Create a detached session running ``command`` (a shell command line).

        With ``remain_on_exit`` (the default) the session's window gets tmux's
        ``remain-on-exit``: when the process exits, its pane stays, dead, with its exit
        status (``PaneInfo.dead_status``) and last lines capturable, and the
        ``pane-died`` hook fires; it is gone only when killed. The option is set in the
        same tmux client invocation: tmux runs a client's commands before it handles
        any child exit, so even a command that exits at once is caught.
        Raises TmuxError when tmux refuses (e.g. the session already exists).
        """
        args = ["new-session", "-d", "-s", name, "-x", str(width), "-y", str(height)]
        args += ["-c", str(cwd)]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        args += ["-P", "-F", FMT, command]
        if remain_on_exit:
            args += [";", "set-option", "-w", "-t", _pane_target(name), "remain-on-exit", "on"]
        out = await self.run(*args)
        # Not strip(): the last field (dead_status) is empty, so the line ends in a tab.
        pane = parse_pane(out.strip("\n"))
        if pane is None:
            raise TmuxError(f"tmux new-session printed an unexpected line: {out!r}")
        return pane

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
        # fmt: off
        await self.run(
            "load-buffer", "-b", buffer, "-", ";",
            "paste-buffer", "-p", "-d", "-b", buffer, "-t", _pane_target(name),
            input=text.encode(),
        )
        # fmt: on

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

    async def environment(self, name: str) -> dict[str, str]:
        """Every variable set in a session's environment (one client; unset ones omitted).

        Raises SessionNotFound when the session is gone.
        """
        out = await self.run("show-environment", "-t", _session_target(name))
        env = {}
        for line in out.splitlines():
            if "=" in line and not line.startswith("-"):
                key, value = line.split("=", 1)
                env[key] = value
        return env

    async def install_hooks(self, command: str) -> bool:
        """Install netsky's global ``pane-died`` and ``session-closed`` hooks (one client).

        Each runs ``command EVENT SESSION [STATUS]`` through ``run-shell -b`` for agent
        sessions only (``hook_commands``). They sit at index ``HOOK_INDEX`` of each hook
        array, so installing again replaces them and the user's own hooks stay.
        Returns False when there is no tmux server (nothing to hook yet).
        Raises TmuxTimeout, TmuxError (e.g. a tmux too old for the syntax).
        """
        args: list[str] = []
        for hook, tmux_command in hook_commands(command).items():
            if args:
                args.append(";")
            args += ["set-hook", "-g", f"{hook}[{HOOK_INDEX}]", tmux_command]
        try:
            await self.run(*args)
        except SessionNotFound:
            return False
        return True

    async def remove_hooks(self) -> bool:
        """Remove netsky's hooks (index ``HOOK_INDEX`` only); False with no server."""
        args: list[str] = []
        for hook in hook_commands(""):
            if args:
                args.append(";")
            args += ["set-hook", "-gu", f"{hook}[{HOOK_INDEX}]"]
        try:
            await self.run(*args)
        except SessionNotFound:
            return False
        return True

    async def server_pid(self) -> int | None:
        """The tmux server's process id (``#{pid}``); None when there is no server."""
        try:
            out = await self.run("display-message", "-p", "#{pid}")
        except SessionNotFound:
            return None
        return int_or_none(out.strip())

    async def nudge_unreaped(self) -> Sweep:
        """List every session and make tmux reap panes whose exit it missed.

        One ``list-panes -a`` call; returns a Sweep (``Sweep()`` with no server).

        Why: Linux builds of tmux before 3.5 linked with libutempter lose the SIGCHLD of
        a pane process that exits while utempter's helper runs, which it does right when
        the pane's pty closes (tmux issue #311; seen on Debian's tmux 3.3a for about
        half of all exits). Such a pane shows ``#{pane_dead}`` 1 but no
        ``#{pane_dead_time}``: tmux has not reaped it, so neither the exit status nor the
        ``pane-died`` hook comes until some other child of the server exits. A SIGCHLD
        sent to the server makes it reap at once (its handler loops ``waitpid(WNOHANG)``;
        a spurious one is harmless). Raises TmuxTimeout, TmuxError.
        """
        fmt = "#{pid}\t#{session_name}\t#{pane_dead}\t#{pane_dead_time}\t#{pane_dead_status}"
        try:
            out = await self.run("list-panes", "-a", "-F", fmt)
        except SessionNotFound:
            return Sweep()
        server_pid: int | None = None
        sessions: set[str] = set()
        dead: dict[str, int | None] = {}
        stuck: list[str] = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 5:
                continue
            server_pid = int_or_none(parts[0])
            first = parts[1] not in sessions  # the first pane of its session
            sessions.add(parts[1])
            if parts[2] != "1":
                continue
            if not parts[3]:
                stuck.append(parts[1])
            elif first:
                dead[parts[1]] = int_or_none(parts[4])
        if stuck and server_pid:
            try:
                os.kill(server_pid, signal.SIGCHLD)
            except OSError:  # gone, or not ours: the tick still sees pane_dead
                pass
        return Sweep(server_pid, frozenset(sessions), dead, tuple(stuck))

    async def snapshot(self, names: Sequence[str], lines: int) -> Snapshot:
        """Every session's first pane plus the text of the named ones, in one tmux client.

        One invocation runs ``list-panes -a`` then, per name, a marker line
        (``display-message -p -t =NAME: "<random token> <index>"``) and
        ``capture-pane -p -J -t =NAME: -S -lines`` (history only when ``lines`` > 0, as
        ``capture``). tmux skips the rest of a ``;`` sequence after a failing command,
        so when a named session is missing the call fails; then ``list-panes`` alone and
        one batched capture of the names that exist follow (two more round trips; if a
        session vanishes in between, each remaining name is captured on its own).
        Empty ``names``: one ``list-panes``. No server: an empty Snapshot.
        Raises TmuxTimeout (each call has the port's deadline), TmuxError.
        """
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return Snapshot(await self.list_panes(), {})
        token = f"netsky-snapshot-{secrets.token_hex(8)}"
        try:
            args = ["list-panes", "-a", "-F", FMT, ";", *self._capture_args(wanted, lines, token)]
            out = await self.run(*args, pipes=True)
        except SessionNotFound:
            panes = await self.list_panes()
            present = [n for n in wanted if n in panes]
            return Snapshot(panes, await self._captures(present, lines, token))
        head, captures = split_captures(out, token, wanted)
        return Snapshot(parse_panes(head), captures)

    async def _captures(self, names: list[str], lines: int, token: str) -> dict[str, str]:
        """Capture ``names`` in one client; one by one if one of them is gone by now."""
        if not names:
            return {}
        try:
            out = await self.run(*self._capture_args(names, lines, token), pipes=True)
        except SessionNotFound:
            captures = {}
            for name in names:
                try:
                    captures[name] = await self.capture(name, lines)
                except SessionNotFound:
                    continue
            return captures
        return split_captures(out, token, names)[1]

    @staticmethod
    def _capture_args(names: list[str], lines: int, token: str) -> list[str]:
        args: list[str] = []
        for i, name in enumerate(names):
            if args:
                args.append(";")
            args += ["display-message", "-p", "-t", _pane_target(name), f"{token} {i}", ";"]
            args += ["capture-pane", "-p", "-J", "-t", _pane_target(name)]
            if lines > 0:
                args += ["-S", f"-{lines}"]
        return args
