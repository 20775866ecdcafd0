"""Names in the work loop, pure: workspace names, their branches, and which clone takes a brief.

A workspace name becomes a directory (``workspaces/<name>/``) and a branch
(``netsky/<name>``), so it is normalised to what both accept everywhere: ASCII letters,
digits, ``.``, ``_`` and ``-``; anything else becomes ``-``; runs of ``-`` fold into one;
no leading ``-`` or ``.`` (an option, a hidden file, ``..``); no trailing ``.`` or ``-``;
at most ``MAX_NAME`` characters; never ``.lock`` at the end (git refuses such refs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from netsky_shared.ids import clone_id

#: Longest workspace name (a directory name and the tail of a branch name).
MAX_NAME = 64
#: Branch prefix of every workspace (``netsky/<name>``).
BRANCH_PREFIX = "netsky/"

_NOT_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DASHES = re.compile(r"-{2,}")
_DOTS = re.compile(r"\.{2,}")


def workspace_name(raw: str) -> str:
    """The safe directory and branch name for ``raw`` (module docstring).

    ``"Fix the transport!"`` -> ``"Fix-the-transport"``; ``"../etc"`` -> ``"etc"``.
    Raises ValueError when nothing usable is left (``""``, ``".."``, ``"///"``).
    """
    name = _NOT_SAFE.sub("-", raw.strip())
    name = _DOTS.sub(".", name)
    name = _DASHES.sub("-", name)
    name = name.lstrip("-.")[:MAX_NAME].rstrip("-.")
    while name.endswith(".lock"):
        name = name[: -len(".lock")].rstrip("-.")
    if not name:
        raise ValueError(f"workspace name {raw!r} has nothing usable (letters, digits, . _ -)")
    return name


def branch_of(workspace: str) -> str:
    """``netsky/<workspace>``: the branch a workspace's clone commits on."""
    return BRANCH_PREFIX + workspace


def pick_clone(
    requested: int | None, busy: Iterable[int], max_clones: int
) -> tuple[str | None, str | None]:
    """Which clone takes a brief: ``(agent, None)``, or ``(None, why)`` when none can.

    ``busy``: clone numbers holding an open dispatch (briefed, not yet done, killed or
    harvested). With ``requested`` that clone, if it is within ``max_clones`` and free;
    else the lowest free number in 1..``max_clones``. The refusal names who holds the
    slots, so the operator knows what to finish or kill.
    """
    held = sorted(set(busy))
    if requested is not None:
        if not 1 <= requested <= max_clones:
            return None, f"agent{requested} is outside max_clones ({max_clones})"
        if requested in held:
            return None, f"agent{requested} already holds a brief"
        return clone_id(requested), None
    for n in range(1, max_clones + 1):
        if n not in held:
            return clone_id(n), None
    holders = ", ".join(clone_id(n) for n in held) or "none"
    return None, f"all {max_clones} clone slots are busy (held by {holders})"
