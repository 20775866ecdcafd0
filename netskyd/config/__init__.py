"""Settings: one frozen pydantic model, loaded in one place from TOML and NETSKY_* variables.

Precedence (highest first): ``NETSKY_<FIELD>`` environment variables, the TOML
file, the defaults below. The TOML file is ``--config PATH``, else
``$NETSKY_CONFIG``, else ``$NETSKY_HOME/config.toml`` when it exists. Its keys
are the field names, at the top level. List and table fields given in the
environment are JSON (``NETSKY_AGENT_RUNTIMES='{"agentinfinity": "demo"}'``).
No other module reads ``os.environ``: callers pass the environment in.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from netsky_shared.errors import ConfigError
from netsky_shared.ids import MAX_CLONE, is_agent_id
from netsky_shared.paths import Paths
from netskyd.config.legs import Leg, with_types
from netskyd.config.owner import OwnerSettings
from netskyd.runtimes.catalogue import DIALOGS, Action, Kind
from netskyd.runtimes.names import Runtime as Runtime  # re-exported: callers import it here

DEFAULT_HOME = "~/.netsky"
#: Clones brought up by ``up`` with no number (ARCHITECTURE.md: spawned lazily).
DEFAULT_CLONE_COUNT = 0


class Settings(BaseModel):
    """Every netsky setting; units are in the field names (``_s``, ``_ms``, ``_bytes``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
    #: ``tmux -L`` socket name; None = the user's default tmux server.
    tmux_socket: str | None = None
    #: Runtime of agents without an entry in ``agent_runtimes``.
    runtime: Runtime = Runtime.CLAUDE
    #: Per-agent runtime overrides, e.g. ``{"agentinfinity": "demo"}``.
    agent_runtimes: dict[str, Runtime] = Field(default_factory=dict)
    #: Clones brought up by ``up`` with no number.
    clones: int = Field(DEFAULT_CLONE_COUNT, ge=0, le=MAX_CLONE)
    tick_interval_s: float = Field(60.0, gt=0)
    #: Deadline for a spawned agent to become ready.
    ready_timeout_s: float = Field(60.0, gt=0)
    #: Deadline for any single tmux command.
    tmux_timeout_s: float = Field(5.0, gt=0)
    #: Longest wait between a bracketed paste and its Enter: Enter goes as soon as the
    #: pane shows the paste drawn (netskyd.bus.confirm; TUIs treat an Enter inside the paste
    #: burst as a newline), at the latest after this. 0: Enter at once.
    paste_settle_ms: int = Field(250, ge=0, le=10_000)
    #: A pasted envelope its agent has not taken (netskyd.bus.confirm) this long after the
    #: Enter gets one more Enter; not taken as long again, it is reported unconsumed.
    consume_timeout_s: float = Field(10.0, gt=0)
    #: This many unconsumed envelopes in a row to one agent page the owner
    #: (key ``unconsumed:<agent>``); the next one it takes resolves the page.
    unconsumed_page_after: int = Field(2, ge=1)
    inbox_max_pending: int = Field(1000, ge=1)
    envelope_max_bytes: int = Field(256 * 1024, ge=1024)
    #: A claimed envelope not delivered within this lease goes back to the queue.
    claim_lease_s: float = Field(120.0, gt=0)
    #: An envelope stamped further than this in the future is poisoned (clock skew guard).
    envelope_future_skew_s: float = Field(300.0, ge=0)
    #: ``delivered/`` keeps envelopes this long (replay window), pruned each tick.
    delivered_max_age_s: float = Field(7 * 24 * 3600.0, gt=0)
    #: ...and at most this many per agent (the oldest go first).
    delivered_max_count: int = Field(10_000, ge=1)
    #: Deadline for one delivery through an agent's MCP channel server.
    mcp_timeout_s: float = Field(2.0, gt=0)
    #: Claude agents load ``netskyd channel-server`` as their ``agent`` channel.
    claude_mcp_channel: bool = False
    # Restart budget (netskyd/supervision/restart/machine.py; README "Supervision").
    #: First retry delay after a failed restart; doubles per attempt, +/- jitter, capped.
    restart_backoff_base_s: float = Field(2.0, gt=0)
    restart_backoff_cap_s: float = Field(300.0, gt=0)
    #: Backoff jitter as a fraction (0.2 = +/- 20 %).
    restart_jitter: float = Field(0.2, ge=0, lt=1)
    #: Failed attempts in one incident before GAVE_UP (page, then retry after the cooldown).
    restart_max_attempts: int = Field(5, ge=1)
    restart_giveup_cooldown_s: float = Field(1800.0, gt=0)
    #: K restarts inside W seconds is a crash loop: cooldown (doubling, capped), one page.
    crashloop_restarts: int = Field(5, ge=1)
    crashloop_window_s: float = Field(600.0, gt=0)
    crashloop_cooldown_s: float = Field(900.0, gt=0)
    crashloop_cooldown_cap_s: float = Field(3600.0, gt=0)
    #: Up this long after a verified restart: the loop streak and paged classes reset.
    restart_stable_after_s: float = Field(600.0, gt=0)
    #: A respawned agent must stay up this long for the restart to count as verified.
    restart_verify_s: float = Field(5.0, ge=0)
    #: Deadline for the handoff envelope to reach the fresh agent0.
    handoff_timeout_s: float = Field(60.0, gt=0)
    #: A restart step with no progress for this long fails as stuck.
    restart_step_deadline_s: float = Field(300.0, gt=0)
    #: Learn of agent deaths from tmux hooks at once (False: only the tick notices).
    session_watch: bool = True
    #: Period of the session watcher's sweep for deaths no hook reported (0: none).
    session_sweep_s: float = Field(0.5, ge=0)
    #: Lines of history each tick captures per pane besides the visible screen (0: the
    #: screen only, which is what the activity classes and the fingerprint read).
    pane_capture_lines: int = Field(0, ge=0, le=10_000)
    # Activity classes, hang detection, dialogs, usage limits (docs/activity.md).
    #: A pane whose fingerprint has not moved this long, with work pending or a dialog
    #: up, is hang-suspected: a marker and one page.
    hang_after_s: float = Field(600.0, gt=0)
    #: What to do with each known dialog: ``approve``, ``deny`` or ``off`` (leave it
    #: for the owner). Unlisted dialogs keep their defaults (permission prompts: off).
    dialogs: dict[str, str] = Field(default_factory=dict)
    #: A dialog must look the same this long before it is answered (debounce).
    dialog_settle_s: float = Field(0.5, ge=0)
    #: A dialog seen absent, then absent or back this much later, is a new instance.
    dialog_gone_s: float = Field(3.0, gt=0)
    #: How often the screens of agents showing a dialog are re-read between ticks.
    dialog_poll_s: float = Field(1.0, gt=0)
    #: A dialog netsky does not know (``unknown``) pages the owner once it has been up
    #: this long (key ``dialog:<agent>``); it is never answered.
    dialog_unknown_page_after_s: float = Field(5.0, ge=0)
    #: A usage limit with no reset time on screen: nudge the agent after this long.
    limit_default_wait_s: float = Field(3600.0, gt=0)
    #: The nudge goes this long after the reset time the screen gave (screens show the
    #: minute, and clocks differ).
    limit_grace_s: float = Field(60.0, ge=0)
    #: Before a spawn, mark the working directory trusted in the runtime's own
    #: settings (Claude Code's ~/.claude.json, Codex's ~/.codex/config.toml).
    seed_runtime_settings: bool = True
    # Escalation (docs/escalation.md): the legs and the spool.
    #: Page legs by name: ``[legs.email]``, ``[legs.ntfy] type = "webhook"``, ...
    #: (netskyd.config.legs). desktop and tmux are on unless configured ``enabled = false``.
    legs: dict[str, Leg] = Field(default_factory=dict)
    #: The owner's line (docs/owner.md): ``[owner.email]``, ``[owner.imessage]``.
    owner: OwnerSettings = Field(default_factory=OwnerSettings)
    #: The same key escalated again within this long of its last page joins the open
    #: incident; after it, the incident is paged again.
    escalation_quiet_s: float = Field(3600.0, gt=0)
    #: A failed leg is retried after this long, doubling per try, up to the cap,
    #: until it delivers or the incident is acknowledged or resolved.
    escalation_retry_base_s: float = Field(30.0, gt=0)
    escalation_retry_cap_s: float = Field(1800.0, gt=0)
    #: Deadline for one leg (SMTP, HTTP, osascript, tmux) to deliver one page.
    escalation_leg_timeout_s: float = Field(30.0, gt=0)
    #: A leg that has not delivered this many times in a row is paged about on the others.
    escalation_leg_failing_after: int = Field(3, ge=1)
    #: How often the spool looks for due retries, acknowledgements and --direct pages.
    escalation_spool_s: float = Field(5.0, gt=0)
    #: Incidents closed (acked or resolved) this long ago move to
    #: ``state/escalations/archive/`` (checked hourly; meta.db keeps them too).
    escalation_archive_after_s: float = Field(7 * 24 * 3600.0, gt=0)
    # Keeping netskyd alive (docs/keepalive.md).
    #: How often the event loop writes ``state/heartbeat.json`` and, under systemd with
    #: ``WatchdogSec=``, sends ``WATCHDOG=1`` (at most half the watchdog interval).
    heartbeat_s: float = Field(10.0, gt=0)
    #: A tick older than this stops the heartbeat and the watchdog pings (a wedged tick
    #: is a wedged daemon); None = 3 * tick_interval_s + the tick deadline.
    tick_stall_s: float | None = Field(None, gt=0)
    #: After this long healthy, the running install is recorded as last-known-good
    #: (netskyd.keepalive.lkg.snapshot) when it differs from the recorded one; 0 turns it off.
    lkg_after_s: float = Field(3600.0, ge=0)
    #: Deadline for copying an install into ``lkg/``.
    lkg_timeout_s: float = Field(600.0, gt=0)
    #: Enables the ``debug.*`` RPC methods (tests and drills only).
    debug_rpc: bool = False
    #: Tests only: the daemon SIGKILLs itself at this named point (``schedule.persisted``:
    #: a fire is persisted and its envelope not yet sent). None in real use.
    debug_crash_at: str | None = None
    #: Tests only: the scheduler's clock runs this many seconds ahead of the wall clock,
    #: so a test reaches a minute boundary in seconds, not a minute.
    debug_clock_offset_s: float = 0.0
    #: Lines of a dead agent's pane kept in the crash record and the synthetic handoff.
    crash_tail_lines: int = Field(20, ge=0, le=1000)
    session_width: int = Field(200, ge=40)
    session_height: int = Field(50, ge=10)
    #: Working directory of agent0 and agentinfinity; None = NETSKY_HOME.
    workdir: Path | None = None
    #: The work loop (docs/work.md). ``repo``: the repository clones are briefed from and
    #: harvested into; None = agent0's working directory (``workdir``).
    repo: Path | None = None
    #: Where ``netskyctl notes`` keeps ``notes/<YYYY>/<MM>/<DD>/<agent>.md``; None = ``repo``,
    #: else ``workdir``, else NETSKY_HOME (docs/notes.md).
    notes_dir: Path | None = None
    #: Clones that may hold a brief at once; a brief beyond it is refused (exit 75).
    max_clones: int = Field(8, ge=1, le=MAX_CLONE)
    #: Shell command a harvest runs in the applied tree before it moves the target
    #: branch (e.g. ``bin/check``); None = no check.
    check_command: str | None = None
    #: Deadline of the harvest check; one that misses it is red.
    check_timeout_s: float = Field(600.0, gt=0)
    #: Deadline of any one git command (a clone of a large repository included).
    git_timeout_s: float = Field(300.0, gt=0)
    #: Push the target branch after a harvest when it has an upstream.
    harvest_push: bool = True
    #: Scheduling (docs/schedule.md). How often cron.toml is looked at for an owner's edit.
    cron_watch_s: float = Field(2.0, gt=0)
    #: Cron entries and active loops netskyd keeps at most (each is a few hundred bytes).
    schedule_max_entries: int = Field(5000, ge=1)
    claude_command: str = "claude"
    claude_args: list[str] = Field(default_factory=list)
    codex_command: str = "codex"
    codex_args: list[str] = Field(default_factory=list)
    shell_command: str = "sh -i"
    #: Command template of the ``custom`` runtime (Jinja2; variables: agent, n,
    #: prompt_file, home, workdir — each already shell-quoted).
    custom_command: str | None = None
    #: Regex that marks the custom runtime's idle prompt (readiness), if any.
    custom_ready_regex: str | None = None
    #: Where the owner layer lives; None = NETSKY_HOME/0.md if present, else the bundled 0.md.
    owner_prompt: Path | None = None
    #: Prompt templates directory; None = the bundled ``prompts/``.
    prompts_dir: Path | None = None
    log_level: str = "info"

    @property
    def source_repo(self) -> Path:
        """The repository of the work loop: ``repo``, else agent0's working directory."""
        return self.repo or self.workdir or self.home

    @field_validator("home", "workdir", "repo", "owner_prompt", "prompts_dir")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser().absolute()

    @field_validator("legs", mode="before")
    @classmethod
    def _leg_types(cls, v: object) -> object:
        return with_types(v)

    @field_validator("dialogs")
    @classmethod
    def _dialog_policy(cls, v: dict[str, str]) -> dict[str, str]:
        for name, action in v.items():
            spec = DIALOGS.get(name)
            if spec is None:
                raise ValueError(f"unknown dialog {name!r} (known: {', '.join(sorted(DIALOGS))})")
            if action not in {a.value for a in Action}:
                raise ValueError(f"dialogs.{name}: {action!r} is not approve, deny or off")
            if spec.kind is Kind.QUESTION and action != Action.OFF:
                raise ValueError(f"dialogs.{name}: questions for the owner are never answered")
            if action != Action.OFF and action not in spec.choices and action not in spec.keys:
                raise ValueError(f"dialogs.{name}: this dialog has no {action!r} option")
        return v

    def dialog_action(self, name: str) -> str:
        """The configured action for dialog ``name`` (its catalogue default if unset)."""
        return self.dialogs.get(name) or DIALOGS[name].default.value

    @field_validator("agent_runtimes")
    @classmethod
    def _agent_ids(cls, v: dict[str, Runtime]) -> dict[str, Runtime]:
        bad = [k for k in v if not is_agent_id(k)]
        if bad:
            raise ValueError(f"not agent ids: {', '.join(bad)}")
        return v

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    def runtime_for(self, agent: str) -> Runtime:
        """Return the runtime configured for ``agent`` (override, else the default)."""
        return self.agent_runtimes.get(agent, self.runtime)


#: Settings an empty ``NETSKY_<FIELD>`` sets to None.
_NULLABLE = {"tmux_socket", "workdir", "repo", "custom_command", "check_command"}
_STRUCTURED = {"agent_runtimes", "claude_args", "codex_args", "dialogs", "legs"}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        key = f"NETSKY_{name.upper()}"
        if key not in environ:
            continue
        raw = environ[key]
        if name in _STRUCTURED:
            try:
                out[name] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key} must be JSON: {e}") from e
        elif raw == "" and name in _NULLABLE:
            out[name] = None
        else:
            out[name] = raw
    return out


def config_path(cli_path: Path | None, environ: Mapping[str, str]) -> Path | None:
    """Return the TOML file to read, or None when there is none (defaults apply)."""
    if cli_path is not None:
        return cli_path
    if environ.get("NETSKY_CONFIG"):
        return Path(environ["NETSKY_CONFIG"]).expanduser()
    home = Path(environ.get("NETSKY_HOME") or DEFAULT_HOME).expanduser()
    candidate = home / "config.toml"
    return candidate if candidate.exists() else None


def load_settings(
    cli_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from the TOML file and ``environ`` (defaults to an empty mapping).

    Raises ConfigError naming the file, variable or field that is wrong.
    """
    environ = environ or {}
    values: dict[str, Any] = {}
    path = config_path(cli_path, environ)
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    values.update(_env_overrides(environ))
    try:
        return Settings.model_validate(values)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(root)"
            lines.append(f"  {field}: {err['msg']} (NETSKY_{field.split('.')[0].upper()})")
        where = f" in {path} or the environment" if path else " in the environment"
        raise ConfigError(f"invalid settings{where}:\n" + "\n".join(lines)) from e
