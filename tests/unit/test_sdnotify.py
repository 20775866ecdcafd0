"""sd_notify client and the pulse's rules, against real AF_UNIX datagram sockets.

The Notifier's datagrams are read back from a socket bound by the test (a file-system
path and an abstract ``@name``); the pulse's decisions are tables; one beat runs on a
real Recorder (meta.db, journal) with an injected clock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from netskyd.config import Settings
from netskyd.keepalive.heartbeat import (
    Pulse,
    heartbeat_record,
    install_kind,
    pulse_interval_s,
    stall_after_s,
    tick_is_stale,
)
from netskyd.keepalive.sdnotify import Notifier, socket_address, status_line
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder

pytestmark = pytest.mark.timeout(30)

PID = os.getpid()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket and its NOTIFY_SOCKET value (a path)."""
    base = tmp_path
    short = None
    if len(str(tmp_path / "notify.sock")) > 100:  # sun_path holds ~108 bytes
        short = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
        base = Path(short)
    path = base / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        if short is not None:
            os.rmdir(short)


def recv(sock: socket.socket, timeout_s: float = 2.0) -> bytes:
    sock.settimeout(timeout_s)
    return sock.recv(65536)


def nothing_arrives(sock: socket.socket, within_s: float = 0.3) -> bool:
    sock.settimeout(within_s)
    try:
        sock.recv(65536)
    except TimeoutError:
        return True
    return False


def test_datagrams_are_exactly_the_protocol(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, pid=PID)
    assert n.enabled and n.watchdog_s == 2.0

    assert n.ready("up:\n3 agents\r\n")
    assert recv(sock) == b"READY=1\nSTATUS=up: 3 agents"
    assert n.ready()
    assert recv(sock) == b"READY=1"
    assert n.status("tick 1 ok in 3ms;\nagents 2/2 alive")
    assert recv(sock) == b"STATUS=tick 1 ok in 3ms; agents 2/2 alive"
    assert n.watchdog()
    assert recv(sock) == b"WATCHDOG=1"
    assert n.stopping("stopping (SIGTERM)")
    assert recv(sock) == b"STOPPING=1\nSTATUS=stopping (SIGTERM)"
    assert n.stopping()
    assert recv(sock) == b"STOPPING=1"
    assert n.reloading()
    first, second = recv(sock).split(b"\n")
    assert first == b"RELOADING=1"
    assert second.startswith(b"MONOTONIC_USEC=") and second[15:].isdigit()
    assert n.send("A=1", "B=2")
    assert recv(sock) == b"A=1\nB=2"
    assert n.sent == 8 and n.failed == 0


def test_status_is_one_short_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier.from_environ({"NOTIFY_SOCKET": path})
    n.status("x" * 500 + "\nsecond line")
    data = recv(sock)
    assert b"\n" not in data
    assert data.startswith(b"STATUS=xxx")
    assert len(data) == len("STATUS=") + 200
    assert status_line("a\n\nb\tc  ") == "a b c"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets: Linux")
def test_abstract_namespace_socket() -> None:
    name = f"netsky-test-{uuid.uuid4().hex[:12]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        n = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "500000"})
        assert n.enabled and n.watchdog_s == 0.5
        assert n.ready("ok")
        assert recv(sock) == b"READY=1\nSTATUS=ok"
        assert n.watchdog()
        assert recv(sock) == b"WATCHDOG=1"


def test_disabled_notifier_is_a_no_op() -> None:
    n = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_s is None
    assert not n.ready("x")
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.stopping()
    assert not n.reloading()
    assert n.describe() == {"sd_notify": False, "watchdog_s": None}
    assert n.sent == n.failed == 0


def test_watchdog_pid_of_another_process_disables_pings(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(PID + 1)}
    other = Notifier.from_environ(env, pid=PID)
    assert other.watchdog_s is None
    assert not other.watchdog()
    assert nothing_arrives(sock)
    # The rest of the protocol still reaches the manager.
    assert other.ready()
    assert recv(sock) == b"READY=1"

    mine = Notifier.from_environ({**env, "WATCHDOG_PID": str(PID)}, pid=PID)
    assert mine.watchdog_s == 1.0
    assert mine.watchdog()
    assert recv(sock) == b"WATCHDOG=1"


def test_a_missing_manager_is_logged_not_raised(tmp_path: Path) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert n.enabled
    assert not n.ready()
    assert not n.status("x")
    assert n.failed == 2 and n.sent == 0


@pytest.mark.parametrize(
    ("env", "watchdog_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "1000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(PID)}, 1.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(PID + 7)}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "self"}, None),
    ],
)
def test_watchdog_interval_from_environ(env: dict[str, str], watchdog_s: float | None) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x.sock", **env}, pid=PID)
    assert n.watchdog_s == watchdog_s


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@sd-notify", "\0sd-notify"),
        ("@", None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_socket_address(value: str | None, address: str | None) -> None:
    assert socket_address(value) == address


# The pulse's rules.


@pytest.mark.parametrize(
    ("last_tick_at", "started_at", "now", "stall_s", "stale"),
    [
        (None, 1000.0, 1000.0, 10.0, False),  # just started, no tick yet
        (None, 1000.0, 1010.0, 10.0, False),  # exactly at the limit
        (None, 1000.0, 1010.5, 10.0, True),  # no first tick within the limit
        (1005.0, 1000.0, 1014.0, 10.0, False),
        (1005.0, 1000.0, 1016.0, 10.0, True),  # the tick stopped
        (1005.0, 1000.0, 990.0, 10.0, False),  # the wall clock stepped back
        (1000.0, 900.0, 1200.0, 300.0, False),
    ],
)
def test_tick_staleness(
    last_tick_at: float | None, started_at: float, now: float, stall_s: float, stale: bool
) -> None:
    assert tick_is_stale(last_tick_at, started_at, now, stall_s) is stale


@pytest.mark.parametrize(
    ("tick_stall_s", "tick_interval_s", "tmux_timeout_s", "expected"),
    [
        (42.0, 60.0, 5.0, 42.0),  # configured
        (None, 60.0, 5.0, 3 * 60 + 30.0),  # deadline capped at 30 s
        (None, 1.0, 5.0, 3 * 1 + 20.0),  # deadline at least 4 tmux timeouts
        (None, 10.0, 1.0, 3 * 10 + 10.0),
    ],
)
def test_stall_after(
    tick_stall_s: float | None, tick_interval_s: float, tmux_timeout_s: float, expected: float
) -> None:
    assert stall_after_s(tick_stall_s, tick_interval_s, tmux_timeout_s) == expected


@pytest.mark.parametrize(
    ("heartbeat_s", "watchdog_s", "expected"),
    [(10.0, None, 10.0), (10.0, 60.0, 10.0), (10.0, 1.0, 0.5), (10.0, 20.0, 10.0)],
)
def test_pulse_interval(heartbeat_s: float, watchdog_s: float | None, expected: float) -> None:
    assert pulse_interval_s(heartbeat_s, watchdog_s) == expected


def test_install_kind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    lkg_bin = home / "lkg" / "20240101-abc" / "venv" / "bin"
    lkg_bin.mkdir(parents=True)
    base = tmp_path / "base-python"
    base.write_text("")
    (lkg_bin / "python").symlink_to(base)  # a venv's python links to the base one
    (tmp_path / "home-link").symlink_to(home)
    assert install_kind(str(lkg_bin / "python"), home / "lkg") == "lkg"
    assert install_kind(str(lkg_bin / "python"), tmp_path / "home-link" / "lkg") == "lkg"
    via_link = tmp_path / "home-link" / "lkg" / "20240101-abc" / "venv" / "bin" / "python"
    assert install_kind(str(via_link), home / "lkg") == "lkg"
    assert install_kind(str(base), home / "lkg") == "live"
    assert install_kind("/usr/bin/python3", home / "lkg") == "live"


def test_heartbeat_record_shape() -> None:
    rec = heartbeat_record(
        pid=12, now=1700000000.25, last_tick_at=None, install="live", executable="/x/python"
    )
    assert rec == {
        "pid": 12,
        "epoch": 1700000000,
        "ts": "2023-11-14T22:13:20.250000Z",
        "last_tick_ts": None,
        "install": "live",
        "executable": "/x/python",
        "version": rec["version"],
    }
    assert isinstance(rec["version"], str) and rec["version"]
    later = heartbeat_record(
        pid=12, now=1700000005.0, last_tick_at=1700000004.5, install="lkg", executable="/x"
    )
    assert later["last_tick_ts"] == "2023-11-14T22:13:24.500000Z"


# One beat at a time, on a real Recorder.


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ticks:
    """A TickView (netskyd.ports) the test moves by hand."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.last_tick_at: float | None = None
        self.tick_count = 0


@asynccontextmanager
async def pulse_ctx(
    home: Path, notifier: Notifier, clock: Clock
) -> AsyncIterator[tuple[Pulse, Ticks, Settings]]:
    s = Settings(home=home, tick_interval_s=1.0, tick_stall_s=10.0)
    for d in (s.paths.state, s.paths.logs):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(s.paths.db)
    try:
        ticks = Ticks(clock.now)
        pulse = Pulse(
            settings=lambda: s,
            ticks=ticks,
            notifier=notifier,
            recorder=Recorder(Journal(s.paths.logs), store),
            clock=clock,
        )
        yield pulse, ticks, s
    finally:
        await store.close()


def journal_events(home: Path, name: str) -> list[dict[str, object]]:
    rows = []
    for path in sorted((home / "logs").glob("watchdog-events-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["event"] == name]


async def test_beats_only_while_ticks_are_fresh(
    tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    clock = Clock(1_700_000_000.0)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    home = tmp_path / "home"
    async with pulse_ctx(home, notifier, clock) as (pulse, ticks, settings):
        heartbeat = settings.paths.heartbeat

        # Fresh (start-up, no tick yet): heartbeat plus a ping.
        assert await pulse.beat()
        assert recv(sock) == b"WATCHDOG=1"
        hb = json.loads(heartbeat.read_text())
        assert hb["pid"] == os.getpid() and hb["epoch"] == 1_700_000_000
        assert hb["last_tick_ts"] is None and hb["install"] == "live"
        assert hb["executable"] == sys.executable
        assert heartbeat.read_text().count("\n") == 1
        assert [p.name for p in heartbeat.parent.iterdir() if "tmp" in p.name] == []

        ticks.last_tick_at = clock.now = 1_700_000_005.0
        assert await pulse.beat()
        assert recv(sock) == b"WATCHDOG=1"
        assert json.loads(heartbeat.read_text())["epoch"] == 1_700_000_005

        # The tick stops: no heartbeat, no ping, one event however many beats.
        for t in (1_700_000_016.0, 1_700_000_020.0, 1_700_000_030.0):
            clock.now = t
            assert not await pulse.beat()
        assert nothing_arrives(sock)
        assert json.loads(heartbeat.read_text())["epoch"] == 1_700_000_005
        stalled = journal_events(home, "daemon.tick_stalled")
        assert len(stalled) == 1 and stalled[0]["stall_s"] == 10.0

        # A tick finishes again: beats resume and the recovery is recorded once.
        ticks.last_tick_at = clock.now = 1_700_000_031.0
        assert await pulse.beat()
        assert recv(sock) == b"WATCHDOG=1"
        assert json.loads(heartbeat.read_text())["epoch"] == 1_700_000_031
        assert await pulse.beat()
        assert recv(sock) == b"WATCHDOG=1"
        recovered = journal_events(home, "daemon.tick_recovered")
        assert len(recovered) == 1 and recovered[0]["stalled_s"] == 15.0
