"""Runtimes: the command line that runs in an agent's pane, and how its readiness shows.

Command lines are checked against the CLIs' own ``--help`` (claude-code 2.1.x,
codex-cli 0.16x): the prompt goes in through each CLI's own flag.

- ``claude``: ``claude --append-system-prompt-file <prompt file>``
- ``codex``: ``codex -c developer_instructions=<TOML string>``; the value is read
  from a sidecar file at launch (``$(cat ...)``) so long prompts never pass
  through tmux's command buffer.
- ``shell``: ``shell_command`` (default ``sh -i``), prompt file in NETSKY_PROMPT_FILE.
- ``demo``: ``python -m netskyd.agents.demo_agent`` with the daemon's own interpreter.
- ``custom``: ``custom_command``, a Jinja2 template (variables shell-quoted).

With ``claude_mcp_channel`` the claude command also loads ``netskyd channel-server``
as the agent's channel (``netskyd.bus.channel_server``)::

    claude --mcp-config state/prompts/<agent>.mcp.json \
           --dangerously-load-development-channels server:agent \
           --append-system-prompt-file state/prompts/<agent>.md

What Claude Code 2.1.x does with it (read from 2.1.197's help and bundle, and seen
working: a delivery shows in the pane as ``← agent: <text>``):

- ``--mcp-config <configs...>`` takes JSON files or inline JSON strings; the file
  is ``{"mcpServers": {"agent": {"command", "args", "env"}}}`` (stdio). Claude
  Code starts the server with its own environment (the pane's) plus ``env``;
  ``NETSKY_HOME`` is set there anyway, and the interpreter is the daemon's own.
- Notifications become turns only from servers named on the command line, tagged
  ``server:<name>`` (a configured MCP server) or ``plugin:<name>@<marketplace>``.
  ``--channels`` admits only allowlisted plugins; a ``server:`` entry needs
  ``--dangerously-load-development-channels``, which asks for consent at start-up:
  "WARNING: Loading development channels", choices "I am using this for local
  development" (Enter) and "Exit" (quits Claude Code, as Esc does).
- The server must declare ``experimental: {"claude/channel": {}}``; each
  ``notifications/claude/channel`` ``{content, meta}`` (meta values strings, keys
  identifiers) is queued as a prompt ``<channel source="agent" k="v"...>``, the
  same block the pane path pastes.
- Channels need the first-party API and Anthropic's ``tengu_harbor`` feature flag,
  read through GrowthBook, which is off when ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``,
  ``DISABLE_TELEMETRY`` or ``DO_NOT_TRACK`` is set; managed settings may require
  ``channelsEnabled: true``. Without them there is no dialog, the status line says
  "Channels are not currently available", the server still runs as a plain MCP
  server and its notifications are dropped: the daemon's deliveries through the
  socket are acknowledged and never shown. Enable ``claude_mcp_channel`` only
  where channels are on.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from netsky_shared.errors import ConfigError
from netsky_shared.ids import agent_n
from netskyd.runtimes.names import Runtime

if TYPE_CHECKING:  # a type only: netskyd.config imports this package
    from netskyd.config import Settings

#: Name of netsky's MCP server in Claude Code, hence the ``source`` of its channel blocks.
CHANNEL_SERVER = "agent"

def toml_string(text: str) -> str:
    """Encode ``text`` as a TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(text.replace("\x7f", ""), ensure_ascii=False)


def mcp_channel_config(settings: Settings, agent: str) -> dict[str, Any]:
    """The ``--mcp-config`` JSON that makes Claude Code run ``agent``'s channel server.

    Shape: ``{"mcpServers": {"agent": {"command": <python>, "args": [...], "env":
    {"NETSKY_HOME": <home>}}}}``, the server run as ``python -m netskyd
    channel-server --agent <agent>`` with the daemon's interpreter.
    """
    server = {
        "command": sys.executable,
        "args": ["-m", "netskyd", "channel-server", "--agent", agent],
        "env": {"NETSKY_HOME": str(settings.home)},
    }
    return {"mcpServers": {CHANNEL_SERVER: server}}


def build_command(
    settings: Settings, runtime: Runtime, agent: str, prompt_file: Path, workdir: Path
) -> str:
    """Return the shell command line tmux runs in the agent's pane.

    Raises ConfigError for ``custom`` without a ``custom_command``, or a template
    that does not render.
    """
    q = shlex.quote
    if runtime is Runtime.DEMO:
        return f"{q(sys.executable)} -m netskyd.agents.demo_agent"
    if runtime is Runtime.SHELL:
        return settings.shell_command
    if runtime is Runtime.CLAUDE:
        argv = [settings.claude_command, *settings.claude_args]
        if settings.claude_mcp_channel:
            mcp_file = prompt_file.with_suffix(".mcp.json")
            mcp_file.write_text(
                json.dumps(mcp_channel_config(settings, agent), indent=2) + "\n", encoding="utf-8"
            )
            argv += ["--mcp-config", str(mcp_file)]
            argv += ["--dangerously-load-development-channels", f"server:{CHANNEL_SERVER}"]
        argv += ["--append-system-prompt-file", str(prompt_file)]
        return shlex.join(argv)
    if runtime is Runtime.CODEX:
        sidecar = prompt_file.with_suffix(".codex.toml")
        sidecar.write_text(toml_string(prompt_file.read_text(encoding="utf-8")), encoding="utf-8")
        head = shlex.join([settings.codex_command, *settings.codex_args, "-c"])
        return f'{head} "developer_instructions=$(cat {q(str(sidecar))})"'
    if runtime is Runtime.CUSTOM:
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
    raise ConfigError(f"unknown runtime {runtime!r}")
