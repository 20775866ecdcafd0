"""Every path under NETSKY_HOME, in one place (stdlib only).

Layout source: ARCHITECTURE.md, "Paths". This module imports neither pathlib
nor dataclasses at run time: netskyctl imports it, and each of those costs
more start-up time than the whole status round trip (see bench/).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

CHANNEL_DIRS = ("tmp", "inbox", "claimed", "delivered", "poison", "outbox")
SOCKET_NAME = "netskyd.sock"
#: The systemd user units ``service install`` writes (systemd/), and the launchd labels
#: of its plists (``<label>.plist`` in ~/Library/LaunchAgents; launchd/).
SYSTEMD_UNITS = ("netskyd.service", "netsky-shim.service", "netsky-shim.timer")
LAUNCHD_LABELS = ("com.netsky.netskyd", "com.netsky.shim")


def socket_path(home: str) -> str:
    """The control socket of a NETSKY_HOME given as a string (for the client's fast path)."""
    return os.path.join(home, SOCKET_NAME)


class Paths:
    """Paths derived from one NETSKY_HOME (an absolute ``pathlib.Path``)."""

    __slots__ = ("home",)

    def __init__(self, home: Path) -> None:
        self.home = home

    def __repr__(self) -> str:
        return f"Paths({self.home!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and other.home == self.home

    def __hash__(self) -> int:
        return hash(self.home)

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    @property
    def socket(self) -> Path:
        return self.home / SOCKET_NAME

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def lock(self) -> Path:
        return self.state / "netskyd.lock"

    @property
    def prompts(self) -> Path:
        return self.state / "prompts"

    @property
    def ready(self) -> Path:
        return self.state / "ready"

    @property
    def escalations(self) -> Path:
        """``state/escalations/``: one ``<id>.json`` per incident (netsky_shared.incidents)."""
        return self.state / "escalations"

    @property
    def owner_pages(self) -> Path:
        """``state/owner-pages.jsonl``: a row per page attempt and leg (escalation.pager)."""
        return self.state / "owner-pages.jsonl"

    @property
    def leg_health(self) -> Path:
        """``state/legs.json``: each escalation leg's recent record (escalation.pager)."""
        return self.state / "legs.json"

    @property
    def health(self) -> Path:
        """``state/health.json``: the health report (keepalive.health), written each tick."""
        return self.state / "health.json"

    @property
    def heartbeat(self) -> Path:
        """``state/heartbeat.json``: written every ``heartbeat_s`` from the event loop while
        ticks are fresh (netskyd.keepalive.heartbeat); the shim reads its ``epoch``."""
        return self.state / "heartbeat.json"

    @property
    def install_selected(self) -> Path:
        """``state/install-selected``: ``live`` or ``lkg``, which install ``netsky-shim
        run-daemon`` starts (absent = live)."""
        return self.state / "install-selected"

    @property
    def revived_by(self) -> Path:
        """``state/revived-by``: written by the shim before it restarts the daemon through a
        service manager; ``netsky-shim run-daemon`` consumes it as ``--revived-by``."""
        return self.state / "revived-by"

    @property
    def lkg(self) -> Path:
        """``lkg/``: last-known-good installs (netskyd.keepalive.lkg.snapshot); ``lkg/current``
        is the link."""
        return self.home / "lkg"

    @property
    def lkg_current(self) -> Path:
        return self.lkg / "current"

    @property
    def bin(self) -> Path:
        """``bin/``: the installed shim (``bin/netsky-shim``), copied by ``service install``."""
        return self.home / "bin"

    @property
    def service_env(self) -> Path:
        """``service.env``: the shim's settings (sh ``NAME=value`` lines; ``service install``)."""
        return self.home / "service.env"

    @property
    def shim_log(self) -> Path:
        """``logs/shim.jsonl``: one JSON line per shim run."""
        return self.logs / "shim.jsonl"

    @property
    def drills(self) -> Path:
        """``drills/``: one JSON report per ``netskyctl drill`` run."""
        return self.home / "drills"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "netskyd.jsonl"

    @property
    def db(self) -> Path:
        return self.home / "meta.db"

    @property
    def channels(self) -> Path:
        return self.home / "channels" / "agent"

    @property
    def workspaces(self) -> Path:
        """``workspaces/``: one directory per work-loop task (``<name>/repo``)."""
        return self.home / "workspaces"

    def workspace_repo(self, name: str) -> Path:
        """``workspaces/<name>/repo``: the clone a briefed agent works in."""
        return self.workspaces / name / "repo"

    @property
    def cron_toml(self) -> Path:
        """``cron.toml``: the owner's recurring prompts (docs/schedule.md)."""
        return self.home / "cron.toml"

    @property
    def cron_last_good(self) -> Path:
        """``state/cron.last-good.toml``: the last cron.toml netskyd accepted, run while
        cron.toml does not parse (also across a restart)."""
        return self.state / "cron.last-good.toml"

    @property
    def harvest_logs(self) -> Path:
        """``logs/harvest/``: the check's output of each harvest (``<id>.log``)."""
        return self.logs / "harvest"

    def channel(self, agent: str, box: str) -> Path:
        """Return ``channels/agent/<agent>/<box>`` (box is one of CHANNEL_DIRS)."""
        if box not in CHANNEL_DIRS:
            raise ValueError(f"unknown channel box {box!r}")
        return self.channels / agent / box

    def prompt_file(self, agent: str) -> Path:
        return self.prompts / f"{agent}.md"

    @property
    def mcp(self) -> Path:
        return self.state / "mcp"

    def mcp_socket(self, agent: str) -> Path:
        """Unix socket where ``netskyd channel-server --agent <agent>`` takes deliveries."""
        return self.mcp / f"{agent}.sock"

    def demo_receipts(self, agent: str) -> Path:
        """JSONL of every message a demo agent received (tests and benchmarks read it)."""
        return self.state / "demo" / f"{agent}.received.jsonl"

    def ready_file(self, agent: str) -> Path:
        return self.ready / f"{agent}.json"

    def marker(self, name: str) -> Path:
        """Return ``state/<name>`` for a named marker such as ``desired.json``."""
        return self.state / name

    def ensure_channel(self, agent: str) -> None:
        """Create every box of an agent's channel (idempotent)."""
        for box in CHANNEL_DIRS:
            (self.channels / agent / box).mkdir(parents=True, exist_ok=True)
