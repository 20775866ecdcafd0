"""Files netsky ships beside its code: prompts, 0.md, the service units and the shim.

A wheel (and a last-known-good copy, netskyd.lkg) carries them under
``netskyd/_data/<rel>``; a source checkout has them at the repository's top level
(``prompts/``, ``0.md``, ``systemd/``, ``launchd/``). Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

PKG = Path(__file__).resolve().parent
REPO = PKG.parent

#: What ``bundled()`` can find, as top-level names (pyproject's force-include).
BUNDLED = ("prompts", "0.md", "systemd", "launchd")


def bundled(rel: str) -> Path:
    """The path of a shipped file or directory ``rel`` (``"launchd/netsky-shim"``):
    ``netskyd/_data/<rel>`` when it exists, else ``<repo>/<rel>``. The result may not
    exist (a broken install); callers check."""
    packaged = PKG / "_data" / rel
    return packaged if packaged.exists() else REPO / rel
