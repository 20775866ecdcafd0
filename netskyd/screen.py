"""Pane text, pure: normalisation, fingerprints and numbered-option menus.

The hang check asks one question of a pane: has it *moved*? Agent TUIs animate
while they wait — a spinner glyph, a rotating verb ("Pondering…", "Noodling…"), an
elapsed-time counter, a token counter, a clock — so a raw hash changes every
second even when nothing happens. ``normalise`` rewrites those to fixed tokens
before hashing; what is left moves only when the agent prints something new.
The rules come from the recorded screens in ``tests/screens/`` (Claude Code 2.1,
Codex CLI 0.16x) and are deliberately narrow: real output that happens to match
(a duration in a log line) only makes the fingerprint a little less sensitive.

Menus: the dialogs of both CLIs are numbered option lists with one highlighted
option (``❯`` in Claude Code, ``›`` in Codex, ``>`` elsewhere). ``parse_options``
reads them bottom-up from the screen: the run of ``1.``, ``2.``, ... closest to the
bottom, each with its label and whether it carries the marker.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: Glyphs that animate at the start of a status line (Claude's ✻ family, braille spinners).
SPINNER_GLYPHS = "·✢✳✶✻✽✺✹✷✸*⠁⠂⠄⡀⢀⠠⠐⠈⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏◐◓◑◒◴◷◶◵⣾⣽⣻⢿⡿⣟⣯⣷"
#: Characters that mark the highlighted option of a menu.
MARKERS = "❯›>▸➤"
_BOX = "│┃║╎╏"

#: Bullets that blink only on a status line (Codex's "◦ Working"/"• Working").
STATUS_BULLETS = "•◦●○"
_SPIN_GLYPH = re.compile(rf"^(\s*)[{re.escape(SPINNER_GLYPHS)}](\s)")
_STATUS_LINE = re.compile(
    rf"^(\s*)[{re.escape(SPINNER_GLYPHS + STATUS_BULLETS)}](\s+)[A-Z][\w'-]*(?:…|\.\.\.)?"
)
_TOKENS = re.compile(r"[↑↓⬆⬇]?\s?\d[\d,.]*\s?[kKmM]?\s+tokens?\b")
_DURATION = re.compile(
    r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|secs|m|min|mins|h|hr|hrs|d)\b"
    r"(?:\s\d+(?:\.\d+)?\s?(?:ms|s|sec|secs|m|min|mins|h|hr|hrs))*"
)
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b")
_OPTION = re.compile(
    rf"^\s*(?:(?P<mark>[{re.escape(MARKERS)}])\s*)?(?P<num>\d{{1,2}})[.)]\s+(?P<label>\S.*?)\s*$"
)


def strip_box(line: str) -> str:
    """A line without the box-drawing borders some dialogs are drawn in."""
    s = line.strip()
    if s[:1] in _BOX:
        s = s[1:]
    if s[-1:] in _BOX:
        s = s[:-1]
    return s.strip()


def screen_lines(text: str) -> list[str]:
    """The pane text as lines, right-stripped, without trailing blank lines."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def normalise_line(line: str) -> str:
    """One line with its animated parts replaced by fixed tokens (module docstring).

    A *status line* (it says "esc to interrupt", or has an ellipsis) loses its
    leading glyph and its verb; any other line only a leading spinner glyph.
    """
    if "esc to interrupt" in line.lower() or "…" in line:
        line = _STATUS_LINE.sub(lambda m: f"{m.group(1)}<spin>{m.group(2)}<verb>", line, count=1)
    line = _SPIN_GLYPH.sub(r"\1<spin>\2", line, count=1)
    line = _TOKENS.sub("<tokens>", line)
    line = _CLOCK.sub("<time>", line)
    return _DURATION.sub("<dur>", line)


def normalise(text: str) -> str:
    """The pane text with spinners, verbs, timers, clocks and token counters fixed."""
    return "\n".join(normalise_line(line) for line in screen_lines(text))


def fingerprint(text: str) -> str:
    """32 hex digits identifying the normalised pane text (blake2b-128)."""
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).hexdigest()


def raw_hash(text: str) -> str:
    """32 hex digits identifying the pane text exactly as captured."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Option:
    """One numbered option of an on-screen menu.

    ``number`` is the digit shown (1-based), ``index`` its position in the menu
    (0-based), ``label`` the text after ``N.``, ``highlighted`` whether the marker
    is on it, ``row`` its line number on the screen (0 = top).
    """

    number: int
    index: int
    label: str
    highlighted: bool
    row: int


def parse_options(lines: list[str]) -> tuple[Option, ...]:
    """The numbered menu closest to the bottom of ``lines``: ``1.``..``n.`` in order.

    Lines between options that are not options (wrapped labels, descriptions) are
    skipped. Returns () when there is no menu starting at 1.
    """
    found: list[tuple[int, int, str, bool]] = []  # (row, number, label, highlighted)
    for row in range(len(lines) - 1, -1, -1):
        m = _OPTION.match(strip_box(lines[row]))
        if m is None:
            continue
        number = int(m.group("num"))
        if found and number != found[-1][1] - 1:
            found = []  # not a contiguous run: start again from this line
        found.append((row, number, m.group("label"), m.group("mark") is not None))
        if number == 1:
            break
    if not found or found[-1][1] != 1:
        return ()
    found.reverse()
    return tuple(
        Option(number=n, index=i, label=label, highlighted=hi, row=row)
        for i, (row, n, label, hi) in enumerate(found)
    )
