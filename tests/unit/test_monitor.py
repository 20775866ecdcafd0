"""The activity monitor against a real demo agent in real tmux, on a simulated clock.

A private tmux server runs one demo agent (spawned by the real spawn path);
the monitor reads its real screen through the tick's batched snapshot while
the test moves the daemon's clock forward a tick (60 s) at a time, so hours
pass in seconds. Envelopes go through the real bus and pane delivery.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from netsky_shared.incidents import ack, list_incidents
from netsky_shared.maildir import new_envelope, send
from netsky_shared.paths import Paths
from netskyd.activity.classify import Activity
from netskyd.activity.monitor import Monitor
from netskyd.agents.spawn import Spawner
from netskyd.agents.tmux import Tmux
from netskyd.bus.watcher import Bus
from netskyd.config import Settings
from netskyd.escalation.spool import Spool
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder
from netskyd.supervision.supervisor import Supervisor
from netskyd.supervision.table import AgentTable
from tests.busctx import FakeClock
from tests.harness import closed_port, kill_tmux_server, private_socket

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.timeout(180),
]

TICK_S = 60.0
HANG_AFTER_S = 600.0
AGENT = "agent1"


class NoWake:
    """The Wake port with no running bus (the test drains the bus itself)."""

    def kick(self, agent: str) -> None:
        pass


@dataclass
class Rig:
    paths: Paths
    tmux: Tmux
    clock: FakeClock
    monitor: Monitor
    bus: Bus
    socket: str

    async def tick(self) -> Activity:
        """One simulated tick: the clock moves on, the monitor reads the real screen."""
        self.clock.now += TICK_S
        snap = await self.tmux.snapshot([AGENT], 0)
        await self.monitor.observe_all(snap.captures)
        verdict = self.monitor.verdict(AGENT)
        assert verdict is not None
        return verdict.activity

    async def deliver(self, text: str) -> None:
        """Send an envelope from agent2 and let the bus deliver it into the pane."""
        self.clock.now += 1.0
        send(self.paths, new_envelope("agent2", AGENT, text))
        assert await self.bus.drain(AGENT) == 1

    def events(self, name: str) -> list[dict[str, Any]]:
        rows = []
        for f in sorted(self.paths.logs.glob("watchdog-events-*.jsonl")):
            rows += [json.loads(line) for line in f.read_text().splitlines()]
        return [r for r in rows if r["event"] == name]

    def pane(self) -> str:
        res = subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p", "-t", f"={AGENT}:"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return res.stdout

    def write_to_pane(self, text: str) -> None:
        """Output that does not come from the agent: written to its terminal directly."""
        res = subprocess.run(
            ["tmux", "-L", self.socket, "display-message", "-p", "-t", f"={AGENT}:", "#{pane_tty}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        with open(res.stdout.strip(), "w") as tty:
            tty.write(text)


async def _wait(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` (it reads a tmux pane: nothing to wait on but time)."""
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert predicate(), what


@asynccontextmanager
async def rig(tmp_path: Path, **extra: Any) -> AsyncIterator[Rig]:
    socket = private_socket()
    settings = Settings.model_validate(
        {
            "home": tmp_path / "home",
            "tmux_socket": socket,
            "runtime": "demo",
            "hang_after_s": HANG_AFTER_S,
            **extra,
        }
    )
    for d in (settings.paths.state, settings.paths.logs, settings.paths.channels):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.paths.db)
    clock = FakeClock(1_800_000_000.0)
    tmux = Tmux(socket, 5.0)
    recorder = Recorder(Journal(settings.paths.logs), store)
    s = lambda: settings  # noqa: E731 - the SettingsView port
    table = AgentTable(s)
    pager = Spool(settings=s, environ={}, recorder=recorder, store=store, clock=clock)
    wake = NoWake()
    monitor = Monitor(
        agents=table, settings=s, tmux=tmux, recorder=recorder, pager=pager, wake=wake, clock=clock
    )
    spawner = Spawner(
        settings=s, environ={}, config_path=None, tmux=tmux, recorder=recorder, activity=monitor
    )
    sup = Supervisor(
        table=table,
        spawner=spawner,
        settings=s,
        tmux=tmux,
        recorder=recorder,
        store=store,
        activity=monitor,
        wake=wake,
        pager=pager,
        clock=clock,
    )
    bus = Bus(
        agents=table,
        activity=monitor,
        settings=s,
        tmux=tmux,
        store=store,
        recorder=recorder,
        pager=pager,
        clock=clock,
    )
    try:
        spawned = await sup._create(AGENT, "test")
        assert await sup.wait_for_restart([AGENT], 20.0) == {}
        r = Rig(settings.paths, tmux, clock, monitor, bus, socket)
        await _wait(lambda: r.pane().rstrip().endswith(f"{AGENT}>"), "the demo agent's prompt")
        assert spawned.session_id == sup.state_of(AGENT).session_id
        yield r
    finally:
        kill_tmux_server(socket)
        await store.close()


async def test_idle_with_nothing_pending_stays_idle_for_hours(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.deliver("ping")  # answered: a pong goes back, and it returns to its prompt
        await _wait(lambda: "→ agent2: pong" in r.pane(), "the pong")
        for _ in range(6 * 60):  # six hours of ticks
            assert await r.tick() is Activity.IDLE, r.monitor.verdict(AGENT)
        verdict = r.monitor.verdict(AGENT)
        assert verdict is not None
        assert verdict.evidence["fingerprint_age_s"] >= 6 * 3600 - TICK_S
        assert verdict.evidence["at_prompt"] is True
        assert not (r.paths.state / "hang" / f"{AGENT}.json").exists()
        assert r.events("hang.suspected") == [] and list_incidents(r.paths) == []


async def test_hang_with_work_pending_is_hung_and_pages_once_then_moving_output_clears_it(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        assert await r.tick() is Activity.IDLE
        await r.deliver("hang")
        await _wait(lambda: "hanging (ignoring input)" in r.pane(), "the agent to hang")
        await r.deliver("ping")  # delivered into the pane; never answered
        classes = [await r.tick() for _ in range(int(HANG_AFTER_S // TICK_S) + 12)]
        # Busy (not at its prompt) until the fingerprint has been still for hang_after_s.
        first_hung = classes.index(Activity.HUNG)
        assert set(classes[:first_hung]) == {Activity.BUSY}
        assert set(classes[first_hung:]) == {Activity.HUNG}
        assert first_hung * TICK_S >= HANG_AFTER_S - TICK_S

        marker_path = r.paths.state / "hang" / f"{AGENT}.json"
        marker = json.loads(marker_path.read_text())
        assert marker["paged"] is True and marker["incident"]
        assert "no answer to a delivery" in marker["reason"]
        pages = list_incidents(r.paths)
        assert [(i["key"], i["count"]) for i in pages] == [(f"hang:{AGENT}", 1)]
        assert len(r.events("hang.paged")) == 1 and len(r.events("hang.suspected")) == 1
        assert "hanging (ignoring input)" in pages[0]["body"]

        # Output moves the pane: the marker is archived and the clearing journalled.
        r.write_to_pane("\r\nsomething new on the screen\r\n")
        await _wait(lambda: "something new" in r.pane(), "the new output")
        assert await r.tick() is Activity.BUSY
        assert not marker_path.exists()
        cleared = r.events("hang.cleared")
        assert [(c["agent"], c["by"]) for c in cleared] == [(AGENT, "pane moved")]
        archived = list((r.paths.state / "archive").glob(f"hang-{AGENT}-*.json"))
        assert len(archived) == 1 and json.loads(archived[0].read_text())["paged"] is True
        # ...and its incident is closed with an all-clear.
        assert list_incidents(r.paths) == []
        [closed] = list_incidents(r.paths, include_acked=True)
        assert closed["resolved_ts"] and "no longer hung (pane moved)" in closed["resolution"]
        rows = r.paths.owner_pages.read_text().splitlines()
        assert "all-clear" in [json.loads(row)["kind"] for row in rows]


async def test_a_hang_counts_as_paged_only_once_a_leg_delivered_it(tmp_path: Path) -> None:
    """Every leg fails: the marker names the incident but is not paged (the spool keeps
    trying); once the owner acknowledges the incident it is."""
    legs = {
        "hook": {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/x"},
        "desktop": {"enabled": False},
        "tmux": {"enabled": False},
    }
    async with rig(tmp_path, legs=legs, escalation_leg_timeout_s=2.0) as r:
        await r.deliver("hang")
        await _wait(lambda: "hanging (ignoring input)" in r.pane(), "the agent to hang")
        await r.deliver("ping")
        for _ in range(int(HANG_AFTER_S // TICK_S) + 3):
            await r.tick()
        marker_path = r.paths.state / "hang" / f"{AGENT}.json"
        marker = json.loads(marker_path.read_text())
        assert marker["paged"] is False and marker["incident"]
        assert r.events("hang.paged") == []
        [incident] = list_incidents(r.paths)
        assert incident["legs"]["hook"]["status"] == "failed" and incident["count"] == 1
        ack(r.paths, incident["id"])
        await r.tick()
        marker = json.loads(marker_path.read_text())
        assert marker["paged"] is True and marker["paged_on"] == []
        [paged] = r.events("hang.paged")
        assert paged["acked"] is True


async def test_a_spinner_that_only_animates_is_not_movement(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert await r.tick() is Activity.IDLE
        await r.deliver("hang")
        await _wait(lambda: "hanging" in r.pane(), "the agent to hang")
        await r.deliver("ping")
        await r.tick()
        before = r.monitor.watches[AGENT].fp_changed_at
        # A status line whose glyph, timer and token counter change every tick.
        for i, glyph in enumerate("✻✶✳✢✻✶✳✢✻✶✳"):
            r.write_to_pane(
                f"\r\x1b[K{glyph} Pondering… ({i * 7}s · ↓ {i * 13} tokens · esc to interrupt)"
            )
            await _wait(lambda g=glyph: g in r.pane(), "the spinner frame")
            activity = await r.tick()
        assert r.monitor.watches[AGENT].fp_changed_at != before  # the line appeared once
        assert activity is Activity.HUNG
        w = r.monitor.watches[AGENT]
        assert w.raw_changed_at is not None and w.fp_changed_at is not None
        assert w.raw_changed_at > w.fp_changed_at  # the raw text kept moving
