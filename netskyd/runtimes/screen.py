"""Pane text, pure: normalisation, fingerprints and numbered-option menus.

The hang check asks one question of a pane: has it *moved*? Agent TUIs animate
while they wait — a spinner glyph, a rotating verb ("Pondering…", "Noodling…"), an
elapsed-time counter, a token counter, a clock — so a raw hash changes every
second even when nothing happens. ``normalise`` rewrites those to fixed tokens
before hashing; what is left moves only when the agent prints something new.
The rules come from the recorded screens in ``tests/screens/`` (Claude Code 2.1,
Codex CLI 0.16x) and are deliberately narrow: real output that happens to match
(a duration in a log line) only makes the fingerprint a little less sensitive.

Menus are read by their *shape*, not by one release's wording (issue 14): a
highlighted row (a marker ``❯`` in Claude Code, ``›`` in Codex, ``>`` elsewhere,
in front of the label), its sibling option rows (numbered ``1.``, ``2.``, ... or
not: Claude Code 2.1.332 dropped the numbers), and often a confirm footer such as
``Enter to confirm · Esc to cancel``. ``parse_menu`` finds the menu closest to the
bottom of the screen; ``parse_options`` is its numbered half (the run of ``1.``,
``2.``, ... closest to the bottom). Labels never include their numbers.
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
    """One option of an on-screen menu.

    ``number`` is the digit shown (1-based; None in an unnumbered menu), ``index``
    its position in the menu (0-based), ``label`` the text after the marker and the
    ``N.`` (never the number), ``highlighted`` whether the marker is on it, ``row``
    its line number on the screen (0 = top).
    """

    number: int | None
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


#: A confirm footer under a menu: "Enter to confirm · Esc to cancel", "enter continue ·
#: esc back", "Press enter to confirm or esc to cancel", "Enter to select · ↑/↓ to navigate".
FOOTER = re.compile(
    r"\benter\b.{0,12}\b(confirm|select|continue|submit|choose|proceed)\b"
    r"|\besc\b.{0,6}\b(cancel|back|exit)\b|↑/↓|\bto navigate\b",
    re.IGNORECASE,
)
_MARKED = re.compile(rf"^(?P<lead>\s*)[{re.escape(MARKERS)}](?P<gap>\s+)(?P<label>\S.*?)\s*$")
#: A row whose first glyph is one of these is a rule, a tree branch or a transcript bullet,
#: never an option label.
_NOT_LABEL = "─━═┄┈╌⎿●○◦•■□☐☒✓✔✗✘▎▌│┃╭╮╰╯└┌┐┘├┤"
#: Marks of the current choice in front of a label ("✔ Auto (match terminal)", 2.1.332).
_CHECKS = "✔✓"
_NUMBERED = re.compile(r"^(?P<num>\d{1,2})[.)]\s+(?P<label>\S.*?)\s*$")


@dataclass(frozen=True)
class Menu:
    """A menu read off a screen by its shape.

    ``options``: in screen order (``Option.row`` indexes the lines given to
    ``parse_menu``). ``numbered``: the labels were shown as ``1.``, ``2.``, ...
    ``footer``: the confirm footer line under it, if one was found, and its row.
    """

    options: tuple[Option, ...]
    numbered: bool
    footer: str | None = None
    footer_row: int | None = None

    @property
    def highlighted(self) -> Option | None:
        marked = [o for o in self.options if o.highlighted]
        return marked[0] if len(marked) == 1 else None

    @property
    def first_row(self) -> int:
        return self.options[0].row

    @property
    def last_row(self) -> int:
        return self.options[-1].row


def _unbox(line: str) -> str:
    """``line`` without a box's side borders, keeping the indentation inside the box."""
    s = line.rstrip()
    stripped = s.lstrip()
    if stripped[:1] in _BOX:
        s = stripped[1:]
    if s[-1:] in _BOX:
        s = s[:-1].rstrip()
    return s


def _marked_menu(lines: list[str]) -> tuple[Option, ...]:
    """The unnumbered menu around the marked row closest to the bottom (module docstring).

    Siblings are the rows whose label starts in the marked row's label column with
    only blanks before it; rows indented deeper are descriptions and are skipped;
    a blank row, a footer, a row starting further left or a rule ends the menu.
    Fewer than two options is no menu.
    """
    rows = [_unbox(line) for line in lines]
    for at in range(len(rows) - 1, -1, -1):
        m = _MARKED.match(rows[at])
        if m is None:
            continue
        col = len(m.group("lead")) + 1 + len(m.group("gap"))
        label = m.group("label")
        if label[:1] in _CHECKS and label[1:2] == " ":  # "❯ ✔ Auto": the current choice
            col, label = col + 2, label[2:].lstrip()
        if not label or label[0] in _NOT_LABEL:
            continue
        found = {at: (label, True)}
        for step in (-1, 1):
            r = at + step
            while 0 <= r < len(rows):
                row = rows[r]
                head, rest = row[:col], row[col:]
                if not row.strip() or FOOTER.search(row) or head.strip() not in ("", *_CHECKS):
                    break
                if head.strip() and head.rstrip()[-1:] not in _CHECKS:
                    break
                if rest[:1].isspace():  # indented deeper: a description
                    r += step
                    continue
                if rest[:1] in _NOT_LABEL:
                    break
                found[r] = (rest.strip(), False)
                r += step
        if len(found) < 2:
            continue
        return tuple(
            Option(number=None, index=i, label=label, highlighted=hi, row=row)
            for i, (row, (label, hi)) in enumerate(sorted(found.items()))
        )
    return ()


def _numbered(options: tuple[Option, ...]) -> tuple[Option, ...] | None:
    """``options`` with their ``N.`` labels split into numbers when every one has one."""
    split = [_NUMBERED.match(o.label) for o in options]
    if not all(split):
        return None
    return tuple(
        Option(int(m.group("num")), o.index, m.group("label"), o.highlighted, o.row)
        for o, m in zip(options, split, strict=True)
        if m is not None
    )


def parse_menu(lines: list[str]) -> Menu | None:
    """The menu closest to the bottom of ``lines``, numbered or not, or None.

    A numbered run (``parse_options``) and a marked unnumbered one (siblings by
    column) are both looked for; the one that ends lower on the screen wins. The
    footer is the first line within three non-blank lines under the last option
    that reads like a confirm footer (``FOOTER``).
    """
    numbered = parse_options(lines)
    marked = _marked_menu(lines)
    if marked and (not numbered or marked[-1].row > numbered[-1].row):
        split = _numbered(marked)
        menu = Menu(split or marked, numbered=split is not None)
    elif numbered:
        menu = Menu(numbered, numbered=True)
    else:
        return None
    seen = 0
    for row in range(menu.last_row + 1, len(lines)):
        if not lines[row].strip():
            continue
        if FOOTER.search(lines[row]):
            return Menu(menu.options, menu.numbered, lines[row].strip(), row)
        seen += 1
        if seen >= 3:
            break
    return menu
