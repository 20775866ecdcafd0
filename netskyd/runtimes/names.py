"""The names of the runtimes: the leaf of ``netskyd.runtimes`` (imports nothing of netsky's).

``netskyd.config`` re-exports ``Runtime`` (settings name a runtime per agent), and every
runtime's module (``netskyd/runtimes/<name>.py``) imports it from here, so neither the
runtimes nor their screen catalogue import ``netskyd.config`` at run time.
"""

from __future__ import annotations

from enum import StrEnum


class Runtime(StrEnum):
    """What runs in an agent's pane (the value is the name in config.toml)."""

    CLAUDE = "claude"
    CODEX = "codex"
    SHELL = "shell"
    DEMO = "demo"
    CUSTOM = "custom"
