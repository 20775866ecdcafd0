"""What each runtime's screen looks like: idle prompt, busy marks, usage limits, dialogs.

Pure data plus small helpers. Every pattern was taken from a real screen; the
recordings are checked in under ``tests/screens/<cli>-<version>/`` with a README
that says how each was reached, and ``tests/unit/test_catalogue.py`` runs every
pattern against them. The dialog names are the keys of the ``dialogs`` table in
``config.toml`` (docs/activity.md).

The vocabulary (``REGION``, ``Kind``, ``Action``, ``DialogSpec``, ``Screens``) is
``netskyd.runtimes.screens``, re-exported here.
"""

from __future__ import annotations

import re

from netskyd.runtimes.names import Runtime
from netskyd.runtimes.screens import REGION as REGION
from netskyd.runtimes.screens import Action as Action
from netskyd.runtimes.screens import DialogSpec as DialogSpec
from netskyd.runtimes.screens import Kind as Kind
from netskyd.runtimes.screens import Screens as Screens
from netskyd.runtimes.screens import _re

C, X = Runtime.CLAUDE, Runtime.CODEX
APPROVE, DENY, OFF = Action.APPROVE, Action.DENY, Action.OFF

CLAUDE_DIALOGS = (
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

CODEX_DIALOGS = (
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

CATALOGUE: dict[Runtime, Screens] = {
    C: Screens(
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
        dialogs=CLAUDE_DIALOGS,
    ),
    X: Screens(
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
        dialogs=CODEX_DIALOGS,
    ),
    Runtime.SHELL: Screens(idle=re.compile(r"[$#%>]\s*$")),
    Runtime.DEMO: Screens(idle=re.compile(r"^agent(?:\d+|infinity)> ?$")),
}

#: Every dialog by name.
DIALOGS: dict[str, DialogSpec] = {d.name: d for s in CATALOGUE.values() for d in s.dialogs}

#: The name of every menu of dialog shape that no catalogue entry names.
UNKNOWN = "unknown"
_NEVER = re.compile(r"(?!)")
_UNKNOWN_SPECS = {
    runtime: DialogSpec(
        UNKNOWN,
        runtime,
        Kind.UNKNOWN,
        _NEVER,
        {},
        OFF,
        "a menu netsky does not know (not in its catalogue): left for the owner",
    )
    for runtime in Runtime
}


def unknown_dialog(runtime: Runtime) -> DialogSpec:
    """The spec standing for a dialog of ``runtime`` that no catalogue entry names."""
    return _UNKNOWN_SPECS[runtime]


def screens_for(runtime: Runtime) -> Screens:
    """The runtime's screen knowledge (an empty Screens for ``custom``)."""
    return CATALOGUE.get(runtime, Screens(idle=None))
