"""Claude Code: its command line, its MCP channel, and what its screens look like.

The command line is checked against the CLI's own ``--help`` (claude-code 2.1.x):
``claude --append-system-prompt-file <prompt file>``, after ``claude_command`` and
``claude_args``.

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

Screens (``SCREENS``): every pattern was taken from a real screen of Claude Code
2.1.197 and 2.1.332; the recordings are checked in under
``tests/screens/claude-code-<version>/`` with a README that says how each was
reached, and ``tests/unit/test_catalogue.py`` runs every pattern against them.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsky_shared.ids import role_of
from netskyd.runtimes.names import Runtime
from netskyd.runtimes.screens import Action, DialogSpec, Kind, Screens, _re

if TYPE_CHECKING:  # a type only: netskyd.config imports the runtimes
    from netskyd.config import Settings

#: Name of netsky's MCP server in Claude Code, hence the ``source`` of its channel blocks.
CHANNEL_SERVER = "agent"

C = Runtime.CLAUDE
APPROVE, DENY, OFF = Action.APPROVE, Action.DENY, Action.OFF

#: Its known dialogs, tried in this order (netskyd.activity.dialogs.detect: the first
#: whose title, ``also`` lines and menu show names the screen).
DIALOGS = (
    DialogSpec(
        "claude.onboarding",
        C,
        Kind.SETUP,
        _re(r"choose the text style|syntax theme:"),
        {"approve": _re(r"^dark mode( ✔)?$")},
        APPROVE,
        "the first-run theme picker (seeding hasCompletedOnboarding avoids it)",
        # 2.1.197 numbers the themes ("2. Dark mode ✔"); 2.1.332 does not ("✔ Auto ...").
        also=(_re(r"^\W*(\d\.\s+)?dark mode\b"),),
    ),
    DialogSpec(
        "claude.onboarding-security",
        C,
        Kind.SETUP,
        _re(r"^security notes:"),
        {},
        APPROVE,
        "the first-run security notes (Enter continues)",
        also=(_re(r"press enter to continue"),),
        keys={"approve": "Enter"},
        menu=False,
    ),
    DialogSpec(
        "claude.owner-question",
        C,
        Kind.QUESTION,
        _re(r"^☐ "),
        {},
        OFF,
        "the agent asks its user a question (AskUserQuestion): for the owner only",
        also=(_re(r"type something\.$"),),
    ),
    DialogSpec(
        "claude.folder-trust",
        C,
        Kind.SETUP,
        _re(r"trust the files in this folder|is this a project you (created|trust)"),
        {"approve": _re(r"^yes,? (i trust|proceed)"), "deny": _re(r"^no,? exit")},
        APPROVE,
        "Claude Code asks whether to trust the working directory",
    ),
    DialogSpec(
        "claude.bypass-permissions",
        C,
        Kind.SETUP,
        _re(r"bypass permissions mode"),
        {"approve": _re(r"^yes,? i accept"), "deny": _re(r"^no,? exit")},
        APPROVE,
        "--dangerously-skip-permissions asks to confirm (preselects 'No, exit')",
    ),
    DialogSpec(
        "claude.dev-channels",
        C,
        Kind.SETUP,
        _re(r"loading development channels"),
        {"approve": _re(r"using this for local development"), "deny": _re(r"^exit\b")},
        APPROVE,
        "--dangerously-load-development-channels asks for consent",
    ),
    DialogSpec(
        "claude.api-key",
        C,
        Kind.SETUP,
        _re(r"detected a custom api key|use this api key\?"),
        {"approve": _re(r"^yes\b"), "deny": _re(r"^no\b")},
        APPROVE,
        "ANTHROPIC_API_KEY is set and not yet approved (preselects 'No')",
    ),
    DialogSpec(
        "claude.mcp-server",
        C,
        Kind.SETUP,
        _re(r"new mcp server found"),
        {
            "approve": _re(r"^use this mcp server\b"),
            "deny": _re(r"^continue without using"),
        },
        DENY,
        "a project .mcp.json declares an MCP server not yet approved",
    ),
    DialogSpec(
        "claude.permission",
        C,
        Kind.PERMISSION,
        _re(r"^do you want to (proceed|make this edit|create|allow|fetch|run)\b"),
        {"approve": _re(r"^yes$"), "deny": _re(r"^no\b")},
        OFF,
        "a tool call waits for permission (options 1/2/3)",
    ),
    DialogSpec(
        "claude.auto-mode-unavailable",
        C,
        Kind.SETUP,
        _re(r"^auto mode can['’]t check actions in this session$"),
        {},
        APPROVE,
        "2.1.332's auto mode cannot reach its safety check (Enter stays in auto mode, "
        "which then asks for each action: claude.permission)",
        also=(_re(r"enter to stay in auto mode"),),
        keys={"approve": "Enter"},
        menu=False,
    ),
    DialogSpec(
        "claude.usage-limit-menu",
        C,
        Kind.LIMIT,
        _re(r"what do you want to do\?"),
        {"approve": _re(r"^stop and wait for (the )?limit to reset")},
        APPROVE,
        "the usage-limit menu (wait for the reset, upgrade, ...)",
        also=(_re(r"stop and wait for (the )?limit to reset"),),
    ),
)

#: What its screen says about its state (netskyd.runtimes.screens.Screens).
SCREENS = Screens(
    idle=re.compile(r"^\s*❯\s*$"),
    busy=(_re(r"esc to interrupt"),),
    limit=(
        _re(r"usage limit reached"),
        # "⎿  You've hit your session limit · resets 8:50am (UTC)" (2.1.197)
        # "You've hit your 5-hour limit · resets 8:53pm (UTC)" (2.1.332)
        _re(r"you['’]ve (hit|reached) your ([\w-]+ )?limit"),
        # With an API key the same 429 is an API error that names the rate limit.
        _re(r"api error: request rejected \(429\)"),
        _re(r"\blimit reached\b.*\breset"),
    ),
    dialogs=DIALOGS,
)


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


#: Bash commands a clone's Claude Code may not run (docs/notes.md, "Roles"): briefing and
#: harvesting are agent0's, the owner's line is agent0's and agentinfinity's. netskyd
#: refuses them from a clone's pane as well; this keeps Claude from trying.
CLONE_DISALLOWED = (
    "Bash(netskyctl clone brief:*)",
    "Bash(netskyctl harvest:*)",
    "Bash(netskyctl email:*)",
    "Bash(netskyctl imessage:*)",
)


def plugin_dir(settings: Settings, agent: str) -> Path:
    """``state/skills/<agent>/netsky``: the agent's skills as a Claude Code plugin
    (written at spawn by netskyd.agents.skills, loaded with ``--plugin-dir``)."""
    return settings.paths.state / "skills" / agent / "netsky"


def command(settings: Settings, agent: str, prompt_file: Path, workdir: Path) -> str:
    """The claude command line, ``shlex.join``-quoted.

    With ``claude_mcp_channel`` it first writes ``mcp_channel_config`` to
    ``<prompt file>.mcp.json`` (the prompt file's suffix replaced) for ``--mcp-config``.
    """
    argv = [settings.claude_command, *settings.claude_args]
    if settings.claude_mcp_channel:
        mcp_file = prompt_file.with_suffix(".mcp.json")
        mcp_file.write_text(
            json.dumps(mcp_channel_config(settings, agent), indent=2) + "\n", encoding="utf-8"
        )
        argv += ["--mcp-config", str(mcp_file)]
        argv += ["--dangerously-load-development-channels", f"server:{CHANNEL_SERVER}"]
    skills = plugin_dir(settings, agent)
    if (skills / ".claude-plugin" / "plugin.json").exists():
        argv += ["--plugin-dir", str(skills)]
    if role_of(agent) == "clone":
        argv += ["--disallowedTools", *CLONE_DISALLOWED]
    argv += ["--append-system-prompt-file", str(prompt_file)]
    return shlex.join(argv)
