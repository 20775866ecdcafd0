"""The screen catalogue against recorded screens of the real CLIs.

``tests/screens/<cli>-<version>/<name>.<cols>x<rows>.txt`` are ``tmux capture-pane -p``
captures of Claude Code and Codex CLI, recorded at two terminal sizes (how each was
reached: the README beside them). Every recording must have an expectation below, so
a new one cannot slip in untested: which dialog it shows (or none), which option is
highlighted, what ``approve`` would press, and whether it is at its prompt, busy or
limited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from netskyd.activity.classify import read_screen
from netskyd.activity.dialogs import NoPlan, detect, plan
from netskyd.config import Runtime
from netskyd.runtimes.screen import fingerprint, raw_hash

SCREENS = Path(__file__).resolve().parents[1] / "screens"
_FILE = re.compile(r"^(?P<name>.+)\.(?P<cols>\d+)x(?P<rows>\d+)\.txt$")


@dataclass(frozen=True)
class Expect:
    dialog: str | None = None
    highlighted: str | None = None  # label prefix of the highlighted option
    approve: tuple[str, ...] | None = None  # keys approve sends; () = no plan possible
    prompt: bool | None = None
    busy: bool = False
    limited: bool = False


TRUST_CODEX = Expect("codex.trust", "Trust and continue", ("Enter",))
SIGN_IN = Expect("codex.sign-in", "Sign in with ChatGPT", ("Down", "Down", "Enter"))
SIGN_IN_DOWN = Expect("codex.sign-in", "Sign in with Device Code", ("Down", "Enter"))
METHOD = Expect("codex.sign-in-method", "Use an OpenAI API key", ("Enter",))
KEY_ENTRY = Expect("codex.api-key-entry", approve=())
AT_PROMPT = Expect(prompt=True)
LIMITED = Expect(prompt=True, limited=True)

EXPECT: dict[str, dict[str, Expect]] = {
    "codex-0.169.0": {
        "sign-in": SIGN_IN,
        "sign-in-env": SIGN_IN,
        "sign-in-down": SIGN_IN_DOWN,
        "sign-in-env-down": SIGN_IN_DOWN,
        "sign-in-other": METHOD,
        "sign-in-env-other": METHOD,
        "sign-in-other-down": Expect("codex.sign-in-method", "Use Amazon Bedrock", ("Up", "Enter")),
        "sign-in-env-other-down": Expect(
            "codex.sign-in-method", "Use Amazon Bedrock", ("Up", "Enter")
        ),
        "sign-in-api-key": KEY_ENTRY,
        "sign-in-env-api-key": Expect("codex.api-key-env", approve=("Enter",)),
        "sign-in-chatgpt": Expect(),
        "sign-in-api-key-typed": KEY_ENTRY,
        "sign-in-done": Expect(),
        "sign-in-env-done": Expect(),
        "trust-git": TRUST_CODEX,
        "trust-git-down": Expect("codex.trust", "Back to Agent Command Center", ("Up", "Enter")),
        "trust-git-accepted": Expect(),
        "trust-git-esc": Expect(),
        "trust-plain": AT_PROMPT,
        "agent-command-center": Expect(prompt=False),
        "approval-exec": Expect("codex.approval", "Yes, proceed", ("Enter",)),
        "approval-exec-down": Expect("codex.approval", "Yes, and don't ask", ("Up", "Enter")),
        "approval-exec-approved": AT_PROMPT,
        "idle": AT_PROMPT,
        "reply": AT_PROMPT,
        "interrupted": AT_PROMPT,
        "starting": Expect(prompt=False),  # the loading logo above a composer
        "busy-1": Expect(busy=True),
        "busy-2": Expect(busy=True),
        "approval-patch": Expect("codex.approval", "Yes, proceed", ("Enter",)),
        "approval-patch-down": Expect("codex.approval", "Yes, and don't ask", ("Up", "Enter")),
        "approval-patch-declined": AT_PROMPT,
        "usage-limit": LIMITED,
        "usage-limit-days": LIMITED,
        "usage-limit-free": LIMITED,
        "usage-limit-plus": LIMITED,
        "usage-limit-pro": LIMITED,
        "usage-limit-team": LIMITED,
        "rate-limit": LIMITED,
    },
}
# Codex 0.171.0 (tests/screens/codex-0.171.0/README.md): the same screens as 0.169.0 but for
# the model name and version; plus a paste and a submission.
EXPECT["codex-0.171.0"] = {
    **EXPECT["codex-0.169.0"],
    "pasted": AT_PROMPT,
    "pasted-long": AT_PROMPT,  # the composer 13 lines up: found above the status line
    "submitted": Expect(busy=True),
}
PERMISSION = Expect("claude.permission", "Yes", ("Enter",))
LIMIT_MENU = Expect("claude.usage-limit-menu", "Stop and wait", ("Enter",), limited=True)
EXPECT["claude-code-2.1.197"] = {
    # tests/fake_anthropic.py answered with tool_use blocks (permission 1/2/3) or a 429.
    "permission-bash": PERMISSION,
    "permission-bash-down": Expect("claude.permission", "Yes, and always allow", ("Up", "Enter")),
    "permission-edit": PERMISSION,
    "permission-edit-down": Expect("claude.permission", "Yes, allow all edits", ("Up", "Enter")),
    "permission-write": PERMISSION,
    "permission-write-down": Expect("claude.permission", "Yes, allow all edits", ("Up", "Enter")),
    "permission-webfetch": PERMISSION,
    "permission-webfetch-down": Expect("claude.permission", "Yes, and don't ask", ("Up", "Enter")),
    "folder-trust": Expect("claude.folder-trust", "Yes, I trust", ("Enter",)),
    "folder-trust-down": Expect("claude.folder-trust", "No, exit", ("Up", "Enter")),
    # The API key and bypass questions preselect the refusing answer.
    "api-key": Expect("claude.api-key", "No", ("Up", "Enter")),
    "api-key-down": Expect("claude.api-key", "Yes", ("Enter",)),  # Down wraps round
    "bypass-permissions": Expect("claude.bypass-permissions", "No, exit", ("Down", "Enter")),
    "bypass-permissions-down": Expect("claude.bypass-permissions", "Yes, I accept", ("Enter",)),
    "dev-channels": Expect("claude.dev-channels", "I am using this", ("Enter",)),
    "dev-channels-down": Expect("claude.dev-channels", "Exit", ("Up", "Enter")),
    "mcp-server": Expect("claude.mcp-server", "Use this MCP server", ("Enter",)),
    "mcp-server-down": Expect("claude.mcp-server", "Use this and all", ("Up", "Enter")),
    "onboarding": Expect("claude.onboarding", "Dark mode", ("Enter",)),
    "onboarding-down": Expect("claude.onboarding", "Light mode", ("Up", "Enter")),
    "onboarding-security": Expect("claude.onboarding-security", approve=("Enter",)),
    "onboarding-preflight-failed": Expect(),
    "owner-question": Expect("claude.owner-question", "SQLite", ()),
    "owner-question-down": Expect("claude.owner-question", "Postgres", ()),
    "usage-limit": Expect(prompt=True, limited=True),
    "usage-limit-api-key": Expect(prompt=True, limited=True),
    "usage-limit-menu": LIMIT_MENU,
    "usage-limit-menu-down": Expect(
        "claude.usage-limit-menu", "Upgrade your plan", ("Up", "Enter"), limited=True
    ),
    "idle": AT_PROMPT,
    "busy-1": Expect(busy=True, prompt=True),
    "busy-2": Expect(busy=True, prompt=True),
}
# Claude Code 2.1.332 (tests/screens/claude-code-2.1.332/README.md): setup menus lost their
# numbers, folder trust preselects "No, exit", the MCP question "Continue without", the
# theme picker "✔ Auto"; permission prompts come in auto mode's new shapes too.
EXPECT["claude-code-2.1.332"] = {
    "idle": AT_PROMPT,
    "busy-1": Expect(busy=True, prompt=True),
    "busy-2": Expect(busy=True, prompt=True),
    "submitted": Expect(busy=True, prompt=True),
    "pasted": Expect(prompt=False),  # the box holds the pasted text
    "pasted-long": Expect(prompt=False),  # "❯ [Pasted text #1 +11 lines]"
    "folder-trust": Expect("claude.folder-trust", "No, exit", ("Down", "Enter")),
    "folder-trust-down": Expect("claude.folder-trust", "Yes, I trust", ("Enter",)),
    "api-key": Expect("claude.api-key", "No", ("Up", "Enter")),
    "api-key-down": Expect("claude.api-key", "Yes", ("Enter",)),
    "bypass-permissions": Expect("claude.bypass-permissions", "No, exit", ("Down", "Enter")),
    "bypass-permissions-down": Expect("claude.bypass-permissions", "Yes, I accept", ("Enter",)),
    "dev-channels": Expect("claude.dev-channels", "I am using this", ("Enter",)),
    "dev-channels-down": Expect("claude.dev-channels", "Exit", ("Up", "Enter")),
    "mcp-server": Expect("claude.mcp-server", "Continue without using", ("Up", "Up", "Enter")),
    "mcp-server-down": Expect("claude.mcp-server", "Use this MCP server", ("Enter",)),  # wrapped
    "onboarding": Expect("claude.onboarding", "Auto (match terminal)", ("Down", "Enter")),
    "onboarding-down": Expect("claude.onboarding", "Dark mode", ("Enter",)),
    "onboarding-security": Expect("claude.onboarding-security", approve=("Enter",)),
    "permission-bash": PERMISSION,
    "permission-bash-down": Expect("claude.permission", "Yes, and always allow", ("Up", "Enter")),
    "permission-write": PERMISSION,
    "permission-edit": PERMISSION,
    "permission-webfetch": PERMISSION,
    "permission-write-down": Expect(
        "claude.permission", "Yes, and switch to accept edits", ("Up", "Enter")
    ),
    "permission-edit-down": Expect(
        "claude.permission", "Yes, and switch to accept edits", ("Up", "Enter")
    ),
    "permission-webfetch-down": Expect("claude.permission", "Yes, and don't ask", ("Up", "Enter")),
    "permission-auto": Expect("claude.permission", "No, and tell Claude", ("Down", "Enter")),
    "permission-auto-down": Expect("claude.permission", "Yes", ("Enter",)),
    "auto-mode-unavailable": Expect("claude.auto-mode-unavailable", approve=("Enter",)),
    "owner-question": Expect("claude.owner-question", "SQLite", ()),
    "owner-question-down": Expect("claude.owner-question", "Postgres", ()),
    "usage-limit": Expect(prompt=True, limited=True),
    "usage-limit-cancelled": Expect(prompt=True, limited=True),
    "usage-limit-api-key": Expect(prompt=True, limited=True),
    "usage-limit-menu": LIMIT_MENU,
    "usage-limit-menu-down": Expect(
        "claude.usage-limit-menu", "Wait here, then continue", ("Up", "Enter"), limited=True
    ),
}
RUNTIMES = {"codex": Runtime.CODEX, "claude-code": Runtime.CLAUDE}


def recordings() -> list[tuple[str, str, Path]]:
    out = []
    for d in sorted(p for p in SCREENS.iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.txt")):
            m = _FILE.match(f.name)
            assert m is not None, f"{f}: name it <name>.<cols>x<rows>.txt"
            out.append((d.name, m.group("name"), f))
    return out


def runtime_of(cli_dir: str) -> Runtime:
    return RUNTIMES[cli_dir.rsplit("-", 1)[0]]


def test_there_are_recordings_at_two_sizes_per_cli() -> None:
    for cli in EXPECT:
        sizes = {_FILE.match(f.name).group("cols") for f in (SCREENS / cli).glob("*.txt")}  # type: ignore[union-attr]
        assert len(sizes) >= 2, f"{cli}: recordings at one terminal size only"


@pytest.mark.parametrize(
    ("cli", "name", "path"), recordings(), ids=[f"{c}/{p.name}" for c, _, p in recordings()]
)
def test_recorded_screen(cli: str, name: str, path: Path) -> None:
    expect = EXPECT.get(cli, {}).get(name)
    assert expect is not None, f"{cli}/{name}: add an expectation for this recording"
    runtime = runtime_of(cli)
    text = path.read_text(encoding="utf-8")
    found = detect(runtime, text)
    assert (found.name if found else None) == expect.dialog
    facts = read_screen(runtime, text)
    if found is not None:
        if expect.highlighted is not None:
            assert found.highlighted is not None
            assert found.highlighted.label.startswith(expect.highlighted)
        if expect.approve == ():
            with pytest.raises(NoPlan):
                plan(found, "approve")
        elif expect.approve is not None:
            p = plan(found, "approve")
            assert (*p.moves, p.confirm) == expect.approve
    if expect.prompt is not None:
        assert facts.at_prompt is expect.prompt
    assert (facts.busy_mark is not None) is expect.busy
    assert (facts.limit_notice is not None) is expect.limited


def test_busy_frames_differ_raw_but_not_in_fingerprint() -> None:
    """Two frames a second apart of a turn in progress: the spinner and timer moved,
    nothing else did, so the normalised fingerprint is the same."""
    for cli in [c for c in EXPECT if "busy-1" in EXPECT[c]]:
        for size in ("100x30", "200x50"):
            one = (SCREENS / cli / f"busy-1.{size}.txt").read_text()
            two = (SCREENS / cli / f"busy-2.{size}.txt").read_text()
            assert raw_hash(one) != raw_hash(two)
            assert fingerprint(one) == fingerprint(two)
