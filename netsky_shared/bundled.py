"""Files netsky ships beside its code: prompts, 0.md, the service units and the shim.

A wheel (and a last-known-good copy, netskyd.keepalive.lkg.snapshot) carries them under
``netsky_shared/_data/<rel>``; a source checkout has them at the repository's top level
(``prompts/``, ``0.md``, ``systemd/``, ``launchd/``). Stdlib only.
"""

from __future__ import annotations

import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent
REPO = PKG.parent

#: What ``bundled()`` can find, as top-level names (pyproject's force-include).
BUNDLED = ("prompts", "0.md", "systemd", "launchd")


def bundled(rel: str) -> Path:
    """The path of a shipped file or directory ``rel`` (``"launchd/netsky-shim"``):
    ``netsky_shared/_data/<rel>`` when it exists, else ``<repo>/<rel>``. The result may not
    exist (a broken install); callers check."""
    packaged = PKG / "_data" / rel
    return packaged if packaged.exists() else REPO / rel


def this_python(module: str) -> list[str]:
    """``[python, flags..., "-m", module]``: an argv that imports this very install.

    Isolated (``-I``) when this process is, else ``-P`` (no working directory on
    sys.path, where a checkout would shadow it) unless the working directory is the
    one this install's packages live in.
    """
    if sys.flags.isolated:
        flags = ["-I"]
    else:
        flags = [] if REPO == Path.cwd().resolve() else ["-P"]
    return [sys.executable, *flags, "-m", module]
