"""A drill's sandbox: its own NETSKY_HOME, its own tmux socket, a real daemon (stdlib only).

The home is a fresh temporary directory; the tmux server is ``tmux -L
netsky-drill-<hex>`` (never the owner's default server); the daemon is
``sys.executable -m netskyd run`` of the running install, in a session of its own,
with only the sandbox's ``NETSKY_*`` variables. ``teardown`` ends every daemon of the
sandbox by pid (the ones it started, any the shim started, and whoever holds the
sandbox's daemon lock), TERM then KILL, kills the sandbox's tmux server and removes
the home unless it is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from client.drills.run import DrillFailed, Run
from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.errors import NetskyError
from netsky_shared.paths import Paths

SOCKET_PREFIX = "netsky-drill-"
#: Fast settings every drill starts from (each drill adds its own).
FAST: dict[str, Any] = {
    "runtime": "demo",
    "clones": 1,
    "tick_interval_s": 1.0,
    "ready_timeout_s": 20.0,
    "paste_settle_ms": 100,
    "restart_verify_s": 1.0,
    "restart_backoff_base_s": 0.3,
    "restart_backoff_cap_s": 2.0,
    "handoff_timeout_s": 20.0,
    "escalation_spool_s": 0.2,
    "escalation_retry_base_s": 1.0,
    "escalation_retry_cap_s": 2.0,
    "escalation_leg_timeout_s": 5.0,
    "heartbeat_s": 1.0,
    "lkg_after_s": 0.0,
    # A drill must not raise notifications on the owner's desktop; the sentinel file
    # (in the sandbox) is the desktop leg's proof of delivery.
    "legs": {"desktop": {"notify": False}},
}
TERM_WAIT_S = 10.0
KILL_WAIT_S = 5.0
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(v: Any) -> str:
    """``v`` as a TOML value (inline tables for dicts; the settings need no more)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, tables merged key by key (``legs``)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


class Sandbox:
    """One drill's NETSKY_HOME, tmux socket, config and daemons.

    ``environ``: the caller's environment; everything but ``NETSKY_*`` and ``TMUX*``
    (the owner's tmux session) reaches the sandbox's processes.
    """

    def __init__(self, run: Run, environ: dict[str, str] | None = None) -> None:
        self.run = run
        self.home = Path(tempfile.mkdtemp(prefix=f"netsky-drill-{run.name}-")).resolve()
        self.paths = Paths(self.home)
        self.socket_name = SOCKET_PREFIX + secrets.token_hex(5)
        self.config_path = self.home / "config.toml"
        self.settings: dict[str, Any] = dict(FAST)
        self.daemon_pids: list[int] = []
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        base = dict(os.environ if environ is None else environ)
        self.base_env = {
            k: v for k, v in base.items() if not k.startswith("NETSKY_") and k not in ("TMUX",)
        }
        self.base_env.pop("TMUX_PANE", None)
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self.configure()

    # -- set-up ------------------------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Merge ``settings`` into the config and rewrite ``config.toml``."""
        self.settings = merge(self.settings, settings)
        text = "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in self.settings.items())
        self.config_path.write_text(text, encoding="utf-8")

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process the sandbox starts."""
        return {
            **self.base_env,
            "NETSKY_HOME": str(self.home),
            "NETSKY_CONFIG": str(self.config_path),
            "NETSKY_TMUX_SOCKET": self.socket_name,
            "PYTHONUNBUFFERED": "1",
        }

    def start_daemon(self) -> int:
        """Start ``netskyd run`` of the running install and wait until it answers; return
        its pid. Raises DrillFailed when it exits or does not answer in time."""
        log = open(self.paths.logs / "drill-daemon.out", "ab")  # noqa: SIM115 - the child's
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "netskyd", "run"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.home,
                start_new_session=True,
            )
        finally:
            log.close()
        self._children[proc.pid] = proc
        self.daemon_pids.append(proc.pid)

        def answers() -> int | None:
            if proc.poll() is not None:
                raise DrillFailed(
                    f"netskyd exited with status {proc.returncode} at start: {self.log_tail()}"
                )
            return self.ping_pid()

        pid = self.run.wait(answers, "netskyd to answer ping", timeout_s=30)
        self.run.step("daemon", f"pid {pid} answers on {self.paths.socket}")
        return pid

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the drill's daemons wrote to stderr, joined by ' | '."""
        text = ""
        for name in ("drill-daemon.out", "netskyd.stderr"):
            with contextlib.suppress(OSError):
                text += (self.paths.logs / name).read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    # -- talking to the daemon -----------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One RPC to the sandbox's daemon, within the drill's deadline."""
        timeout = self.run.budget_s(10.0)
        with Client(self.paths.socket, timeout_s=timeout) as c:
            return c.call(method, params, timeout_s=timeout)

    def ping_pid(self, timeout_s: float | None = None) -> int | None:
        """The pid of the daemon answering on the sandbox's socket (None: none answers).

        ``timeout_s``: the ping's deadline (default: 5 s within the drill's deadline)."""
        try:
            timeout = self.run.budget_s(5.0) if timeout_s is None else timeout_s
            with Client(self.paths.socket, timeout_s=timeout) as c:
                c.call(protocol.PING)
                pid = c.hello.get("pid")
        except NetskyError:
            return None
        return int(pid) if isinstance(pid, int) else None

    def agents(self) -> dict[str, dict[str, Any]]:
        """``status`` agent rows by agent id."""
        return {a["agent"]: a for a in self.call(protocol.STATUS)["agents"]}

    def wait_ready(self, names: list[str], timeout_s: float = 40.0) -> dict[str, dict[str, Any]]:
        """Wait until every agent in ``names`` is ready; return the status rows."""
        seen: dict[str, dict[str, Any]] = {}

        def ready() -> dict[str, dict[str, Any]] | None:
            seen.clear()
            seen.update(self.agents())
            return dict(seen) if all(seen.get(a, {}).get("ready") for a in names) else None

        def note() -> str:
            n = sum(1 for a in names if seen.get(a, {}).get("ready"))
            return f"{n}/{len(names)} agents ready"

        rows = self.run.wait(ready, "agents ready", timeout_s=timeout_s, poll_s=0.3, note=note)
        self.run.step("ready", ", ".join(f"{a} (pane pid {rows[a]['pane_pid']})" for a in names))
        return rows

    def ctl(self, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``netskyctl ARGS`` of the running install against the sandbox."""
        try:
            return subprocess.run(
                [sys.executable, "-m", "client", *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.run.budget_s(timeout_s),
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DrillFailed(f"netskyctl {' '.join(args)} did not finish in {e.timeout:g}s") from e

    def ctl_json(self, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
        """``netskyctl ARGS --json``, parsed; raises DrillFailed on another exit code."""
        res = self.ctl(*args, "--json")
        if res.returncode not in ok:
            raise DrillFailed(
                f"netskyctl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()[-300:]}"
            )
        try:
            return json.loads(res.stdout)
        except ValueError as e:
            raise DrillFailed(f"netskyctl {' '.join(args)} printed no JSON: {e}") from e

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``tmux -L <the sandbox's socket> ARGS`` (never the default server)."""
        assert self.socket_name.startswith(SOCKET_PREFIX)
        return subprocess.run(
            ["tmux", "-L", self.socket_name, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def panes(self) -> dict[str, tuple[str, int]]:
        """Each tmux session of the sandbox: ``{name: (tmux session_id, pane pid)}``."""
        res = self.tmux("list-panes", "-a", "-F", "#{session_name}\t#{session_id}\t#{pane_pid}")
        out: dict[str, tuple[str, int]] = {}
        for line in res.stdout.splitlines():
            name, sid, pid = line.split("\t")
            out[name] = (sid, int(pid))
        return out

    # -- reading the sandbox's records -----------------------------------------------------

    def journal(self, event: str) -> list[dict[str, Any]]:
        """The journal's rows named ``event`` (logs/watchdog-events-*.jsonl), oldest first."""
        rows: list[dict[str, Any]] = []
        for path in sorted(self.paths.logs.glob("watchdog-events-*.jsonl")):
            rows += _jsonl(path)
        return [r for r in rows if r.get("event") == event]

    def incidents(self, key: str) -> list[dict[str, Any]]:
        """Incident files (``state/escalations/*.json``) with ``key``, oldest first."""
        found = []
        for path in sorted(self.paths.escalations.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                inc = json.loads(path.read_text())
                if isinstance(inc, dict) and inc.get("key") == key:
                    found.append(inc)
        return found

    def owner_pages(self, key: str) -> list[dict[str, Any]]:
        """``state/owner-pages.jsonl`` rows (one per page attempt and leg) for ``key``."""
        return [r for r in _jsonl(self.paths.owner_pages) if r.get("key") == key]

    def receipts(self, agent: str) -> list[dict[str, Any]]:
        """What the demo ``agent`` received (``state/demo/<agent>.received.jsonl``)."""
        return _jsonl(self.paths.demo_receipts(agent))

    def shim_journal(self) -> list[dict[str, Any]]:
        """``logs/shim.jsonl``: one row per shim run (docs/keepalive.md)."""
        return _jsonl(self.paths.shim_log)

    # -- processes ---------------------------------------------------------------------

    def adopt_daemon(self, pid: int) -> None:
        """Remember a daemon the drill did not start itself (the shim's) for teardown."""
        if pid not in self.daemon_pids:
            self.daemon_pids.append(pid)

    def kill_daemon(self, pid: int) -> None:
        """SIGKILL daemon ``pid`` (one of the sandbox's) and reap it if it is a child."""
        assert pid in self.daemon_pids, pid
        os.kill(pid, signal.SIGKILL)
        proc = self._children.get(pid)
        if proc is not None:
            proc.wait(timeout=KILL_WAIT_S)

    def lock_holder(self) -> int | None:
        """The pid of a live daemon holding the sandbox's lock (``state/netskyd.lock``)."""
        try:
            f = open(self.paths.lock, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError:
            return None
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None

    def teardown(self, keep: bool) -> list[str]:
        """Stop every daemon of the sandbox, kill its tmux server, remove the home
        unless ``keep``. Never raises; returns what it did, one phrase per action."""
        done: list[str] = []
        for pid in self._sandbox_daemons():
            done.append(self._stop(pid))
        holder = self.lock_holder()  # a daemon still starting when the others stopped
        if holder is not None and holder not in self.daemon_pids:
            self.daemon_pids.append(holder)
            done.append(self._stop(holder))
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.tmux("kill-server")
            done.append(f"tmux server {self.socket_name} killed")
        tmpdir = self.base_env.get("TMUX_TMPDIR") or "/tmp"
        with contextlib.suppress(OSError):
            Path(tmpdir, f"tmux-{os.getuid()}", self.socket_name).unlink(missing_ok=True)
        if keep:
            done.append(f"home kept: {self.home}")
        else:
            shutil.rmtree(self.home, ignore_errors=True)
            done.append("home removed")
        return done

    def _sandbox_daemons(self) -> Iterator[int]:
        yield from list(self.daemon_pids)
        with contextlib.suppress(Exception):
            pid = self.ping_pid(3.0) if self.paths.socket.exists() else None
            if pid is not None and pid not in self.daemon_pids:
                self.daemon_pids.append(pid)
                yield pid

    def _stop(self, pid: int) -> str:
        proc = self._children.get(pid)
        if not _alive(pid, proc):
            return f"daemon {pid} already gone"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if _wait_gone(pid, proc, TERM_WAIT_S):
            return f"daemon {pid} stopped (SIGTERM)"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        gone = _wait_gone(pid, proc, KILL_WAIT_S)
        return f"daemon {pid} killed (SIGKILL)" + ("" if gone else ", still there")


def _alive(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not _alive(pid, proc):
            return True
        time.sleep(0.05)
    return not _alive(pid, proc)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows
