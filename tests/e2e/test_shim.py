"""End to end: the shim (``launchd/netsky-shim``) as a real sh process against real daemons.

Demo agents on a private tmux socket; ``NETSKY_SERVICE_MANAGER=none``, so the shim starts
the daemon itself, detached. Every daemon the shim starts is found by its pid (``netskyctl
ping --json``, the daemon's lock file) and killed in the fixture's cleanup; the tmux
server goes with the ``netsky`` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.rpc import Client
from netsky_shared import protocol
from tests.harness import REPO, Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SHIM = REPO / "launchd" / "netsky-shim"
LIVE_BIN = Path(sys.executable).parent
AGENTS = ["agent0", "agent1", "agentinfinity"]
BROKEN = """#!/bin/sh
echo "Traceback (most recent call last):" >&2
echo "ImportError: cannot import name 'Daemon' from 'netskyd.app.daemon'" >&2
exit 1
"""


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon the shim detached is reaped by
    whoever adopted it, which may be slow to do so)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "args="], capture_output=True, text=True, timeout=10
        )
        return out.stdout


class Shim:
    """Runs the shim for a Netsky and remembers every daemon pid it saw, to kill them."""

    def __init__(self, ns: Netsky) -> None:
        self.ns = ns
        self.pids: set[int] = set()
        self.env = {
            **ns.env,
            "NETSKY_LIVE_BIN": str(LIVE_BIN),
            "NETSKY_SERVICE_MANAGER": "none",
            "NETSKY_SHIM_ENV": str(ns.home / "no-service.env"),
            "NETSKY_SHIM_PROBE_TIMEOUT_S": "5",
            "NETSKY_SHIM_START_TIMEOUT_S": "60",
            "NETSKY_SHIM_KILL_WAIT_S": "3",
        }

    def check(self, *, shell: str = "sh", **env: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [*shell.split(), str(SHIM), "check"],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
        self.remember()
        return res

    def journal(self) -> list[dict[str, Any]]:
        path = self.ns.home / "logs" / "shim.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def daemon_pid(self, ctl: Path | None = None) -> int | None:
        """The pid that answers ``ping`` (None: nothing answers)."""
        argv = [str(ctl)] if ctl else [sys.executable, "-m", "client"]
        res = subprocess.run(
            [*argv, "ping", "--json"],
            env=self.ns.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if res.returncode != 0:
            return None
        pid = int(json.loads(res.stdout)["pid"])
        self.pids.add(pid)
        return pid

    def remember(self) -> None:
        self.daemon_pid()
        lock = self.ns.home / "state" / "netskyd.lock"
        if lock.exists() and lock.read_text().strip().isdigit():
            self.pids.add(int(lock.read_text().strip()))

    def cleanup(self) -> None:
        """End every daemon of this home the test saw (never anything else)."""
        self.remember()
        mine = [p for p in self.pids if alive(p) and "netskyd" in cmdline(p)]
        for pid in mine:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in mine):
            time.sleep(0.1)
        for pid in mine:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def shim(netsky: Netsky) -> Iterator[Shim]:
    netsky.configure(
        clones=1,
        legs={"desktop": {"notify": False}},  # the sentinel file, no notify-send
        escalation_leg_timeout_s=5.0,
    )
    s = Shim(netsky)
    try:
        yield s
    finally:
        s.cleanup()


def panes(ns: Netsky) -> dict[str, tuple[str, str]]:
    """session name -> (tmux session_id, pane pid): the same pair means the same agent."""
    out = subprocess.run(
        ["tmux", "-L", ns.socket_name, "list-panes", "-a", "-F",
         "#{session_name} #{session_id} #{pane_pid}"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    return {name: (sid, pid) for name, sid, pid in (line.split() for line in out.splitlines())}


def incidents(home: Path, key: str) -> list[dict[str, Any]]:
    folder = home / "state" / "escalations"
    rows = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
    return [r for r in rows if r["key"] == key]


def revived_events(home: Path) -> int:
    with sqlite3.connect(home / "meta.db") as db:
        (n,) = db.execute("SELECT COUNT(*) FROM events WHERE event = 'daemon.revived'").fetchone()
    return int(n)


def daemon_ready(home: Path) -> bool:
    return any(
        '"event": "daemon.ready"' in line or '"event":"daemon.ready"' in line
        for path in (home / "logs").glob("watchdog-events-*.jsonl")
        for line in path.read_text().splitlines()
    )


def broken_bin(root: Path) -> Path:
    """A live install whose netskyd and netskyctl die at import."""
    root.mkdir(parents=True)
    for name in ("netskyd", "netskyctl"):
        (root / name).write_text(BROKEN)
        (root / name).chmod(0o755)
    return root


def make_lkg(home: Path) -> Path:
    """A real last-known-good install (``python -m netskyd.keepalive.lkg.snapshot promote``)."""
    res = subprocess.run(
        [sys.executable, "-m", "netskyd.keepalive.lkg.snapshot", "promote"]
        + ["--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    current = home / "lkg" / "current"
    assert (current / "bin" / "netskyd").exists()
    return current


@pytest.mark.parametrize("shell", ["sh", "bash --posix"])
def test_the_shim_starts_netskyd_and_revives_it_with_the_same_agents(
    shim: Shim, shell: str
) -> None:
    if shutil.which(shell.split()[0]) is None:
        pytest.skip(f"{shell} is not installed")
    ns = shim.ns
    res = shim.check(shell=shell)
    assert res.returncode == 0, res.stderr
    [line] = shim.journal()
    assert line["verdict"] == "revived" and line["install"] == "live"
    first = shim.daemon_pid()
    assert first is not None and line["daemon_pid"] == first
    assert ns.ctl("up", "--timeout", "60").returncode == 0
    ns.wait_all_ready(AGENTS, 60)
    before = panes(ns)
    assert set(before) == set(AGENTS)

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first), 10, "the killed daemon to be gone")
    assert shim.daemon_pid() is None
    res = shim.check(shell=shell)
    assert res.returncode == 0, res.stderr
    second = shim.daemon_pid()
    assert second is not None and second != first
    assert shim.journal()[-1]["verdict"] == "revived"
    assert shim.journal()[-1]["daemon_pid"] == second
    ns.wait_all_ready(AGENTS, 60)
    assert panes(ns) == before  # adopted: the same sessions and panes, not respawned
    assert all(a["spawns"] == 0 for a in ns.agents().values())
    # Each start by the shim pages as daemon:revived (one incident, joined the second time).
    wait_for(lambda: revived_events(ns.home) == 2, 30, "the second daemon.revived event")
    assert incidents(ns.home, "daemon:revived")
    assert "--revived-by shim" in cmdline(second)


def test_a_healthy_daemon_is_left_alone(shim: Shim) -> None:
    ns = shim.ns
    proc = ns.start()
    res = shim.check()
    assert res.returncode == 0, res.stderr
    [line] = shim.journal()
    assert line["verdict"] == "healthy" and line["daemon_pid"] == proc.pid
    assert set(line) == {"ts", "pid", "verdict", "detail", "daemon_pid", "install",
                         "duration_ms"}  # fmt: skip
    assert shim.daemon_pid() == proc.pid and proc.poll() is None
    assert not (ns.home / "logs" / "netskyd.stderr").exists()  # it started nothing


def test_a_cleanly_stopped_daemon_is_started_again_without_a_page(shim: Shim) -> None:
    ns = shim.ns
    old = ns.start()
    # netskyd answers ping a moment before its SIGTERM handler runs (that task starts
    # after daemon.ready); a TERM before it would kill it outright.
    wait_for(lambda: daemon_ready(ns.home), 30, "daemon.ready in the journal")
    time.sleep(0.5)
    assert ns.stop() == 0  # SIGTERM: a clean shutdown marks the heartbeat "stopped"
    heartbeat = json.loads((ns.home / "state" / "heartbeat.json").read_text())
    assert heartbeat["pid"] == old.pid and heartbeat["stopped"] is True
    res = shim.check()
    assert res.returncode == 0, res.stderr
    line = shim.journal()[-1]
    assert line["verdict"] == "revived" and "stopped cleanly" in line["detail"], line
    pid = shim.daemon_pid()
    assert pid is not None and pid == line["daemon_pid"]
    assert "--revived-by" not in cmdline(pid)
    time.sleep(2)  # a revived daemon pages at once; this one must not
    assert not incidents(ns.home, "daemon:revived")


def test_a_broken_live_install_falls_back_to_the_last_known_good_one(
    shim: Shim, tmp_path: Path
) -> None:
    ns = shim.ns
    lkg = make_lkg(ns.home)
    res = shim.check(NETSKY_LIVE_BIN=str(broken_bin(tmp_path / "broken")))
    assert res.returncode == 0, res.stderr
    line = shim.journal()[-1]
    assert line["verdict"] == "revived-lkg" and line["install"] == "lkg", line
    assert "selftest failed" in line["detail"] and "ImportError" in line["detail"]
    pid = shim.daemon_pid(lkg / "bin" / "netskyctl")
    assert pid is not None and line["daemon_pid"] == pid
    assert f"{ns.home}/lkg/" in cmdline(pid)  # the daemon runs the copy's interpreter
    assert (ns.home / "state" / "install-selected").read_text().strip() == "lkg"
    [page] = incidents(ns.home, "install:lkg")
    assert page["severity"] == "warning"
    # The next run finds it healthy, on the last-known-good install.
    assert shim.check(NETSKY_LIVE_BIN=str(tmp_path / "broken")).returncode == 0
    assert shim.journal()[-1]["verdict"] == "healthy"


def test_nothing_starts_so_the_owner_is_paged(shim: Shim, tmp_path: Path) -> None:
    ns = shim.ns
    # The last-known-good install's netskyd is broken too, but its netskyctl can page.
    lkg_bin = ns.home / "lkg" / "current" / "bin"
    broken_bin(lkg_bin)
    (lkg_bin / "netskyctl").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m client "$@"\n')
    res = shim.check(NETSKY_LIVE_BIN=str(broken_bin(tmp_path / "broken")))
    assert res.returncode == 1
    line = shim.journal()[-1]
    assert line["verdict"] == "paged" and line["daemon_pid"] is None
    assert "live: selftest failed" in line["detail"] and "lkg: selftest failed" in line["detail"]
    [page] = incidents(ns.home, "daemon:down")
    assert page["severity"] == "critical"
    assert (ns.home / "OWNER-PAGE.txt").exists()  # the desktop leg's sentinel
    assert shim.daemon_pid() is None
    # The selection is left as it was: the next run tries the live install first again.
    assert (ns.home / "state" / "install-selected").read_text().strip() == "live"


def test_with_no_working_netskyctl_the_page_is_a_line_in_owner_page_txt(
    shim: Shim, tmp_path: Path
) -> None:
    ns = shim.ns
    res = shim.check(NETSKY_LIVE_BIN=str(broken_bin(tmp_path / "broken")))
    assert res.returncode == 1
    assert shim.journal()[-1]["verdict"] == "paged"
    text = (ns.home / "OWNER-PAGE.txt").read_text()
    assert "[critical] daemon:down: netskyd is down" in text
    assert not incidents(ns.home, "daemon:down")


def test_a_stale_heartbeat_is_a_wedged_daemon_and_is_restarted(shim: Shim) -> None:
    ns = shim.ns
    ns.configure(heartbeat_s=3600.0)  # the daemon must not rewrite the file under the test
    old = ns.start()
    hb = ns.home / "state" / "heartbeat.json"
    time.sleep(1.0)  # let a first heartbeat, if the daemon writes one at start, land first
    hb.write_text(json.dumps({"pid": old.pid, "epoch": int(time.time()) - 1000}) + "\n")
    res = shim.check()
    assert res.returncode == 0, res.stderr
    line = shim.journal()[-1]
    assert line["verdict"] == "revived" and "heartbeat is" in line["detail"], line
    assert old.wait(timeout=10) is not None  # the shim stopped it
    new = shim.daemon_pid()
    assert new is not None and new != old.pid


def test_a_blocked_event_loop_is_killed_and_the_daemon_restarted(shim: Shim) -> None:
    ns = shim.ns
    ns.configure(debug_rpc=True)
    old = ns.start()

    def block() -> None:
        try:
            with Client(ns.home / "netskyd.sock", timeout_s=5) as c:
                c.call(protocol.DEBUG_BLOCK_LOOP, {"seconds": 600}, timeout_s=650)
        except Exception:  # noqa: BLE001 - the daemon is killed under the call
            pass

    threading.Thread(target=block, daemon=True).start()
    wait_for(lambda: ns.ctl("ping", timeout=30).returncode != 0, 30, "the event loop to be blocked")
    res = shim.check(NETSKY_SHIM_PROBE_TIMEOUT_S="3")
    assert res.returncode == 0, res.stderr
    line = shim.journal()[-1]
    assert line["verdict"] == "revived", line
    assert f"killed pid {old.pid}" in line["detail"]  # TERM is not enough for a wedged loop
    assert old.wait(timeout=10) == -signal.SIGKILL
    new = shim.daemon_pid()
    assert new is not None and new != old.pid
