"""The demo agent: ``python -m netskyd.agents.demo_agent`` with the daemon's own interpreter.

Its idle prompt is ``<agent>> `` (``agent0> ``, ``agentinfinity> ``), drawn whenever it
waits for input and gone while it hangs; it shows no busy marks and no dialogs.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from netskyd.runtimes.screens import Screens

if TYPE_CHECKING:  # a type only: netskyd.config imports the runtimes
    from netskyd.config import Settings

SCREENS = Screens(idle=re.compile(r"^agent(?:\d+|infinity)> ?$"))


def command(settings: Settings, agent: str, prompt_file: Path, workdir: Path) -> str:
    """The demo agent's command line (the interpreter's path shell-quoted)."""
    q = shlex.quote
    return f"{q(sys.executable)} -m netskyd.agents.demo_agent"
