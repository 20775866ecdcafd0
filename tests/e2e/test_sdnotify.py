"""End to end: a real netskyd speaks sd_notify(3) to a datagram socket the test binds.

The daemon gets ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` as systemd would pass them; a
thread in the test receives every datagram with its arrival time. READY=1 comes once
every task started, STATUS= lines follow the ticks, WATCHDOG=1 pings come from the event
loop (a loop blocked by ``debug.block_loop`` sends none), the heartbeat file advances, and
SIGTERM brings STOPPING=1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.incidents import parse_rfc3339
from tests.harness import EnvNetsky, Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WATCHDOG_USEC = 1_000_000  # the daemon pings every 0.5 s
BLOCK_S = 3.0


@dataclass
class Datagram:
    mono: float
    wall: float
    lines: list[str]


@dataclass
class Manager:
    """A stand-in service manager: a bound AF_UNIX datagram socket and what arrived."""

    path: Path
    sock: socket.socket
    received: list[Datagram] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(Datagram(time.monotonic(), time.time(), data.decode().split("\n")))

    def with_line(self, prefix: str) -> list[Datagram]:
        return [d for d in list(self.received) if any(ln.startswith(prefix) for ln in d.lines)]

    def pings(self) -> list[float]:
        return [d.mono for d in self.with_line("WATCHDOG=1")]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    m = Manager(path, sock)
    thread = threading.Thread(target=m.serve, name="sd-manager", daemon=True)
    thread.start()
    try:
        yield m
    finally:
        m.stop.set()
        thread.join(timeout=5)
        sock.close()


def _journal(home: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((home / "logs").glob("watchdog-events-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["event"] == name]


def _heartbeat(home: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((home / "state" / "heartbeat.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_sd_notify_ready_status_watchdog_stopping(netsky: Netsky, manager: Manager) -> None:
    ns = EnvNetsky(
        netsky,
        {"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)},
        strip_prefixes=("NOTIFY_SOCKET", "WATCHDOG_"),
    )
    ns.configure(clones=0, debug_rpc=True)
    ns.start(wait=False)

    # READY=1, once: after the pulse started (its first ping) and after daemon.ready.
    ready = wait_for(lambda: manager.with_line("READY=1"), 30, "READY=1")[0]
    assert any(ln.startswith("STATUS=ready") for ln in ready.lines), ready.lines
    assert manager.pings() and manager.pings()[0] <= ready.mono, "the pulse was not started"
    journalled = _journal(ns.home, "daemon.ready")
    assert len(journalled) == 1, journalled
    ready_ts = parse_rfc3339(journalled[0]["ts"])
    assert ready_ts is not None and ready_ts <= ready.wall + 0.01
    assert journalled[0]["sd_notify"] is True and journalled[0]["watchdog_s"] == 1.0
    # The control socket was serving by then: it answers at once.
    with Client(ns.home / "netskyd.sock", timeout_s=5) as c:
        assert c.call(protocol.PING)["pong"] is True

    # Ticks report a one-line STATUS=.
    status = wait_for(lambda: manager.with_line("STATUS=tick "), 15, "a tick's STATUS=")[0]
    line = next(ln for ln in status.lines if ln.startswith("STATUS="))
    assert "agents" in line and "open incident" in line, line

    # Children (the tmux server, hence every agent) do not inherit the manager's socket.
    wait_for(lambda: ns.tmux.is_alive(), 30, "the daemon's tmux server")
    env = subprocess.run(
        ["tmux", "-L", ns.socket_name, "show-environment", "-g"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    assert "NOTIFY_SOCKET=" not in env and "WATCHDOG_USEC=" not in env

    # Pings keep coming, and the heartbeat advances.
    first = wait_for(lambda: _heartbeat(ns.home), 10, "state/heartbeat.json")
    assert set(first) == {"pid", "epoch", "ts", "last_tick_ts", "install", "executable", "version"}
    assert ns.proc is not None and first["pid"] == ns.proc.pid
    assert first["install"] == "live"
    wait_for(
        lambda: (_heartbeat(ns.home) or {}).get("epoch", 0) > first["epoch"],
        10,
        "the heartbeat's epoch to advance",
    )
    hb = _heartbeat(ns.home)
    assert hb is not None and hb["last_tick_ts"] is not None
    t = time.monotonic()
    wait_for(lambda: len([p for p in manager.pings() if p > t]) >= 4, 10, "4 more pings")

    # A blocked event loop sends no pings; they resume when it runs again.
    sock_path = ns.home / "netskyd.sock"
    result: dict[str, Any] = {}

    def block() -> None:
        with Client(sock_path, timeout_s=BLOCK_S + 20) as c:
            result["sent"] = time.monotonic()
            result["answer"] = c.call(protocol.DEBUG_BLOCK_LOOP, {"seconds": BLOCK_S})
            result["done"] = time.monotonic()

    blocker = threading.Thread(target=block, name="block-loop", daemon=True)
    blocker.start()
    blocker.join(timeout=BLOCK_S + 25)
    assert not blocker.is_alive() and result.get("answer") == {"blocked_s": BLOCK_S}, result
    # The loop was blocked for BLOCK_S seconds between "sent" and "done", so it surely was
    # over [done - BLOCK_S, sent + BLOCK_S]; the start gets a margin for a ping sent just
    # before the block and received after it.
    quiet_from = result["done"] - BLOCK_S + 0.5
    quiet_to = result["sent"] + BLOCK_S
    assert quiet_to - quiet_from > 1.0, result  # a running loop pings twice in it
    during = [p for p in manager.pings() if quiet_from < p < quiet_to]
    assert during == [], (during, quiet_from, quiet_to)
    wait_for(
        lambda: len([p for p in manager.pings() if p > result["done"]]) >= 2,
        10,
        "pings after the block",
    )

    # SIGTERM: STOPPING=1 before the process exits.
    assert ns.stop() == 0, ns.stderr()
    stopping = wait_for(lambda: manager.with_line("STOPPING=1"), 5, "STOPPING=1")
    assert len(stopping) == 1
    assert len(manager.with_line("READY=1")) == 1
    # A clean stop marks the heartbeat, so the shim does not page a "revived" daemon.
    stopped = _heartbeat(ns.home)
    assert stopped is not None and stopped["stopped"] is True and stopped["pid"] == first["pid"]


@pytest.mark.timeout(90)
def test_sigterm_as_soon_as_the_socket_exists_stops_cleanly(netsky: Netsky) -> None:
    """The signal receiver is installed before the control socket: a SIGTERM sent the
    moment the socket appears is a clean stop (exit 0, socket removed), not a kill."""
    netsky.configure(runtime="shell", clones=0)
    sock = netsky.home / "netskyd.sock"

    def up_or_died() -> bool:
        return sock.exists() or netsky._died()

    for _ in range(3):
        proc = netsky.start(wait=False)
        wait_for(up_or_died, 30, "the socket", step_s=0.002)
        assert proc.poll() is None, netsky.stderr()
        assert netsky.stop() == 0, netsky.stderr()
        assert not sock.exists()
