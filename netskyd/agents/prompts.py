"""Prompt rendering: ``prompts/base.md`` + the owner layer ``0.md`` + a role stanza.

Each layer is a Jinja2 template rendered with StrictUndefined, so an unknown
variable is an error that names it (never a silent blank). Variables: agent,
role, n, runtime, netsky_home, outbox (the agent's outbox directory),
constellation (list of agent ids), version, and task: a briefed clone's workspace
(``{"workdir", "workspace", "branch", "base"}``) or None.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from netsky_shared.bundled import bundled
from netsky_shared.errors import PromptRenderError
from netsky_shared.ids import agent_n, role_of, sort_key
from netskyd import __version__
from netskyd.config import Settings


def prompts_dir(settings: Settings) -> Path:
    """The directory holding ``base.md`` and ``roles/<role>.md``."""
    return settings.prompts_dir or bundled("prompts")


def owner_layer(settings: Settings) -> Path:
    """The owner layer: ``owner_prompt``, else NETSKY_HOME/0.md, else the bundled 0.md."""
    if settings.owner_prompt is not None:
        return settings.owner_prompt
    home_copy = settings.home / "0.md"
    return home_copy if home_copy.exists() else bundled("0.md")


def layers(settings: Settings, agent: str) -> list[Path]:
    """The template files of one agent's prompt, in order."""
    root = prompts_dir(settings)
    return [root / "base.md", owner_layer(settings), root / "roles" / f"{role_of(agent)}.md"]


def render_prompt(
    settings: Settings,
    agent: str,
    constellation: list[str],
    task: dict[str, str] | None = None,
) -> str:
    """Render the full prompt of ``agent``; return Markdown text.

    Raises PromptRenderError naming the file and the problem (unknown variable,
    template syntax error, missing file).
    """
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    variables = {
        "agent": agent,
        "role": role_of(agent),
        "n": agent_n(agent),
        "runtime": settings.runtime_for(agent).value,
        "netsky_home": str(settings.home),
        "outbox": str(settings.paths.channel(agent, "outbox")),
        "constellation": sorted(constellation, key=sort_key),
        "version": __version__,
        "task": task,
    }
    parts = []
    for path in layers(settings, agent):
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as e:
            raise PromptRenderError(f"prompt layer {path} cannot be read: {e}") from e
        try:
            parts.append(env.from_string(source).render(**variables).strip())
        except jinja2.UndefinedError as e:
            raise PromptRenderError(f"prompt layer {path}: unknown variable: {e.message}") from e
        except jinja2.TemplateSyntaxError as e:
            raise PromptRenderError(f"prompt layer {path}:{e.lineno}: {e.message}") from e
    return "\n\n".join(parts) + "\n"
