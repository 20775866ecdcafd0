"""The one spawn path every agent takes, whatever its role or runtime.

1. render the prompt (base.md + 0.md + role stanza, StrictUndefined);
2. write it to ``state/prompts/<agent>.md``;
3. seed the runtime's own settings (``claude``, ``codex``) so known first-run
   screens never show (netskyd/agents/seeding.py), then build its command line;
4. create a detached tmux session named after the agent, with ``AGENT_N``,
   ``NETSKY_HOME``, ``NETSKY_PROMPT_FILE`` and a per-spawn nonce
   ``NETSKY_SESSION_ID`` in its environment;
5. wait for readiness (a readiness record naming this nonce, or the runtime's
   idle prompt on the pane, as the activity monitor reads it) until
   ``ready_timeout_s`` (``Spawner.is_ready`` here; the wait itself is the
   supervisor's, which also watches for an early death).

Source: ARCHITECTURE.md, "The constellation".
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from netsky_shared.errors import SpawnFailed, TmuxError
from netsky_shared.ids import agent_n
from netsky_shared.maildir import atomic_write_bytes
from netskyd.agents import seeding as seed
from netskyd.agents import skills
from netskyd.agents.prompts import prompts_dir, render_prompt
from netskyd.agents.readiness import read_ready_record, record_counts
from netskyd.agents.tmux import PaneInfo, Tmux
from netskyd.config import Runtime
from netskyd.ports import ActivityGate, SettingsView
from netskyd.runtimes import build_command
from netskyd.store.recorder import Recorder


@dataclass(frozen=True)
class Spawned:
    """A session the spawn path created."""

    agent: str
    runtime: Runtime
    session_id: str
    pane: PaneInfo


class Spawner:
    """The spawn path, with only what it uses: the settings in force, the daemon's
    environment (seeding reads the agent's HOME and API key there), the config file
    the agents are told about, tmux, the Recorder, and the activity monitor (the
    ``ActivityGate`` port) that reads a pane for readiness and answers start-up dialogs.
    """

    def __init__(
        self,
        *,
        settings: SettingsView,
        environ: Mapping[str, str],
        config_path: Path | None,
        tmux: Tmux,
        recorder: Recorder,
        activity: ActivityGate,
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.config_path = config_path
        self.tmux = tmux
        self.recorder = recorder
        self.activity = activity
        #: One writer at a time for the runtimes' own settings files (agents.seeding).
        self.seed_lock = anyio.Lock()

    async def create_session(
        self,
        agent: str,
        runtime: Runtime,
        constellation: list[str],
        work: Mapping[str, str] | None = None,
    ) -> Spawned:
        """Steps 1-4: prompt, command, tmux session. Returns what was created. ``work``:
        a briefed clone's workspace (``{"workdir", "workspace", "branch", "base"}``): it
        runs in ``workdir`` and its prompt names them.

        Raises PromptRenderError, ConfigError (bad custom command) or SpawnFailed.
        """
        return await create_session(self, agent, runtime, constellation, work)

    async def seed_runtime(self, agent: str, runtime: Runtime, workdir: Path) -> None:
        """Seed the runtime's own settings (module function ``seed_runtime``)."""
        await seed_runtime(self, agent, runtime, workdir)

    async def is_ready(self, agent: str, runtime: Runtime, session_id: str | None) -> bool:
        """True when the agent's readiness record names ``session_id`` or its pane is idle
        (the monitor classifies the screen and answers a start-up dialog per policy).

        Raises SessionNotFound when the session is gone.
        """
        settings = self.settings()
        ready_file = settings.paths.ready_file(agent)
        if record_counts(read_ready_record(ready_file), agent, session_id):
            return True
        if runtime is Runtime.DEMO or (
            runtime is Runtime.CUSTOM and not settings.custom_ready_regex
        ):
            return False  # readiness only by record
        text = await self.tmux.capture(agent)
        verdict = await self.activity.observe(agent, text, source="ready")
        evidence = verdict.evidence
        return evidence.get("dialog") is None and bool(evidence.get("at_prompt"))


async def create_session(
    spawner: Spawner,
    agent: str,
    runtime: Runtime,
    constellation: list[str],
    work: Mapping[str, str] | None = None,
) -> Spawned:
    """Steps 1-4 for ``spawner`` (``Spawner.create_session``)."""
    settings = spawner.settings()
    paths = settings.paths
    prompt = render_prompt(settings, agent, constellation, dict(work) if work else None)
    prompt_file = paths.prompt_file(agent)
    atomic_write_bytes(prompt_file, prompt.encode("utf-8"))
    paths.ensure_channel(agent)
    paths.ready_file(agent).unlink(missing_ok=True)
    workdir = Path(work["workdir"]) if work else settings.workdir or settings.home
    if work is None:
        workdir.mkdir(parents=True, exist_ok=True)
    elif not workdir.is_dir():
        raise SpawnFailed(f"{agent}'s workspace {workdir} does not exist")
    if settings.seed_runtime_settings and runtime in (Runtime.CLAUDE, Runtime.CODEX):
        await seed_runtime(spawner, agent, runtime, workdir)
    if runtime in (Runtime.CLAUDE, Runtime.CODEX):
        await install_skills(spawner, agent, runtime)
    command = build_command(settings, runtime, agent, prompt_file, workdir)
    session_id = uuid.uuid4().hex
    env = {
        "AGENT_N": agent_n(agent),
        "NETSKY_HOME": str(settings.home),
        "NETSKY_PROMPT_FILE": str(prompt_file),
        "NETSKY_SESSION_ID": session_id,
        "NETSKY_RUNTIME": runtime.value,
        "NETSKY_OUTBOX": str(paths.channel(agent, "outbox")),
    }
    if spawner.config_path is not None:
        env["NETSKY_CONFIG"] = str(spawner.config_path)
    try:
        pane = await spawner.tmux.new_session(
            agent,
            command,
            cwd=workdir,
            env=env,
            width=settings.session_width,
            height=settings.session_height,
        )
    except TmuxError as e:
        raise SpawnFailed(f"tmux could not create session {agent}: {e}") from e
    return Spawned(agent, runtime, session_id, pane)


async def install_skills(spawner: Spawner, agent: str, runtime: Runtime) -> None:
    """Render ``agent``'s skills and install them where ``runtime`` reads them
    (netskyd.agents.skills). A template that does not render fails the spawn
    (PromptRenderError, like the prompt); a directory that cannot be written is reported
    (``runtime.skills_failed``) and the agent starts without them."""
    settings = spawner.settings()
    rendered = skills.render(prompts_dir(settings), agent, settings.home)

    def install() -> tuple[list[Path], list[str]]:
        if runtime is Runtime.CLAUDE:
            where: list[Path] = skills.install_claude(settings, agent, rendered)
            skipped: list[str] = []
        else:
            root = skills.codex_skills(spawner.environ)
            if root is None:
                raise OSError("neither CODEX_HOME nor HOME is set: no place for Codex skills")
            where, skipped = skills.install_codex(root, rendered)
        skills.record(settings.paths, agent, runtime.value, list(rendered), where, skipped)
        return where, skipped

    try:
        where, skipped = await anyio.to_thread.run_sync(install)
    except OSError as e:
        await spawner.recorder.event("runtime.skills_failed", level="warning", agent=agent,
                                     runtime=runtime.value, error=str(e))  # fmt: skip
        return
    await spawner.recorder.event(
        "runtime.skills_installed", agent=agent, runtime=runtime.value,
        skills=list(rendered), paths=[str(p) for p in where], skipped=skipped,
    )  # fmt: skip


async def seed_runtime(spawner: Spawner, agent: str, runtime: Runtime, workdir: Path) -> None:
    """Seed the runtime's own settings (netskyd/agents/seeding.py) for an agent that runs in
    ``workdir`` and record what changed (``state/seeded.jsonl``, ``runtime.seeded``;
    an answer left alone, e.g. an API key the owner rejected: ``runtime.seed_left``).

    What is seeded follows the dialog policy (``Settings.dialog_action``) and the
    daemon's environment (``spawner.environ``: the agent's HOME and ANTHROPIC_API_KEY).

    Never fails the spawn: a settings file that cannot be parsed or written is
    reported (``runtime.seed_failed``) and left alone; the dialog it would have
    prevented is then the monitor's to answer.
    """
    settings = spawner.settings()
    policy = settings.dialog_action
    async with spawner.seed_lock:
        try:
            changes = await anyio.to_thread.run_sync(
                seed.seed, runtime, spawner.environ, workdir, policy
            )
            state = settings.paths.state
            await anyio.to_thread.run_sync(seed.record, state, agent, runtime, changes)
        except (seed.SeedError, OSError) as e:
            await spawner.recorder.event(
                "runtime.seed_failed",
                level="warning",
                agent=agent,
                runtime=runtime.value,
                error=str(e),
            )
            return
    done = [c for c in changes if c.action == "set"]
    if done:
        await spawner.recorder.event(
            "runtime.seeded",
            agent=agent,
            runtime=runtime.value,
            changes=[
                {"file": c.file, "key": c.key, "value": c.value, "previous": c.previous}
                for c in done
            ],
        )
    for c in changes:
        if c.action != "set":  # e.g. an API key the owner rejected: theirs to change
            await spawner.recorder.event(
                "runtime.seed_left",
                agent=agent,
                runtime=runtime.value,
                file=c.file,
                key=c.key,
                value=c.value,
                note=c.note,
            )
