"""The one spawn path every agent takes, whatever its role or runtime.

1. render the prompt (base.md + 0.md + role stanza, StrictUndefined);
2. write it to ``state/prompts/<agent>.md``;
3. build the runtime's command line;
4. create a detached tmux session named after the agent, with ``AGENT_N``,
   ``NETSKY_HOME``, ``NETSKY_PROMPT_FILE`` and a per-spawn nonce
   ``NETSKY_SESSION_ID`` in its environment;
5. wait for readiness (a readiness record naming this nonce, or the runtime's
   idle prompt on the pane) until ``ready_timeout_s`` (``is_ready`` here; the
   wait itself is the supervisor's, which also watches for an early death).

Source: ARCHITECTURE.md, "The constellation".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from netskyd.config import Runtime
from netskyd.context import Context
from netskyd.errors import (
    SpawnFailed,
    TmuxError,
)
from netskyd.ids import agent_n
from netskyd.maildir import atomic_write_bytes
from netskyd.prompts import render_prompt
from netskyd.readiness import read_ready_record, record_counts
from netskyd.runtimes import build_command, idle_prompt, pane_shows_idle
from netskyd.tmux import PaneInfo


@dataclass(frozen=True)
class Spawned:
    """A session the spawn path created."""

    agent: str
    runtime: Runtime
    session_id: str
    pane: PaneInfo


async def create_session(
    ctx: Context, agent: str, runtime: Runtime, constellation: list[str]
) -> Spawned:
    """Steps 1-4: prompt, command, tmux session. Returns what was created.

    Raises PromptRenderError, ConfigError (bad custom command) or SpawnFailed.
    """
    settings = ctx.settings
    paths = ctx.paths
    prompt = render_prompt(settings, agent, constellation)
    prompt_file = paths.prompt_file(agent)
    atomic_write_bytes(prompt_file, prompt.encode("utf-8"))
    paths.ensure_channel(agent)
    paths.ready_file(agent).unlink(missing_ok=True)
    workdir = settings.workdir or settings.home
    workdir.mkdir(parents=True, exist_ok=True)
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
    if ctx.config_path is not None:
        env["NETSKY_CONFIG"] = str(ctx.config_path)
    try:
        pane = await ctx.tmux.new_session(
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


async def is_ready(ctx: Context, agent: str, runtime: Runtime, session_id: str | None) -> bool:
    """True when the agent's readiness record names ``session_id`` or its pane is idle.

    Raises SessionNotFound when the session is gone.
    """
    if record_counts(read_ready_record(ctx.paths.ready_file(agent)), agent, session_id):
        return True
    pattern = idle_prompt(ctx.settings, runtime)
    if pattern is None:
        return False
    return pane_shows_idle(pattern, await ctx.tmux.capture(agent))
