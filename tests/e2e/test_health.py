"""End to end: ``netskyctl health`` and ``doctor`` against a real netskyd and demo agents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
AGENTS = ["agent0", "agentinfinity"]
REPORT_KEYS = {
    "ts", "status", "reasons", "source", "daemon", "agents", "incidents", "markers", "legs",
    "lkg", "shim",
}  # fmt: skip


def _health(netsky: Netsky) -> tuple[int, dict[str, Any]]:
    res = netsky.ctl("health", "--once", "--json", timeout=30)
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def _on_disk(netsky: Netsky) -> dict[str, Any]:
    return dict(json.loads((netsky.home / "state" / "health.json").read_text()))


def _doctor(netsky: Netsky, unit_dir: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    res = subprocess.run(
        [sys.executable, "-m", "client", "doctor", "--json"],
        env={**netsky.env, "NETSKY_UNIT_DIR": str(unit_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.stdout, res.stderr
    return res.returncode, {c["name"]: c for c in json.loads(res.stdout)["checks"]}


def test_health_and_doctor_follow_the_daemon(netsky: Netsky, tmp_path: Path) -> None:
    netsky.configure(clones=0, legs={"desktop": {"notify": False}, "tmux": {"enabled": False}})
    netsky.start()
    wait_for(lambda: netsky.all_ready(AGENTS), 60, "agent0 and agentinfinity ready")

    # Healthy: exit 0, the daemon's report, every agent listed alive and ready.
    code, report = wait_for(
        lambda: (r := _health(netsky))[0] == 0 and r, 30, "health --once to exit 0"
    )
    assert report["status"] == "ok" and report["reasons"] == [] and report["source"] == "daemon"
    assert set(report) == REPORT_KEYS
    assert [(a["agent"], a["alive"], a["ready"]) for a in report["agents"]] == [
        ("agent0", True, True),
        ("agentinfinity", True, True),
    ]
    assert netsky.proc is not None and report["daemon"]["pid"] == netsky.proc.pid
    assert report["daemon"]["install"] == "live"
    assert report["daemon"]["last_tick_age_s"] is not None
    disk = _on_disk(netsky)
    assert set(disk) == REPORT_KEYS and disk["source"] == "daemon"
    assert set(disk["daemon"]) == set(report["daemon"])

    # The ticker keeps the file fresh without anyone asking (ticks every second here).
    first_ts = disk["ts"]
    wait_for(lambda: _on_disk(netsky)["ts"] != first_ts, 15, "health.json rewritten by a tick")

    # A critical incident makes it degraded (exit 1) until the owner acknowledges it.
    res = netsky.ctl("escalate", "disk full", "b", "--key", "disk", "--severity", "critical")
    assert res.returncode == 0, res.stderr
    code, report = _health(netsky)
    assert code == 1 and report["status"] == "degraded"
    assert report["reasons"] == ["critical incident open: disk"]
    assert report["incidents"] == {"open": 1, "keys": ["disk"]}
    incident = json.loads(netsky.ctl("incidents", "--json").stdout)["incidents"][0]
    assert netsky.ctl("ack", incident["id"]).returncode == 0
    code, report = _health(netsky)
    assert code == 0 and report["status"] == "ok", report

    # doctor against the running daemon: the socket, versions and schema agree; no
    # units and no last-known-good in this fresh home are warnings, not failures.
    code, checks = _doctor(netsky, tmp_path / "units")
    assert checks["socket"]["status"] == "ok", checks["socket"]
    assert checks["version"]["status"] == "ok", checks["version"]
    assert checks["schema"]["status"] == "ok", checks["schema"]
    assert checks["units"]["status"] == "warn" and checks["lkg"]["status"] == "warn"
    assert code == 0, checks

    # Daemon stopped: exit 3, a "down" report built by the client and written to the file.
    assert netsky.stop() == 0
    code, report = _health(netsky)
    assert code == 3 and report["status"] == "down" and report["source"] == "client"
    assert "not running" in report["reasons"][0]
    assert _on_disk(netsky) == report
    human = netsky.ctl("health", "--once")
    assert human.returncode == 3 and "health: DOWN" in human.stdout
    assert "agent0, agentinfinity wanted" in human.stdout
    code, checks = _doctor(netsky, tmp_path / "units")
    assert checks["socket"]["status"] == "warn" and code == 0
