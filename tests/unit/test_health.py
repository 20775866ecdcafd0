"""Health report and doctor: the status rules, the report from real files, each check."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from client import doctor as cd
from client import health as ch
from client.netskyctl import main
from netsky_shared import health as healthfiles
from netsky_shared.incidents import new_incident, rfc3339, write_incident
from netskyd import __version__
from netskyd.keepalive.health import refresh
from netskyd.keepalive.sdnotify import Notifier

pytestmark = pytest.mark.timeout(60)
NOW = 1_800_000_000.0


def _write(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def _incident(home: Path, key: str, severity: str, n: int) -> None:
    ts = NOW - 60 + n
    inc = new_incident(
        time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(ts))) + f"-0000000{n}",
        key,
        f"{key} subject",
        "body",
        ts,
        severity,
    )
    write_incident(str(home), inc)


# ----- status rules ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "running": True,
    "tick_age_s": 5.0,
    "ticked": True,
    "tick_interval_s": 60.0,
    "not_alive": [],
    "markers": {"gave_up": [], "crash_loop": [], "hang": [], "limit": []},
    "critical": [],
    "legs": {},
    "failing_after": 3,
    "problems": [],
}
CASES: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("all well", {}, "ok", None),
    ("tick 3 intervals old is still ok", {"tick_age_s": 180.0}, "ok", None),
    ("tick older than 3 intervals", {"tick_age_s": 181.0}, "degraded", "last tick was 181s ago"),
    (
        "no tick since a start long ago",
        {"tick_age_s": 200.0, "ticked": False},
        "degraded",
        "no tick in the 200s",
    ),
    ("no tick yet, just started", {"tick_age_s": 2.0, "ticked": False}, "ok", None),
    ("agent wanted but dead", {"not_alive": ["agent0"]}, "degraded", "agent0 is wanted"),
    ("two agents dead", {"not_alive": ["agent0", "agent2"]}, "degraded", "agent0, agent2 are"),
    (
        "gave up",
        {"markers": {**BASE["markers"], "gave_up": ["agent0"]}},
        "degraded",
        "gave up restarting agent0",
    ),
    (
        "crash loop",
        {"markers": {**BASE["markers"], "crash_loop": ["agent1"]}},
        "degraded",
        "crash loop: agent1",
    ),
    (
        "hang alone is not degraded",
        {"markers": {**BASE["markers"], "hang": ["agent1"]}},
        "ok",
        None,
    ),
    ("critical incident", {"critical": ["daemon:down"]}, "degraded", "critical incident open"),
    (
        "leg failing at the threshold",
        {"legs": {"email": {"last": "failed", "failing": 3}}},
        "degraded",
        "email page leg failed 3 times",
    ),
    ("leg failing below it", {"legs": {"email": {"last": "failed", "failing": 2}}}, "ok", None),
    ("bad marker file", {"problems": ["state/gave-up.json cannot be read"]}, "degraded", "gave-up"),
    ("not running", {"running": False}, "down", "netskyd is not running"),
    (
        "not running ignores ticks and liveness",
        {"running": False, "tick_age_s": 999.0, "not_alive": ["agent0"]},
        "down",
        "netskyd is not running",
    ),
]


@pytest.mark.parametrize(
    ("change", "status", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_status_rules(change: dict[str, Any], status: str, reason: str | None) -> None:
    got, reasons = healthfiles.judge(**{**BASE, **change})
    assert got == status
    if reason is None:
        assert reasons == []
    else:
        assert any(reason in r for r in reasons), reasons
    if change.get("running") is False:
        assert len(reasons) == 1 and "agent0" not in reasons[0]


# ----- the report from files (the client's "down" report) -------------------------------------


def _populate(home: Path) -> dict[str, Any]:
    state = home / "state"
    _write(
        state / "heartbeat.json",
        {
            "pid": 4242,
            "epoch": int(NOW - 30),
            "ts": rfc3339(NOW - 30),
            "last_tick_ts": rfc3339(NOW - 45),
            "install": "live",
            "executable": "/x/bin/python",
            "version": __version__,
        },
    )
    _write(state / "gave-up.json", {"agents": {"agent0": {"attempts": 5}}})
    _write(state / "crashloop.json", {"agents": {"agent1": {"restarts": 5}}})
    _write(state / "hang" / "agent2.json", {"agent": "agent2", "since": rfc3339(NOW)})
    _write(state / "limit" / "agent3.json", {"agent": "agent3", "state": "parked"})
    _write(state / "limit" / "agent4.json", {"agent": "agent4", "state": "released"})
    _write(state / "legs.json", {"email": {"failures": 4, "status": "failed"}})
    _write(
        state / "desired.json", {"state": "up", "agents": {"agentinfinity": None, "agent0": None}}
    )
    _incident(home, "agent0:gave-up", "critical", 1)
    _incident(home, "hang:agent2", "warning", 2)
    _write(
        home / "lkg" / "l1" / "manifest.json",
        {"id": "l1", "version": "0.0.9", "created_ts": rfc3339(NOW - 3600)},
    )
    (home / "lkg" / "current").symlink_to("l1")
    last = {"ts": rfc3339(NOW - 90), "pid": 1, "verdict": "revived", "detail": "socket dead"}
    _write(
        home / "logs" / "shim.jsonl",
        json.dumps({"ts": rfc3339(NOW - 300), "verdict": "healthy"})
        + "\n"
        + json.dumps(last)
        + "\n",
    )
    return last


def test_client_report_from_files(tmp_path: Path) -> None:
    last = _populate(tmp_path)
    r = healthfiles.client_report(str(tmp_path), NOW, reason="no socket", tick_interval_s=60.0)
    assert r["status"] == "down" and r["source"] == "client"
    assert r["reasons"][0] == "no socket"
    text = " | ".join(r["reasons"])
    for part in ("gave up restarting agent0", "crash loop: agent1", "agent0:gave-up", "email"):
        assert part in text
    assert r["markers"] == {
        "gave_up": ["agent0"],
        "crash_loop": ["agent1"],
        "hang": ["agent2"],
        "limit": ["agent3"],
    }
    assert r["incidents"] == {"open": 2, "keys": ["agent0:gave-up", "hang:agent2"]}
    assert r["legs"] == {"email": {"last": "failed", "failing": 4}}
    assert r["lkg"] == {
        "present": True,
        "id": "l1",
        "version": "0.0.9",
        "created_ts": rfc3339(NOW - 3600),
        "age_s": 3600.0,
    }
    assert r["shim"] == {"last": last}
    d = r["daemon"]
    assert d["heartbeat_age_s"] == 30.0 and d["last_tick_age_s"] == 45.0
    assert d["pid"] is None and d["install"] == "live"
    assert [a["agent"] for a in r["agents"]] == ["agent0", "agentinfinity"]
    assert r["agents"][0]["alive"] is None
    assert set(r) == {
        "ts", "status", "reasons", "source", "daemon", "agents", "incidents", "markers",
        "legs", "lkg", "shim",
    }  # fmt: skip


def test_a_bad_marker_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    bad = _write(tmp_path / "state" / "crashloop.json", "{not json")
    _write(tmp_path / "state" / "hang" / "agent1.json", "[1, 2]")
    _write(tmp_path / "state" / "escalations" / "20261121T100000Z-deadbeef.json", "{}")
    _write(tmp_path / "logs" / "shim.jsonl", "garbage\n")
    _write(tmp_path / "lkg" / "current" / "manifest.json", "nope")
    r = healthfiles.client_report(str(tmp_path), NOW, running=True, reason="slow")
    assert r["status"] == "degraded"
    text = " | ".join(r["reasons"])
    assert "state/crashloop.json cannot be read" in text
    assert "state/hang/agent1.json cannot be read" in text
    assert "20261121T100000Z-deadbeef.json" in text
    assert r["shim"]["last"] is None and r["lkg"]["present"] is False
    assert bad.exists(), "health only reads: the marker's owner moves it aside"


def test_health_once_without_daemon_writes_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _populate(tmp_path)
    code = main(["health", "--once", "--json"], {"NETSKY_HOME": str(tmp_path)})
    assert code == 3
    shown = json.loads(capsys.readouterr().out)
    on_disk = json.loads((tmp_path / "state" / "health.json").read_text())
    assert shown == on_disk
    assert on_disk["status"] == "down" and "not running" in on_disk["reasons"][0]
    assert not list((tmp_path / "state").glob(".health.json.*"))

    assert main(["health", "--once"], {"NETSKY_HOME": str(tmp_path)}) == 3
    text = capsys.readouterr().out
    assert "health: DOWN" in text and "markers: gave up: agent0" in text
    assert "shim: last run" in text and "revived (socket dead)" in text


def test_a_daemon_that_does_not_answer_is_degraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ch, "HEALTH_TIMEOUT_S", 0.3)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "netskyd.sock"))
    srv.listen(4)  # accepts connections, never answers: a wedged event loop
    try:
        code = main(["health", "--once", "--json"], {"NETSKY_HOME": str(tmp_path)})
    finally:
        srv.close()
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "degraded" and "did not give a health report" in report["reasons"][0]
    assert json.loads((tmp_path / "state" / "health.json").read_text())["status"] == "degraded"


def test_health_watch_prints_a_line_per_refresh_until_ctrl_c(tmp_path: Path) -> None:
    env = {"NETSKY_HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", "health", "--json", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert [json.loads(line)["status"] for line in lines] == ["down"] * 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_interval_is_usage(tmp_path: Path) -> None:
    assert main(["health", "--interval", "0"], {"NETSKY_HOME": str(tmp_path)}) == 2


# ----- the daemon side, against a small fake context -----------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def event(self, name: str, **fields: Any) -> str:
        self.events.append(name)
        return ""


def _ctx(home: Path, *, alive: bool, last_tick_at: float | None) -> dict[str, Any]:
    """The keyword arguments of ``refresh`` (each port a small stand-in)."""
    from netsky_shared.paths import Paths
    from netskyd.supervision.desired import constellation

    agents = {
        a: SimpleNamespace(alive=alive, ready=alive, spawning=False)
        for a in ("agent0", "agentinfinity")
    }
    settings = SimpleNamespace(
        home=home, paths=Paths(home), tick_interval_s=1.0, escalation_leg_failing_after=3
    )
    return dict(
        settings=lambda: settings,
        clock=lambda: NOW,
        ticks=SimpleNamespace(started_at=NOW - 100, last_tick_at=last_tick_at, tick_count=1),
        notifier=Notifier("/run/x", watchdog_usec=30_000_000),
        agents=SimpleNamespace(desired=constellation(0), agents=agents),
        activity=SimpleNamespace(activity=lambda agent: ("idle", "at its prompt")),
        recorder=_Recorder(),
    )


async def test_refresh_ok_writes_the_file(tmp_path: Path) -> None:
    report = await refresh(**_ctx(tmp_path, alive=True, last_tick_at=NOW - 0.5))
    assert report["status"] == "ok" and report["reasons"] == [] and report["source"] == "daemon"
    assert report["agents"] == [
        {"agent": "agent0", "alive": True, "ready": True, "activity": "idle"},
        {"agent": "agentinfinity", "alive": True, "ready": True, "activity": "idle"},
    ]
    d = report["daemon"]
    assert d["pid"] == os.getpid() and d["uptime_s"] == 100.0 and d["last_tick_age_s"] == 0.5
    assert d["sd_notify"] is True and d["watchdog_s"] == 30.0
    assert json.loads((tmp_path / "state" / "health.json").read_text()) == report


async def test_refresh_degraded_for_dead_agents_and_a_stale_tick(tmp_path: Path) -> None:
    report = await refresh(**_ctx(tmp_path, alive=False, last_tick_at=NOW - 10))
    assert report["status"] == "degraded"
    assert report["reasons"] == [
        "the last tick was 10s ago (due every 1s)",
        "agent0, agentinfinity are wanted but not running",
    ]


# ----- doctor ---------------------------------------------------------------------------------


def _fake_tmux(bin_dir: Path, output: str) -> None:
    _write(bin_dir / "tmux", f"#!/bin/sh\necho '{output}'\n").chmod(0o755)


@pytest.mark.parametrize(
    ("version", "status"),
    [("tmux 2.9a", "fail"), ("tmux 3.0", "ok"), ("tmux next-3.5", "ok"), ("tmux master", "warn")],
)
def test_tmux_check(tmp_path: Path, version: str, status: str) -> None:
    _fake_tmux(tmp_path, version)
    got = cd.check_tmux({"PATH": str(tmp_path)})
    assert got["status"] == status and version in got["detail"]


def test_tmux_missing_fails(tmp_path: Path) -> None:
    got = cd.check_tmux({"PATH": str(tmp_path)})
    assert got["status"] == "fail" and got["hint"]


def test_units_check(tmp_path: Path) -> None:
    env = {"NETSKY_UNIT_DIR": str(tmp_path)}
    got = cd.check_units(env, "linux")
    assert got["status"] == "warn" and got["hint"] == "netskyctl service install"
    for name in cd.LINUX_UNITS:
        _write(tmp_path / name, "[Unit]\n")
    assert cd.check_units(env, "linux")["status"] == "ok"
    assert cd.check_units(env, "darwin")["status"] == "warn"  # plists, not units
    for name in cd.MACOS_UNITS:
        _write(tmp_path / name, "<plist/>")
    assert cd.check_units(env, "darwin")["status"] == "ok"
    assert cd.unit_dir({"HOME": "/h"}, "linux") == "/h/.config/systemd/user"
    assert cd.unit_dir({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "linux") == "/x/systemd/user"
    assert cd.unit_dir({"HOME": "/h"}, "darwin") == "/h/Library/LaunchAgents"


@pytest.mark.parametrize(
    ("toml", "status"),
    [
        ("", "warn"),
        ("[legs.desktop]\nnotify = true\n", "warn"),
        ('[legs.email]\nto = ["a@b.c"]\nenabled = false\n', "warn"),
        ('[legs.email]\nto = ["a@b.c"]\n', "ok"),
        ('[legs.ntfy]\ntype = "webhook"\nurl = "https://x"\n', "ok"),
        ("legs = [", "fail"),
    ],
)
def test_legs_check(tmp_path: Path, toml: str, status: str) -> None:
    _write(tmp_path / "config.toml", toml)
    got = cd.check_legs({}, str(tmp_path))
    assert got["status"] == status
    if status == "warn":
        assert "paged only at this machine" in got["detail"]


@pytest.mark.parametrize(("db", "status"), [(9, "fail"), (2, "warn"), (4, "ok")])
def test_schema_check(tmp_path: Path, db: int, status: str) -> None:
    conn = sqlite3.connect(tmp_path / "meta.db")
    conn.execute(f"PRAGMA user_version = {db}")
    conn.close()
    got = cd.check_schema(str(tmp_path), code_version=4)
    assert got["status"] == status
    if status == "warn":
        assert "migrates on next start" in got["detail"]


def test_schema_check_against_this_install(tmp_path: Path) -> None:
    from netsky_shared.protocol import SCHEMA_VERSION

    conn = sqlite3.connect(tmp_path / "meta.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert cd.check_schema(str(tmp_path))["status"] == "fail"


def test_shim_and_lkg_checks(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert cd.check_shim(home, units_installed=True)["status"] == "warn"
    _write(tmp_path / "bin" / "netsky-shim", "#!/bin/sh\n").chmod(0o755)
    assert cd.check_shim(home, units_installed=False)["status"] == "ok"
    assert cd.check_shim(home, units_installed=True)["status"] == "warn"  # never ran
    _write(tmp_path / "logs" / "shim.jsonl", json.dumps({"ts": rfc3339(NOW - 900)}) + "\n")
    assert cd.check_shim(home, True, now_s=NOW)["status"] == "warn"
    assert cd.check_shim(home, False, now_s=NOW)["status"] == "ok"
    assert cd.check_shim(home, True, now_s=NOW - 600)["status"] == "ok"

    assert cd.check_lkg(home)["hint"] == "netskyctl self-repair promote"
    manifest = {"id": "x1", "version": "0.0.1", "created_ts": rfc3339(time.time())}
    _write(tmp_path / "lkg" / "current" / "manifest.json", manifest)
    got = cd.check_lkg(home)
    assert got["status"] == "warn" and "0.0.1" in got["detail"]
    _write(tmp_path / "lkg" / "current" / "manifest.json", {**manifest, "version": __version__})
    assert cd.check_lkg(home)["status"] == "ok"


def test_socket_check_without_daemon(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert cd.check_socket(home, cd.probe(home))["status"] == "warn"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "netskyd.sock"))
    try:
        os.chmod(tmp_path / "netskyd.sock", 0o666)
        got = cd.check_socket(home, cd.probe(home))
        assert got["status"] == "fail" and "0666" in got["detail"]
        os.chmod(tmp_path / "netskyd.sock", 0o600)
        got = cd.check_socket(home, cd.probe(home))  # bound, nobody listens: stale
        assert got["status"] == "warn" and "not running" in got["detail"]
    finally:
        srv.close()


def test_version_check() -> None:
    from netsky_shared import protocol

    same = {"version": __version__, "api_version": protocol.API_VERSION}
    assert cd.check_version({"state": "up", "hello": same})["status"] == "ok"
    other = {**same, "version": "9.9.9"}
    assert cd.check_version({"state": "up", "hello": other})["status"] == "fail"
    assert cd.check_version({"state": "skew", "hello": None, "message": "x"})["status"] == "fail"
    assert cd.check_version({"state": "down", "hello": None, "message": "x"})["status"] == "warn"


def test_doctor_json_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin-fake"
    _fake_tmux(bin_dir, "tmux 3.4")
    home = tmp_path / "home"
    home.mkdir()
    env = {"NETSKY_HOME": str(home), "PATH": str(bin_dir), "NETSKY_UNIT_DIR": str(tmp_path / "u")}
    assert main(["doctor", "--json"], env) == 0
    got = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in got["checks"]}
    assert got["ok"] is True
    assert list(by_name) == [
        "tmux", "socket", "version", "schema", "units", "shim", "lkg", "legs",
        "workspaces", "head-stability", "cron", "owner", "skills",
    ]  # fmt: skip
    assert all(set(c) == {"name", "status", "detail", "hint"} for c in got["checks"])
    assert by_name["units"]["status"] == "warn" and by_name["legs"]["status"] == "warn"

    _fake_tmux(bin_dir, "tmux 1.8")
    assert main(["doctor"], env) == 1
    text = capsys.readouterr().out
    assert (
        "FAIL  tmux" in text and "WARN  units" in text and "hint: netskyctl service install" in text
    )
