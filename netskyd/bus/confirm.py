"""Did the agent get it? Pure checks on pane text: is a paste drawn, is it consumed.

A pane delivery is one bracketed paste, then Enter (netskyd/bus/delivery.py). Two
questions are asked of the pane, each a pure function of screens and the marks of
what was pasted:

- ``paste_drawn(runtime, before, after, marks)``: may Enter go now? True once the
  screen differs from the one captured just before the paste and its *composer*
  (the runtime's input area) shows the paste: a snippet of the paste's last line
  (``</channel>``), or a runtime's collapsed-paste placeholder (Claude Code's
  ``[Pasted text #1 +41 lines]``, Codex's ``[Pasted Content 1482 chars]``). An Enter
  sent before the paste is drawn is taken as a newline inside the paste by TUIs
  such as Codex: the text would sit typed but never submitted.
- ``consumed(runtime, before, after, marks)``: did the agent take it? True when the
  composer no longer holds the paste and either the runtime's busy mark shows
  (``netskyd.runtimes.catalogue``: a turn runs, or Claude queued it) or the text stands above
  the composer, on a part of the screen that changed since just before the paste
  (Claude Code renders it ``← agent: text``, Codex as its own ``› <channel ...`` turn,
  the demo agent as ``← from: text``). None when the runtime has no known composer
  (``shell``, ``custom``): nothing can be told from its screen.

The composers, from real screens (Claude Code 2.1.332, Codex 0.171.0, recorded under
``tests/screens/``; the demo agent of netskyd/agents/demo_agent.py):

| runtime | composer: its last line matching | draws the paste |
|---|---|---|
| claude | ``❯`` at the start (inside the input box) | yes, or ``[Pasted text #N +L lines]`` |
| codex | ``›`` at the start | yes, or ``[Pasted Content N chars]`` |
| demo | ``agentN> `` at the start (its prompt) | no: tty echo off, it reads whole blocks |

The composer runs from that line to the bottom of the screen. A screen with no
composer line at all (the demo agent prints none while it acts, and never again once
told to ``hang``) counts as a composer that holds nothing.

Imports nothing but the pure catalogue and screen helpers (no anyio, no tmux).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from netskyd.config import Runtime
from netskyd.runtimes.catalogue import REGION, screens_for
from netskyd.runtimes.screen import screen_lines

#: Characters of a line kept in a snippet: short enough to survive a TUI's own line
#: wrapping most of the time, long enough not to match by chance.
SNIPPET_CHARS = 24


@dataclass(frozen=True)
class Composer:
    """One runtime's input area: the line that starts it, its paste placeholders, and
    whether a paste shows there before Enter (``draws_paste``)."""

    prompt: re.Pattern[str]
    placeholders: tuple[re.Pattern[str], ...] = ()
    draws_paste: bool = True


COMPOSERS: dict[Runtime, Composer] = {
    Runtime.CLAUDE: Composer(
        re.compile(r"^\s*❯(?:\s|$)"),
        (re.compile(r"\[Pasted text #\d+(?: \+\d+ lines?)?\]"),),
    ),
    Runtime.CODEX: Composer(
        re.compile(r"^›(?:\s|$)"),
        (re.compile(r"\[Pasted Content \d+ chars\]"),),
    ),
    Runtime.DEMO: Composer(re.compile(r"^agent(?:\d+|infinity)> ?"), draws_paste=False),
}


def composer_for(runtime: Runtime) -> Composer | None:
    """The runtime's composer, or None when it is not known (shell, custom)."""
    return COMPOSERS.get(runtime)


def draws_paste(runtime: Runtime) -> bool:
    """Whether a paste shows on the runtime's screen before Enter (unknown: assume so)."""
    composer = COMPOSERS.get(runtime)
    return composer is None or composer.draws_paste


def _squash(s: str) -> str:
    return " ".join(s.split())


def _tail(line: str) -> str:
    s = _squash(line)
    return s[-SNIPPET_CHARS:].strip()


def _head(line: str) -> str:
    s = _squash(line)
    return s[:SNIPPET_CHARS].strip()


@dataclass(frozen=True)
class PasteMarks:
    """What identifies one paste on a screen.

    ``last_line``: a snippet (the tail) of the paste's last non-blank line, what is
    drawn last. ``text``: snippets of the last envelope's own text (the tail of its
    last line, the head of its first), what stands above the composer once taken.
    """

    last_line: str
    text: tuple[str, ...]


def marks_for(paste: str, texts: Sequence[str]) -> PasteMarks:
    """The marks of ``paste`` (the rendered ``<channel>`` blocks), whose envelopes'
    texts are ``texts`` in order (the last one is drawn last)."""
    lines = [ln for ln in paste.splitlines() if ln.strip()]
    last_line = _tail(lines[-1]) if lines else ""
    text: list[str] = []
    body = [ln for ln in (texts[-1] if texts else "").splitlines() if ln.strip()]
    if body:
        for snippet in (_tail(body[-1]), _head(body[0])):
            if snippet and snippet not in text:
                text.append(snippet)
    return PasteMarks(last_line, tuple(text))


def split(runtime: Runtime, text: str) -> tuple[list[str], list[str] | None]:
    """``(lines above the composer, composer lines)`` of a screen; the composer is None
    when the screen shows none (or the runtime has no known composer: everything is
    "above")."""
    lines = screen_lines(text)
    composer = COMPOSERS.get(runtime)
    if composer is None:
        return lines, None
    for i in range(len(lines) - 1, -1, -1):
        if composer.prompt.search(lines[i]):
            return lines[:i], lines[i:]
    return lines, None


def _contains(lines: Sequence[str], snippet: str) -> bool:
    """``snippet`` on one line, or across a line break a TUI inserted (joined with a
    space, or with nothing for a break inside a word); whitespace squashed."""
    if not snippet:
        return False
    squashed = [_squash(ln.strip()) for ln in lines]
    return (
        any(snippet in ln for ln in squashed)
        or snippet in " ".join(squashed)
        or snippet in "".join(squashed)
    )


def _placeholder(runtime: Runtime, lines: Sequence[str]) -> bool:
    composer = COMPOSERS.get(runtime)
    if composer is None:
        return False
    return any(p.search(ln) for p in composer.placeholders for ln in lines)


def holds_paste(runtime: Runtime, lines: Sequence[str], marks: PasteMarks) -> bool:
    """Whether ``lines`` (a composer) show the paste: its last line, a snippet of its
    text, or a collapsed-paste placeholder."""
    return (
        _contains(lines, marks.last_line)
        or any(_contains(lines, m) for m in marks.text)
        or _placeholder(runtime, lines)
    )


def paste_drawn(runtime: Runtime, before: str, after: str, marks: PasteMarks) -> bool:
    """Whether the paste is drawn on ``after`` (module docstring), ``before`` being the
    screen captured just before the paste. A runtime with no known composer is
    looked at in the bottom REGION lines of its screen."""
    if after == before:
        return False
    above, composer = split(runtime, after)
    region = composer if composer is not None else above[-REGION:]
    return _contains(region, marks.last_line) or _placeholder(runtime, region)


def busy_mark(runtime: Runtime, text: str) -> str | None:
    """The runtime's busy mark on the screen's last REGION lines, if one shows."""
    patterns = screens_for(runtime).busy
    for line in screen_lines(text)[-REGION:]:
        if any(p.search(line) for p in patterns):
            return line.strip()
    return None


def consumed(runtime: Runtime, before: str, after: str, marks: PasteMarks) -> bool | None:
    """Whether the agent has taken the paste (module docstring); None when its screen
    cannot tell (no known composer). ``before``: the screen just before the paste."""
    if runtime not in COMPOSERS:
        return None
    above, composer = split(runtime, after)
    if composer is not None and holds_paste(runtime, composer, marks):
        return False
    if busy_mark(runtime, after) is not None:
        return True
    above_before, _ = split(runtime, before)
    return above != above_before and any(_contains(above, m) for m in marks.text)


def tail(text: str, n: int = 8) -> list[str]:
    """The last ``n`` non-blank lines of a screen (the evidence of a report)."""
    return [ln for ln in screen_lines(text) if ln.strip()][-n:]
