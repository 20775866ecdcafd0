"""Pure screen checks of netskyd.bus.confirm: is a paste drawn, has the agent taken it.

Screens: the recordings under tests/screens/ (idle and busy screens of Claude Code
2.1.197 and Codex 0.169.0; the ``pasted``, ``pasted-long`` and ``submitted`` screens
of Claude Code 2.1.332 and Codex 0.171.0 when they are there), plus screens of the
real Claude Code 2.1.332 and Codex 0.171.0 (offline, 200x50, private tmux server)
transcribed below where the recordings do not cover a case: a paste whose Enter was
taken as queued while a turn ran, a long paste collapsed to a placeholder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netskyd.bus.confirm import (
    composer_for,
    consumed,
    draws_paste,
    holds_paste,
    marks_for,
    paste_drawn,
    split,
)
from netskyd.bus.envelope import Envelope, render_channel
from netskyd.config import Runtime

SCREENS = Path(__file__).resolve().parent.parent / "screens"
C, X, D = Runtime.CLAUDE, Runtime.CODEX, Runtime.DEMO
RULE = "─" * 100
CHANNEL = '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-01-01T00:00:00Z">'


def screen(name: str) -> str:
    return (SCREENS / name).read_text()


def paste_of(*texts: str) -> tuple[str, list[str]]:
    envs = [
        Envelope.model_validate(
            {"v": 1, "id": f"{i:032x}", "from": "agent1", "to": "agent0",
             "ts": "2026-01-01T00:00:00Z", "kind": "message", "text": t,
             "chat_id": "agent1", "in_reply_to": None}
        )
        for i, t in enumerate(texts)
    ]
    return render_channel(envs), list(texts)


def claude(body: list[str], composer: list[str], footer: str = "  ⏵⏵ auto mode on") -> str:
    head = [" ▐▛███▛█   Claude Code v2.1.332", "▝▜██████▀  Opus 5.5 · API Usage Billing", ""]
    return "\n".join([*head, *body, RULE, *composer, RULE, footer, "", ""])


def codex(body: list[str], composer: str, footer: str = "  ← for agents · ? for shortcuts") -> str:
    head = ["", "  >_ OpenAI Codex (v0.171.0)", "     /tmp/work", ""]
    return "\n".join([*head, *body, "", composer, "", "  GPT-6.2-Sol default · /tmp/work",
                      footer, ""])


SHORT = "hello there short text 1234"
PASTE, TEXTS = paste_of(SHORT)
MARKS = marks_for(PASTE, TEXTS)

CLAUDE_IDLE = claude([], ["❯ "])
CLAUDE_PASTED = claude([], [f"❯ {CHANNEL}", f"  {SHORT}", "  </channel>"])
CLAUDE_TAKEN = claude(
    [f"← agent: {SHORT}", "✻ Connection refused · retrying in 1s · attempt 2/10"],
    ["❯            "],
    "  ⏵⏵ auto mode on · esc to interrupt · ← for agents",
)
CLAUDE_TAKEN_IDLE = claude([f"← agent: {SHORT}", "● Got it."], ["❯ "])
CLAUDE_LONG = claude([], ["❯ [Pasted text #1 +41 lines] "], "  paste again to expand")
CLAUDE_QUEUED = claude(
    [f"❯ {CHANNEL}", "  line 0 of a long paste", "  … +28 lines",
     "  ⎿  Queued · ctrl+x ctrl+s to send now"],
    ["❯ Press up to edit queued messages"],
    "  ⏵⏵ auto mode on · esc to interrupt",
)
CODEX_IDLE = codex([], "› Ask Codex to do anything")
CODEX_PASTED = codex([], f"› {CHANNEL}\n  {SHORT}\n  </channel>", "")
CODEX_TAKEN = codex([f"› {CHANNEL}", f"  {SHORT}", "  </channel>"], "› Ask Codex to do anything")
CODEX_WORKING = codex(
    [f"› {CHANNEL}", f"  {SHORT}", "  </channel>", "", "• Working (0s • esc to interrupt)"],
    "› Ask Codex to do anything",
)
CODEX_LONG = codex([], "› [Pasted Content 1482 chars]", "  tab to queue message")


def test_marks_are_the_paste_last_line_and_the_last_text() -> None:
    paste, texts = paste_of("first one", "second\nand its last line here, long enough to cut")
    marks = marks_for(paste, texts)
    assert marks.last_line == "</channel>"
    assert marks.text == ("ast line here, long enough to cut"[-24:].strip(), "second")


@pytest.mark.parametrize(
    ("runtime", "before", "after", "drawn"),
    [
        (C, CLAUDE_IDLE, CLAUDE_PASTED, True),
        (C, CLAUDE_IDLE, CLAUDE_LONG, True),  # the collapsed-paste placeholder
        (C, CLAUDE_IDLE, CLAUDE_IDLE, False),  # nothing changed yet
        (C, CLAUDE_PASTED, CLAUDE_PASTED, False),  # unchanged since before the paste
        (X, CODEX_IDLE, CODEX_PASTED, True),
        (X, CODEX_IDLE, CODEX_LONG, True),
        # The text above the composer (an earlier turn) is no paste in the composer.
        (X, CODEX_IDLE, CODEX_TAKEN, False),
    ],
)
def test_paste_drawn(runtime: Runtime, before: str, after: str, drawn: bool) -> None:
    assert paste_drawn(runtime, before, after, MARKS) is drawn


@pytest.mark.parametrize(
    ("runtime", "before", "after", "taken"),
    [
        (C, CLAUDE_IDLE, CLAUDE_PASTED, False),  # still in the composer
        (C, CLAUDE_IDLE, CLAUDE_LONG, False),  # its placeholder is still there
        (C, CLAUDE_IDLE, CLAUDE_TAKEN, True),  # "← agent: text" above, and busy
        (C, CLAUDE_IDLE, CLAUDE_TAKEN_IDLE, True),  # above, the turn already over
        (C, CLAUDE_IDLE, CLAUDE_QUEUED, True),  # queued while a turn runs: busy mark
        (C, CLAUDE_IDLE, CLAUDE_IDLE, False),  # nothing happened
        # The same text above already before the paste, nothing new: not taken.
        (C, CLAUDE_TAKEN_IDLE, CLAUDE_TAKEN_IDLE, False),
        (X, CODEX_IDLE, CODEX_PASTED, False),
        (X, CODEX_IDLE, CODEX_LONG, False),
        (X, CODEX_IDLE, CODEX_TAKEN, True),
        (X, CODEX_IDLE, CODEX_WORKING, True),
    ],
)
def test_consumed(runtime: Runtime, before: str, after: str, taken: bool) -> None:
    assert consumed(runtime, before, after, MARKS) is taken


def test_demo_agent_composer_is_its_prompt() -> None:
    assert not draws_paste(D)  # tty echo off: Enter goes with the paste
    paste, texts = paste_of("ping")
    marks = marks_for(paste, texts)
    head = "netsky demo agent agent0 ready (session 1234abcd, pid 42)\nsend me 'ping' ...\n"
    before = head + "agent0> "
    # It prints over its prompt, then shows the prompt again.
    assert consumed(D, before, head + "← agent1: ping\n→ agent1: pong\nagent0> ", marks) is True
    # A hung demo agent: nothing moves, no prompt comes back.
    hung = "← owner: hang\nagent0: hanging (ignoring input)\n"
    assert consumed(D, hung, hung, marks) is False
    # The bench turns tty echo on: the paste shows at the prompt until Enter.
    echoed = before.rstrip() + f" {CHANNEL}\nping\n</channel>"
    assert consumed(D, before, echoed, marks) is False
    assert consumed(D, before, echoed + "\n← agent1: ping\nagent0> ", marks) is True


def test_runtimes_without_a_composer_cannot_tell() -> None:
    assert composer_for(Runtime.SHELL) is None and draws_paste(Runtime.SHELL)
    assert consumed(Runtime.SHELL, "$ ", "$ hello\n$ ", MARKS) is None
    # ... but a shell's echo shows the paste drawn at the bottom of the screen.
    assert paste_drawn(Runtime.SHELL, "$ ", f"$ {CHANNEL}\n{SHORT}\n</channel>", MARKS)


def test_split_finds_the_last_composer_line() -> None:
    above, composer = split(C, CLAUDE_QUEUED)
    assert composer is not None and composer[0] == "❯ Press up to edit queued messages"
    assert any("Queued" in ln for ln in above)
    assert not holds_paste(C, composer, MARKS)


# -- the recordings ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["claude-code-2.1.197", "codex-0.169.0"])
@pytest.mark.parametrize("size", ["100x30", "200x50"])
def test_idle_and_busy_recordings_hold_no_paste(version: str, size: str) -> None:
    runtime = C if version.startswith("claude") else X
    idle = screen(f"{version}/idle.{size}.txt")
    busy = screen(f"{version}/busy-1.{size}.txt")
    assert not paste_drawn(runtime, idle, busy, MARKS)
    assert consumed(runtime, idle, idle, MARKS) is False
    _, composer = split(runtime, busy)
    assert composer is not None and not holds_paste(runtime, composer, MARKS)


#: The recorders' pastes (tests/screens/record_claude.py, record_codex.py).
RECORDED_PASTES = {
    "claude-code-2.1.332": (
        '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">'
        "hello</channel>",
        "\n".join(
            [
                '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">',
                *(f"line {n} of a longer message from agent1" for n in range(1, 11)),
                "</channel>",
            ]
        ),
        ["hello"],
        ["line 1 of a longer message from agent1\nline 10 of a longer message from agent1"],
    ),
    "codex-0.171.0": (
        '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">'
        "hello</channel>",
        "\n".join(
            ['<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">'
             "line 1 of a longer message"]
            + [f"line {i} of a longer message" for i in range(2, 12)]
            + ["</channel>"]
        ),
        ["hello"],
        ["line 1 of a longer message\nline 11 of a longer message"],
    ),
}


def _recorded(version: str, name: str, size: str) -> str:
    path = SCREENS / version / f"{name}.{size}.txt"
    if not path.exists():
        pytest.skip(f"{path.relative_to(SCREENS)} is not recorded (yet)")
    return path.read_text()


@pytest.mark.parametrize("version", sorted(RECORDED_PASTES))
@pytest.mark.parametrize("size", ["100x30", "200x50"])
def test_recorded_paste_and_submit(version: str, size: str) -> None:
    runtime = C if version.startswith("claude") else X
    short, long, short_texts, long_texts = RECORDED_PASTES[version]
    idle = _recorded(version, "idle", size)
    pasted = _recorded(version, "pasted", size)
    marks = marks_for(short, short_texts)
    assert paste_drawn(runtime, idle, pasted, marks)
    assert consumed(runtime, idle, pasted, marks) is False
    submitted = _recorded(version, "submitted", size)
    assert consumed(runtime, idle, submitted, marks) is True
    pasted_long = _recorded(version, "pasted-long", size)
    long_marks = marks_for(long, long_texts)
    assert paste_drawn(runtime, idle, pasted_long, long_marks)
    assert consumed(runtime, idle, pasted_long, long_marks) is False
