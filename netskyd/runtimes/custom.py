"""A runtime of the owner's: ``custom_command``, a Jinja2 template (variables shell-quoted).

Variables: ``agent``, ``n`` (the agent's number, ``infinity`` for agentinfinity),
``prompt_file``, ``home`` and ``workdir``, each already passed through
``shlex.quote``. netsky knows nothing of its screens: ``SCREENS`` is empty, and
readiness comes from ``custom_ready_regex`` or the readiness record.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from netsky_shared.errors import ConfigError
from netsky_shared.ids import agent_n
from netskyd.runtimes.screens import Screens

if TYPE_CHECKING:  # a type only: netskyd.config imports the runtimes
    from netskyd.config import Settings

SCREENS = Screens(idle=None)


def command(settings: Settings, agent: str, prompt_file: Path, workdir: Path) -> str:
    """``custom_command`` rendered with the agent's variables.

    Raises ConfigError without a ``custom_command``, or for a template that does not
    render (a syntax error, an unknown variable).
    """
    # Imported on use: netskyd.config imports this package (Runtime), and what loads
    # settings without spawning (escalate --direct) should not pay for a template engine.
    import jinja2

    q = shlex.quote
    if not settings.custom_command:
        raise ConfigError("runtime 'custom' needs custom_command in config.toml")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        return env.from_string(settings.custom_command).render(
            agent=q(agent),
            n=q(agent_n(agent)),
            prompt_file=q(str(prompt_file)),
            home=q(str(settings.home)),
            workdir=q(str(workdir)),
        )
    except jinja2.TemplateError as e:
        raise ConfigError(f"custom_command does not render: {e}") from e
