"""Test harness: a real netskyd process on a private tmux socket, and netskyctl runs.

Everything started here is ended by pid in ``stop()``/``cleanup()``; the tmux
server is always a private one (``tmux -L netsky-test-<hex>``), never the default.
libtmux is used as an independent observer of the tmux server.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libtmux

REPO = Path(__file__).resolve().parent.parent


def private_socket() -> str:
    return f"netsky-test-{uuid.uuid4().hex[:10]}"


def kill_tmux_server(socket_name: str) -> None:
    """Kill the private tmux server (only ever a ``netsky-test-*`` socket)."""
    assert socket_name.startswith("netsky-test-"), socket_name
    subprocess.run(
        ["tmux", "-L", socket_name, "kill-server"], capture_output=True, timeout=10, check=False
    )
    # tmux leaves the socket file behind; remove it so test runs do not pile them up.
    tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
    Path(tmpdir, f"tmux-{os.getuid()}", socket_name).unlink(missing_ok=True)


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test with ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class Netsky:
    """A NETSKY_HOME with a config, a private tmux socket, and a daemon process."""

    def __init__(self, home: Path, **settings: Any) -> None:
        self.home = home
        self.socket_name = private_socket()
        self.settings = {
            "runtime": "demo",
            "clones": 2,
            "tick_interval_s": 1.0,
            "ready_timeout_s": 30.0,
            "paste_settle_ms": 100,
            **settings,
        }
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "config.toml"
        self.configure()
        self.proc: subprocess.Popen[bytes] | None = None
        #: The Netsky this one is a view of (EnvNetsky); it gets the process too.
        self.owner: Netsky | None = None
        self.log_path = home / "netskyd.stderr"
        self.tmux = libtmux.Server(socket_name=self.socket_name)

    def configure(self, **settings: Any) -> None:
        """Update settings and rewrite config.toml (before ``start``)."""
        self.settings.update(settings)
        self.config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in self.settings.items()))

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETSKY_")}
        env.update(
            NETSKY_HOME=str(self.home),
            NETSKY_TMUX_SOCKET=self.socket_name,
            NETSKY_CONFIG=str(self.config),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, wait: bool = True) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netskyd", "run", "--config", str(self.config)],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
        )
        log.close()
        if self.owner is not None:
            self.owner.proc = self.proc  # the fixture's cleanup ends what a view started
        if wait:
            wait_for(
                lambda: self.ctl("ping").returncode == 0 or self._died(),
                30,
                "netskyd to answer ping",
            )
            assert self.proc.poll() is None, f"netskyd exited early:\n{self.stderr()}"
        return self.proc

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ctl(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client", *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        res = self.ctl("status", "--json")
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout))

    def agents(self) -> dict[str, dict[str, Any]]:
        return {a["agent"]: a for a in self.status()["agents"]}

    def all_ready(self, names: list[str]) -> bool:
        agents = self.agents()
        return all(agents.get(n, {}).get("ready") for n in names)

    def wait_all_ready(
        self, names: list[str], timeout_s: float, progress: Callable[[str], None] | None = None
    ) -> float:
        """Wait until every agent in ``names`` is ready; return the seconds it took.

        Calls ``progress`` every 5 s with a ``k/n agents ready`` line. Raises
        AssertionError naming how many were ready at the deadline.
        """
        t0 = last = time.monotonic()
        while True:
            rows = self.agents()
            ready = sum(1 for a in names if rows.get(a, {}).get("ready"))
            if ready == len(names):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise AssertionError(
                    f"only {ready}/{len(names)} agents ready after {timeout_s:.0f}s"
                )
            if progress is not None and time.monotonic() - last >= 5:
                progress(f"waiting for readiness: {ready}/{len(names)} agents ready")
                last = time.monotonic()
            time.sleep(0.5)

    def consumption(self, envelope_id: str) -> dict[str, Any] | None:
        """The envelope's delivery record in meta.db: ``{"consumption", "consumed_at",
        "submitted_at", "enter_retries"}`` (the newest row), or None before it has one."""
        db = sqlite3.connect(f"file:{self.home / 'meta.db'}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute(
                "SELECT consumption, consumed_at, submitted_at, enter_retries FROM messages "
                "WHERE envelope_id = ? ORDER BY id DESC LIMIT 1",
                (envelope_id,),
            ).fetchone()
        except sqlite3.OperationalError:
            return None  # no database (or table) yet
        finally:
            db.close()
        if row is None:
            return None
        keys = ("consumption", "consumed_at", "submitted_at", "enter_retries")
        return dict(zip(keys, row, strict=True))

    def consumed(self, envelope_id: str) -> dict[str, Any] | None:
        """The record once the envelope is recorded ``consumed`` (for ``wait_for``)."""
        row = self.consumption(envelope_id)
        return row if row is not None and row["consumption"] == "consumed" else None

    def sessions(self) -> set[str]:
        if not self.tmux.is_alive():
            return set()
        try:
            return {str(s.session_name) for s in self.tmux.sessions}
        except Exception:  # the server may exit between the two calls
            return set()

    def pane_text(self, session: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket_name, "capture-pane", "-p", "-J", "-t", f"={session}:"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def cleanup(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        finally:
            kill_tmux_server(self.socket_name)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))


class EnvNetsky(Netsky):
    """A Netsky whose daemon (hence its tmux server and every pane) gets ``extra_env``.

    Takes over ``base``'s home, socket and config; variables of the test runner whose
    names start with one of ``strip_prefixes`` never reach the daemon.
    """

    def __init__(
        self, base: Netsky, extra_env: dict[str, str], strip_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.__dict__.update(base.__dict__)
        self.owner = base
        self.extra_env = extra_env
        self.strip_prefixes = strip_prefixes

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        if self.strip_prefixes:
            env = {k: v for k, v in env.items() if not k.startswith(self.strip_prefixes)}
        env.update(self.extra_env)
        return env


def closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
