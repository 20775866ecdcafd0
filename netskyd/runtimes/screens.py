"""The vocabulary of screen knowledge: what a runtime's screen may say, and how it is written.

Each runtime's module (``netskyd/runtimes/<name>.py``) describes its screen as one
``Screens``: idle prompt, busy marks, usage limits, dialogs. This module holds only
the shapes; ``netskyd.runtimes.catalogue`` gathers every runtime's.

A dialog is found by its *title* line within the last ``REGION`` lines of the
screen (dialogs draw at the bottom; a transcript line higher up that quotes a
dialog never counts) and, for menus, by its numbered options. Its *choices* map a
policy action (``approve``, ``deny``) to a regex on the option's label: the
answer is always chosen by label, never by position, since several of these
screens preselect the option netsky does not want (Claude's bypass-permissions
warning and API-key question both highlight the refusing answer).

Kinds: ``setup`` (first-run and start-up screens), ``permission`` (a tool call
waiting for approval; default ``off``: the owner opts in), ``limit`` (the
usage-limit menu), ``question`` (a question the agent asks its user: never
answered by netsky, whatever the config says), ``unknown`` (a menu with a
dialog's shape that no entry names, e.g. one a new release added: the agent is
``waiting``, the owner is paged once, and no key is ever sent to it).

Menus are read by shape (``netskyd.runtimes.screen.parse_menu``), numbered or not, and
labels are matched without their numbers: Claude Code 2.1.332 draws the same
dialogs as 2.1.197 without the ``1.``/``2.`` and with another option preselected
(tests/screens/claude-code-2.1.332/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from netskyd.runtimes.names import Runtime

#: Dialogs, busy marks and limit notices are looked for in the screen's last lines only.
REGION = 30


class Kind(StrEnum):
    SETUP = "setup"
    PERMISSION = "permission"
    LIMIT = "limit"
    QUESTION = "question"
    #: A menu of dialog shape that no catalogue entry names: waited on, paged, never answered.
    UNKNOWN = "unknown"


class Action(StrEnum):
    """What the config may say to do with a dialog (``[dialogs]`` table)."""

    APPROVE = "approve"
    DENY = "deny"
    OFF = "off"


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class DialogSpec:
    """One known dialog of one runtime.

    ``title`` must match a line in the screen's last REGION lines and every regex
    in ``also`` another line there. ``choices`` maps an Action value to a regex
    on the label of the option that carries it out (``re.search``). A screen with
    no numbered menu has ``menu=False``; ``keys`` may answer it (e.g.
    ``{"approve": "Enter"}`` for "Press Enter to continue").
    """

    name: str
    runtime: Runtime
    kind: Kind
    title: re.Pattern[str]
    choices: dict[str, re.Pattern[str]]
    default: Action
    describe: str
    also: tuple[re.Pattern[str], ...] = ()
    keys: dict[str, str] = field(default_factory=dict)
    #: False for a screen with no numbered menu (found by its title alone).
    menu: bool = True

    @property
    def blocking(self) -> bool:
        """Every known dialog blocks its agent until it is answered."""
        return True


@dataclass(frozen=True)
class Screens:
    """What one runtime's screen says about its state.

    ``idle``: the input prompt, matched against the last non-blank lines. ``busy``:
    marks shown only while a turn is running. ``starting``: marks of a start-up
    screen that already draws the prompt but is not taking input yet (Codex 0.169
    shows its composer under a loading logo for seconds, then maybe a trust
    screen; tests/screens/codex-0.169.0/starting.*). ``ready``: see the field.
    ``limit``: a usage or rate
    limit notice, searched over the whole screen (a notice stays where it was
    printed, often far above the bottom). ``dialogs``: the catalogue.
    """

    idle: re.Pattern[str] | None
    busy: tuple[re.Pattern[str], ...] = ()
    #: Lines only a screen that takes input shows, whatever its footer says (Codex's
    #: status line ``  <model> <effort> · <cwd>``). With one on screen the prompt is the
    #: nearest ``idle`` line above it, however tall the composer, and no ``starting``
    #: mark counts; without one the footer-based rule applies.
    ready: tuple[re.Pattern[str], ...] = ()
    starting: tuple[re.Pattern[str], ...] = ()
    limit: tuple[re.Pattern[str], ...] = ()
    dialogs: tuple[DialogSpec, ...] = ()
