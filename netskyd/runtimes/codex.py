"""Codex CLI: its command line and what its screens look like.

The command line is checked against the CLI's own ``--help`` (codex-cli 0.16x):
``codex -c developer_instructions=<TOML string>``, after ``codex_command`` and
``codex_args``; the value is read from a sidecar file at launch (``$(cat ...)``) so
long prompts never pass through tmux's command buffer.

Screens (``SCREENS``): every pattern was taken from a real screen of Codex CLI
0.169.0 and 0.171.0; the recordings are checked in under ``tests/screens/codex-<version>/``
with a README that says how each was reached, and ``tests/unit/test_catalogue.py``
runs every pattern against them.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from netskyd.runtimes.names import Runtime
from netskyd.runtimes.screens import Action, DialogSpec, Kind, Screens, _re

if TYPE_CHECKING:  # a type only: netskyd.config imports the runtimes
    from netskyd.config import Settings

X = Runtime.CODEX
APPROVE, DENY, OFF = Action.APPROVE, Action.DENY, Action.OFF

#: Its known dialogs, tried in this order (netskyd.activity.dialogs.detect: the first
#: whose title, ``also`` lines and menu show names the screen).
DIALOGS = (
    DialogSpec(
        "codex.sign-in",
        X,
        Kind.SETUP,
        _re(r"choose how you want to use codex"),
        {"approve": _re(r"^sign in another way")},
        OFF,
        "Codex is not signed in (approve: towards an API-key sign-in)",
    ),
    DialogSpec(
        "codex.sign-in-method",
        X,
        Kind.SETUP,
        _re(r"^sign in another way$"),
        {"approve": _re(r"^use an openai api key")},
        OFF,
        "Codex asks which other sign-in to use (approve: an OpenAI API key)",
    ),
    DialogSpec(
        "codex.api-key-env",
        X,
        Kind.SETUP,
        _re(r"detected openai_api_key environment variable"),
        {},
        OFF,
        "Codex offers the OPENAI_API_KEY of its environment (approve: Enter saves it)",
        also=(_re(r"press enter to save"),),
        keys={"approve": "Enter"},
        menu=False,
    ),
    DialogSpec(
        "codex.api-key-entry",
        X,
        Kind.QUESTION,
        _re(r"paste or type your api key"),
        {},
        OFF,
        "Codex asks for an API key: a credential only the owner gives",
        menu=False,
    ),
    DialogSpec(
        "codex.trust",
        X,
        Kind.SETUP,
        _re(r"^trust this folder\?"),
        {"approve": _re(r"^trust and continue"), "deny": _re(r"^back to")},
        APPROVE,
        "Codex asks whether to trust the working directory",
    ),
    DialogSpec(
        "codex.approval",
        X,
        Kind.PERMISSION,
        _re(r"would you like to (run the following command|make the following edits)"),
        {"approve": _re(r"^yes, proceed"), "deny": _re(r"^no\b")},
        OFF,
        "a command or patch waits for approval",
    ),
)

#: What its screen says about its state (netskyd.runtimes.screens.Screens).
SCREENS = Screens(
    idle=re.compile(r"^›\s"),
    busy=(_re(r"esc to interrupt"),),
    # While loading, the footer is a bare "? for shortcuts"; once it takes input it
    # reads "<model> default · <dir>" over "← for agents · ? for shortcuts".
    starting=(re.compile(r"^\s*loading$"), re.compile(r"^\s*\? for shortcuts\s*$")),
    # The status line under the composer ("  GPT-6.2-Sol default · /tmp/w · Fake title"):
    # never on the starting, sign-in, trust or approval screens (0.169.0, 0.171.0), and
    # still there when text in the composer hides the footer.
    ready=(re.compile(r"^\s{1,4}\S[^·]* · [~/]"),),
    # "■ You’ve hit your usage limit. Try again at 7:05 AM." (a curly apostrophe);
    # a bare 429 that outlasted Codex's retries reads "■ exceeded retry limit, ...".
    limit=(
        _re(r"^■ you['’]ve (hit|reached) your usage limit"),
        _re(r"^■ exceeded retry limit, last status: 429"),
    ),
    dialogs=DIALOGS,
)


def toml_string(text: str) -> str:
    """Encode ``text`` as a TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(text.replace("\x7f", ""), ensure_ascii=False)


def command(settings: Settings, agent: str, prompt_file: Path, workdir: Path) -> str:
    """The codex command line; the prompt goes through a sidecar file read at launch.

    Writes the prompt file's text as a TOML string (``toml_string``) to
    ``<prompt file>.codex.toml`` (the prompt file's suffix replaced); the command line
    reads it back with ``$(cat ...)`` inside double quotes.
    """
    q = shlex.quote
    sidecar = prompt_file.with_suffix(".codex.toml")
    sidecar.write_text(toml_string(prompt_file.read_text(encoding="utf-8")), encoding="utf-8")
    head = shlex.join([settings.codex_command, *settings.codex_args, "-c"])
    return f'{head} "developer_instructions=$(cat {q(str(sidecar))})"'
