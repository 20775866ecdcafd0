"""Runtimes: the command line that runs in an agent's pane, and how its readiness shows.

One module per runtime, ``netskyd/runtimes/<name>.py``, holds all netsky knows of it:
``command(settings, agent, prompt_file, workdir) -> str``, the shell command line
tmux runs in the agent's pane, and ``SCREENS``, what its screen looks like
(``netskyd.runtimes.screens``: idle prompt, busy marks, usage limits, dialogs).
``RUNTIMES`` maps each ``Runtime`` to its module; adding a runtime is a member of
``Runtime`` (``netskyd.runtimes.names``), its module, and its line here.

- ``claude``: ``claude --append-system-prompt-file <prompt file>``, optionally with
  netsky's MCP channel (``netskyd.runtimes.claude``).
- ``codex``: ``codex -c developer_instructions=<TOML string>`` read from a sidecar file.
- ``shell``: ``shell_command`` (default ``sh -i``), prompt file in NETSKY_PROMPT_FILE.
- ``demo``: ``python -m netskyd.agents.demo_agent`` with the daemon's own interpreter.
- ``custom``: ``custom_command``, a Jinja2 template (variables shell-quoted).

The runtimes import ``netskyd.config`` for types only: config imports ``Runtime`` from
here, and the dialog catalogue (``netskyd.runtimes.catalogue``) to check ``[dialogs]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from netsky_shared.errors import ConfigError
from netskyd.runtimes import claude, codex, custom, demo, shell
from netskyd.runtimes.claude import CHANNEL_SERVER as CHANNEL_SERVER
from netskyd.runtimes.claude import mcp_channel_config as mcp_channel_config
from netskyd.runtimes.codex import toml_string as toml_string
from netskyd.runtimes.names import Runtime
from netskyd.runtimes.screens import Screens

if TYPE_CHECKING:  # a type only: netskyd.config imports this package
    from netskyd.config import Settings


class RuntimeModule(Protocol):
    """What a runtime's module holds."""

    #: What its screen looks like (an empty ``Screens(idle=None)`` when netsky cannot tell).
    SCREENS: Screens

    def command(self, settings: Settings, agent: str, prompt_file: Path, workdir: Path) -> str:
        """The shell command line for ``agent``'s pane, which tmux starts in ``workdir``.

        May write files beside ``prompt_file``; raises ConfigError when the settings
        cannot make one.
        """
        ...


#: Every runtime's module, one line each.
RUNTIMES: dict[Runtime, RuntimeModule] = {
    Runtime.CLAUDE: claude,
    Runtime.CODEX: codex,
    Runtime.SHELL: shell,
    Runtime.DEMO: demo,
    Runtime.CUSTOM: custom,
}


def build_command(
    settings: Settings, runtime: Runtime, agent: str, prompt_file: Path, workdir: Path
) -> str:
    """Return the shell command line tmux runs in the agent's pane.

    Raises ConfigError for ``custom`` without a ``custom_command``, or a template
    that does not render.
    """
    module = RUNTIMES.get(runtime)
    if module is None:
        raise ConfigError(f"unknown runtime {runtime!r}")
    return module.command(settings, agent, prompt_file, workdir)


def screens_for(runtime: Runtime) -> Screens:
    """The runtime's screen knowledge (an empty Screens for ``custom``)."""
    return RUNTIMES[runtime].SCREENS
