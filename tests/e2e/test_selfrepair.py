"""End to end: ``netskyctl self-repair`` against real installs, and a real netskyd that
records its own install as last-known-good after a healthy stretch (once per fingerprint).

Most tests run a *frozen* install: a last-known-good copy of the working tree made once
per module in another home (``frozen``), so edits to the tree while the tests run cannot
change "the live install" under them. ``test_daemon_records_its_install`` runs the
working tree itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin dir (``netskyd``, ``netskyctl``) of a copy of the working tree's install."""
    from netskyd.keepalive.lkg import snapshot as lkg

    home = tmp_path_factory.mktemp("frozen") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSKY_", "PYTHON"))}
    manifest = lkg.promote(home, reason="test", environ={**env, "NETSKY_HOME": str(home)})
    yield Path(manifest["path"]) / "bin"


def _events(netsky: Netsky, name: str) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((netsky.home / "logs").glob("watchdog-events-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("event") == name:
                rows.append(row)
    return rows


def _ids(home: Path) -> list[str]:
    lkg = home / "lkg"
    return sorted(
        p.name for p in lkg.iterdir() if not p.name.startswith(".") and not p.is_symlink()
    )


def _ctl(netsky: Netsky, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_dir / "netskyctl", "self-repair", *args],
        env=netsky.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _ctl_json(netsky: Netsky, bin_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = _ctl(netsky, bin_dir, *args, "--json")
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError as e:
        raise AssertionError(f"not JSON: {res.stdout!r} {res.stderr!r}") from e


def test_promote_check_rollback(netsky: Netsky, frozen: Path) -> None:
    rc, body = _ctl_json(netsky, frozen, "rollback")
    assert rc == 1 and "no last-known-good" in body["error"]
    assert not (netsky.home / "state" / "install-selected").exists()

    rc, body = _ctl_json(netsky, frozen, "check")
    assert rc == 1 and body["lkg"]["present"] is False
    assert any(f["name"] == "lkg" and not f["ok"] and f["hint"] for f in body["findings"])

    rc, body = _ctl_json(netsky, frozen, "promote")
    assert rc == 0, body
    manifest = body["lkg"]
    assert manifest["reason"] == "manual"
    assert os.readlink(netsky.home / "lkg" / "current") == manifest["id"]
    assert (netsky.home / "state" / "install-selected").read_text().strip() == "live"

    rc, body = _ctl_json(netsky, frozen, "check")
    assert rc == 0, body
    assert body["ok"] and body["same"] and body["selected"] == "live"
    assert body["live"]["ok"] and body["lkg"]["selftest"]["ok"]
    assert body["lkg"]["id"] == manifest["id"]

    rc, body = _ctl_json(netsky, frozen, "rollback", "--no-restart")
    assert rc == 0, body
    assert body["selected"] == "lkg" and body["restart"] is None
    assert (netsky.home / "state" / "install-selected").read_text().strip() == "lkg"
    rc, body = _ctl_json(netsky, frozen, "check")
    assert rc == 0 and body["selected"] == "lkg"

    human = _ctl(netsky, frozen, "check")
    assert human.returncode == 0
    assert "state/install-selected: lkg" in human.stdout


def test_rollback_refuses_a_broken_lkg(netsky: Netsky, frozen: Path) -> None:
    rc, body = _ctl_json(netsky, frozen, "promote")
    assert rc == 0, body
    python = Path(body["lkg"]["path"]) / "venv" / "bin" / "python"
    python.unlink()  # the copy can no longer start
    rc, body = _ctl_json(netsky, frozen, "rollback", "--no-restart")
    assert rc == 1 and "fails selftest" in body["error"]
    assert (netsky.home / "state" / "install-selected").read_text().strip() == "live"
    rc, body = _ctl_json(netsky, frozen, "check")
    assert rc == 1 and body["lkg"]["selftest"]["ok"] is False


def _recorded_or_failed(netsky: Netsky) -> list[dict[str, Any]]:
    failed = _events(netsky, "lkg.record_failed")
    assert not failed, failed
    return _events(netsky, "lkg.recorded")


def test_daemon_records_its_install(netsky: Netsky) -> None:
    netsky.configure(clones=0, tick_interval_s=1.0, lkg_after_s=2)
    selected = netsky.home / "state" / "install-selected"
    selected.parent.mkdir(parents=True)
    selected.write_text("lkg\n")  # the owner distrusts the live install: not recorded
    netsky.start()
    skipped = wait_for(lambda: _events(netsky, "lkg.skipped"), 30, "lkg.skipped")
    assert "install-selected" in skipped[0]["reason"]
    time.sleep(5)  # well past lkg_after_s
    current = netsky.home / "lkg" / "current"
    assert not current.exists() and not _events(netsky, "lkg.recorded")

    selected.write_text("live\n")
    recorded = wait_for(lambda: _recorded_or_failed(netsky), 120, "lkg.recorded", step_s=0.5)
    manifest = json.loads((current / "manifest.json").read_text())
    assert manifest["reason"] == "healthy-stretch"
    assert recorded[0]["id"] == manifest["id"] == os.readlink(current)
    assert recorded[0]["fingerprint"] == manifest["fingerprint"]
    assert recorded[0]["duration_ms"] > 0
    res = netsky.ctl("self-repair", "check", "--json", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["daemon"]["running"] is True


def _start_from(netsky: Netsky, netskyd: Path) -> None:
    log = open(netsky.log_path, "ab")  # noqa: SIM115 - owned by the child
    netsky.proc = subprocess.Popen(
        [netskyd, "run", "--config", str(netsky.config)],
        env=netsky.env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        cwd=netsky.home,
    )
    log.close()
    wait_for(lambda: netsky.ctl("ping").returncode == 0, 60, "netskyd to answer")


def test_an_lkg_install_runs_a_daemon_that_records_once(netsky: Netsky, frozen: Path) -> None:
    """The shim's fallback: a daemon started from a last-known-good copy ticks, answers
    netskyctl and, after its own healthy stretch, records itself into its home; the next
    daemon of the same install finds it recorded and copies nothing."""
    netskyd = frozen / "netskyd"
    recorded_before = json.loads((frozen.parent / "manifest.json").read_text())
    netsky.configure(clones=0, tick_interval_s=1.0, lkg_after_s=2)
    _start_from(netsky, netskyd)
    recorded = wait_for(lambda: _recorded_or_failed(netsky), 120, "lkg.recorded", step_s=0.5)
    current = netsky.home / "lkg" / "current"
    manifest = json.loads((current / "manifest.json").read_text())
    assert recorded[0]["fingerprint"] == manifest["fingerprint"] == recorded_before["fingerprint"]
    assert recorded[0]["id"] == os.readlink(current)
    assert manifest["source"] == str(frozen.parent / "venv" / "bin")

    assert netsky.stop() == 0
    _start_from(netsky, netskyd)
    wait_for(lambda: _events(netsky, "lkg.unchanged"), 60, "lkg.unchanged", step_s=0.5)
    assert len(_events(netsky, "lkg.recorded")) == 1
    assert _ids(netsky.home) == [manifest["id"]]
    assert netsky.stop() == 0


FAKE_SHIM = """#!/bin/sh
# A stand-in for launchd/netsky-shim: start the selected install's daemon, detached.
bin="$NETSKY_HOME/lkg/current/bin"
[ "$(cat "$NETSKY_HOME/state/install-selected")" = lkg ] || exit 3
nohup "$bin/netskyd" run --config "$NETSKY_CONFIG" >>"$NETSKY_HOME/shim.stderr" 2>&1 </dev/null &
echo $! > "$NETSKY_HOME/shim-started.pid"
"""


def test_rollback_restarts_the_daemon_through_the_shim(netsky: Netsky, frozen: Path) -> None:
    rc, body = _ctl_json(netsky, frozen, "promote")
    assert rc == 0, body
    shim = netsky.home / "bin" / "netsky-shim"
    shim.parent.mkdir()
    shim.write_text(FAKE_SHIM)
    netsky.configure(clones=0)
    netsky.start()
    old_pid = netsky.proc.pid if netsky.proc else None
    started = netsky.home / "shim-started.pid"
    try:
        rc, body = _ctl_json(netsky, frozen, "rollback")
        assert rc == 0, body
        assert body["selected"] == "lkg" and body["restart"]["how"] == "shim"
        assert netsky.proc is not None and netsky.proc.poll() is not None  # the old one stopped
        daemon = body["restart"]["daemon"]
        assert daemon["running"] and daemon["pid"] != old_pid
        assert daemon["pid"] == int(started.read_text())
        assert daemon["executable"].startswith(str(netsky.home / "lkg"))
        rc, body = _ctl_json(netsky, frozen, "check")
        assert rc == 0 and body["selected"] == "lkg"
        assert any(
            f["name"] == "daemon" and "runs the lkg install" in f["detail"]
            for f in body["findings"]
        )
    finally:
        if started.exists():  # the daemon our stand-in shim started
            pid = int(started.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not _alive(pid), 30, f"netskyd {pid} to stop")
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:
        return False
    except OSError:
        return True  # no /proc: kill(pid, 0) alone decides
    return stat.rpartition(")")[2].split()[:1] != ["Z"]  # a zombie has exited
