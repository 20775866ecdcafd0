"""Dialogs on an agent's screen: find them, plan an answer by label, answer each once.

Pure: no tmux, no clock of its own. ``netskyd.activity.monitor`` feeds it screens and
sends the keys it plans.

- ``detect(runtime, text)`` finds the catalogue's dialog on a screen
  (``netskyd.runtimes.catalogue``): its title in the screen's last lines, its numbered
  options, and a content key (the normalised dialog region without the highlight
  marker) that tells one rendering from a changed one.
- ``plan(dialog, action)`` picks the option whose *label* carries out ``action``
  and the arrow keys that move the highlight (``❯``/``›``/``>``) from where it is
  to that option. With no highlighted option there is no plan: netsky never
  presses Enter on a menu it cannot read.
- ``DialogHandler`` decides, per agent, when a dialog may be answered: only once
  it has looked the same for ``settle_s`` (a half-drawn screen is never
  answered), and at most once per *instance*.

A dialog instance is one appearance of one dialog (by name) on one agent's
session. It ends only when the dialog has been seen *absent* — a screen without
it was observed — and it is still absent, or shows again, ``gone_s`` or more
after that first absent observation. So a dialog that stays up after its answer,
flickers, or redraws with a moved highlight is the same instance and is never
answered again; a dialog that went away and came back later is a new one.
(The rule exists because auto-answer tools have answered one prompt over a
hundred times.)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum

from netskyd.config import Runtime
from netskyd.runtimes.catalogue import REGION, DialogSpec, Kind, screens_for, unknown_dialog
from netskyd.runtimes.screen import (
    MARKERS,
    Option,
    normalise_line,
    parse_menu,
    screen_lines,
    strip_box,
)

_UNMARK = str.maketrans(dict.fromkeys(MARKERS, " "))


@dataclass(frozen=True)
class Dialog:
    """A dialog found on a screen.

    ``lines``: the screen lines from the title to the last option (the evidence
    journalled with every answer). ``options``: the parsed menu (empty for a
    screen answered by a named key). ``key``: 32 hex digits identifying the
    dialog region's content, ignoring where the highlight is.
    """

    spec: DialogSpec
    lines: tuple[str, ...]
    options: tuple[Option, ...]
    key: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def highlighted(self) -> Option | None:
        marked = [o for o in self.options if o.highlighted]
        return marked[0] if len(marked) == 1 else None

    def to_json(self) -> dict[str, object]:
        """``{"name", "kind", "lines": [...], "options": [labels], "highlighted": label|None}``."""
        hi = self.highlighted
        return {
            "name": self.name,
            "kind": self.spec.kind.value,
            "lines": list(self.lines),
            "options": [o.label for o in self.options],
            "highlighted": hi.label if hi else None,
        }


def detect(runtime: Runtime, text: str) -> Dialog | None:
    """The dialog of ``runtime`` shown on ``text`` (a pane capture), or None.

    A catalogue entry whose title (and ``also`` lines) are in the screen's last
    REGION lines, with its menu under the title read by shape
    (``netskyd.runtimes.screen.parse_menu``: numbered or not), names the dialog. When none
    does, a menu that has the whole shape of a dialog — a highlighted option,
    siblings, a confirm footer, and no idle prompt under it — is the ``unknown``
    dialog (``catalogue.unknown_dialog``): netsky waits, pages, never answers it.
    """
    screens = screens_for(runtime)
    lines = screen_lines(text)
    top = max(0, len(lines) - REGION)
    region = [strip_box(line) for line in lines[top:]]
    for spec in screens.dialogs:
        title = next((i for i, line in enumerate(region) if spec.title.search(line)), None)
        if title is None:
            continue
        if not all(any(p.search(line) for line in region) for p in spec.also):
            continue
        menu = parse_menu(lines[top + title :]) if spec.menu else None
        if spec.menu and menu is None:
            continue  # a title alone may be transcript text, or a menu not yet drawn
        end = title + menu.last_row + 1 if menu else len(region)
        shown = tuple(lines[top + title : top + end])
        options = menu.options if menu else ()
        return Dialog(spec, shown, options, _content_key(lines[top:]))
    if not screens.dialogs:
        return None  # no catalogue: a shell's own menus are its business
    return _unknown(runtime, lines[top:], screens.idle)


#: Lines above an unknown menu kept as its evidence (its title and question).
_UNKNOWN_CONTEXT = 10


def _unknown(runtime: Runtime, region: list[str], idle: re.Pattern[str] | None) -> Dialog | None:
    """The ``unknown`` dialog when ``region`` ends in a full dialog shape (``detect``)."""
    menu = parse_menu(region)
    if menu is None or menu.highlighted is None or menu.footer_row is None:
        return None
    below = region[menu.last_row + 1 :]
    if idle is not None and any(idle.search(line) for line in below):
        return None  # the composer is under it: a list in the transcript, not a dialog
    start = max(0, menu.first_row - _UNKNOWN_CONTEXT)
    while start < menu.first_row and not region[start].strip():
        start += 1
    shown = tuple(region[start : menu.footer_row + 1])
    return Dialog(unknown_dialog(runtime), shown, menu.options, _content_key(region))


def _content_key(region: list[str]) -> str:
    text = "\n".join(normalise_line(strip_box(line).translate(_UNMARK)).strip() for line in region)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Plan:
    """How to carry out an action on a dialog: move the highlight, then confirm.

    ``target``: the option whose label carries out the action (None for a screen
    answered by a named key). ``moves``: arrow keys (``Up``/``Down``) taking the
    highlight there. ``confirm``: the key that submits (``Enter``, or the screen's
    named key).
    """

    action: str
    target: Option | None
    moves: tuple[str, ...]
    confirm: str

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action,
            "choice": self.target.label if self.target else None,
            "keys": [*self.moves, self.confirm],
        }


class NoPlan(Exception):
    """The dialog cannot be answered with this action; the message says why."""


def plan(dialog: Dialog, action: str) -> Plan:
    """The keys that choose ``action``'s option on ``dialog``, by label.

    Raises NoPlan when the dialog is a question for the owner, no option's label
    carries out ``action``, or no option is highlighted (no blind keys).
    """
    spec = dialog.spec
    if spec.kind is Kind.QUESTION:
        raise NoPlan(f"{spec.name} is a question for the owner; netsky never answers it")
    if spec.kind is Kind.UNKNOWN:
        raise NoPlan("a dialog netsky does not know; netsky never answers it")
    if not dialog.options:
        key = spec.keys.get(action)
        if key is None:
            raise NoPlan(f"{spec.name} has no key for {action!r}")
        return Plan(action, None, (), key)
    pattern = spec.choices.get(action)
    if pattern is None:
        raise NoPlan(f"{spec.name} has no option for {action!r}")
    matches = [o for o in dialog.options if pattern.search(o.label)]
    if not matches:
        labels = "; ".join(o.label for o in dialog.options)
        raise NoPlan(f"{spec.name}: no option labelled /{pattern.pattern}/ (options: {labels})")
    target = matches[0]
    hi = dialog.highlighted
    if hi is None:
        raise NoPlan(f"{spec.name}: no highlighted option on screen; no blind keys")
    delta = target.index - hi.index
    moves = ("Down",) * delta if delta > 0 else ("Up",) * -delta
    return Plan(action, target, moves, "Enter")


class Step(StrEnum):
    """What the handler says about one observation of one agent's screen."""

    NONE = "none"  # no dialog on screen
    SETTLING = "settling"  # a dialog, not yet stable for settle_s
    ANSWER = "answer"  # answer it now (then call ``answered``)
    DONE = "done"  # this instance was answered already


@dataclass
class _Instance:
    key: str
    key_since: float
    first_seen: float
    last_seen: float
    absent_since: float | None = None
    answered: bool = False
    number: int = 1


@dataclass
class DialogHandler:
    """Per-agent dialog instances (module docstring); pure, times passed in (seconds)."""

    settle_s: float = 0.5
    gone_s: float = 3.0
    _agents: dict[str, tuple[str | None, dict[str, _Instance]]] = field(default_factory=dict)
    _counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(
        self, agent: str, session_id: str | None, dialog: Dialog | None, now: float
    ) -> Step:
        """Feed one screen of ``agent``; returns what to do about its dialog."""
        session, instances = self._agents.get(agent, (session_id, {}))
        if session != session_id:
            instances = {}  # a new session: nothing carried over
        self._agents[agent] = (session_id, instances)
        shown = dialog.name if dialog else None
        for name, other in list(instances.items()):
            if name == shown:
                continue
            if other.absent_since is None:
                other.absent_since = now
            elif now - other.absent_since >= self.gone_s:
                del instances[name]
        if dialog is None:
            return Step.NONE
        inst = instances.get(dialog.name)
        if inst is not None and inst.absent_since is not None:
            if now - inst.absent_since >= self.gone_s:
                inst = None  # it went away and came back: a new instance
            else:  # a flicker: the same instance, but it must settle again
                inst.absent_since, inst.key_since = None, now
        if inst is None:
            n = self._counts.get((agent, dialog.name), 0) + 1
            self._counts[(agent, dialog.name)] = n
            inst = instances[dialog.name] = _Instance(dialog.key, now, now, now, number=n)
        inst.last_seen = now
        if inst.key != dialog.key:
            inst.key, inst.key_since = dialog.key, now  # redrawn: settle again
        if inst.answered:
            return Step.DONE
        if now - inst.key_since < self.settle_s:
            return Step.SETTLING
        return Step.ANSWER

    def answered(self, agent: str, name: str) -> None:
        """Record that ``name``'s current instance on ``agent`` was answered (or tried)."""
        _, instances = self._agents.get(agent, (None, {}))
        inst = instances.get(name)
        if inst is not None:
            inst.answered = True

    def instance(self, agent: str, name: str) -> str | None:
        """``<name>#<n>``: the current instance's id (n counts instances per agent)."""
        _, instances = self._agents.get(agent, (None, {}))
        inst = instances.get(name)
        return f"{name}#{inst.number}" if inst else None

    def age(self, agent: str, name: str, now: float) -> float | None:
        """Seconds the current instance of ``name`` on ``agent`` has been up, or None."""
        _, instances = self._agents.get(agent, (None, {}))
        inst = instances.get(name)
        return None if inst is None else now - inst.first_seen

    def forget(self, agent: str) -> None:
        self._agents.pop(agent, None)
