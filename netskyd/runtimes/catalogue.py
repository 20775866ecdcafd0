"""What each runtime's screen looks like: idle prompt, busy marks, usage limits, dialogs.

Pure data plus small helpers, gathered from the runtimes' own modules
(``netskyd/runtimes/<name>.py``, each one's ``SCREENS``) in the vocabulary of
``netskyd.runtimes.screens`` (re-exported here: ``Kind``, ``Action``, ``DialogSpec``,
``Screens``, ``REGION``). Every pattern was taken from a real screen; the
recordings are checked in under ``tests/screens/<cli>-<version>/`` with a README
that says how each was reached, and ``tests/unit/test_catalogue.py`` runs every
pattern against them. The dialog names are the keys of the ``dialogs`` table in
``config.toml`` (docs/activity.md).
"""

from __future__ import annotations

import re

from netskyd.runtimes import RUNTIMES, claude, codex
from netskyd.runtimes import screens_for as screens_for
from netskyd.runtimes.names import Runtime
from netskyd.runtimes.screens import REGION as REGION
from netskyd.runtimes.screens import Action as Action
from netskyd.runtimes.screens import DialogSpec as DialogSpec
from netskyd.runtimes.screens import Kind as Kind
from netskyd.runtimes.screens import Screens as Screens

#: Every runtime's screens (``custom``'s empty: netsky cannot tell).
CATALOGUE: dict[Runtime, Screens] = {runtime: m.SCREENS for runtime, m in RUNTIMES.items()}

#: Each runtime's dialogs, in the order they are tried.
CLAUDE_DIALOGS = claude.DIALOGS
CODEX_DIALOGS = codex.DIALOGS

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
        Action.OFF,
        "a menu netsky does not know (not in its catalogue): left for the owner",
    )
    for runtime in Runtime
}


def unknown_dialog(runtime: Runtime) -> DialogSpec:
    """The spec standing for a dialog of ``runtime`` that no catalogue entry names."""
    return _UNKNOWN_SPECS[runtime]
