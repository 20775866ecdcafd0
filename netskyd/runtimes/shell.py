"""A plain shell: ``shell_command`` (default ``sh -i``), and its prompt as the idle mark.

The prompt file is not passed on the command line: the pane's environment carries it
in ``NETSKY_PROMPT_FILE`` (netskyd.agents.spawn). The idle pattern is the end of a
usual shell prompt (``$``, ``#``, ``%``, ``>``); a shell has no busy marks and no
dialogs netsky knows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from netskyd.runtimes.screens import Screens

if TYPE_CHECKING:  # a type only: netskyd.config imports the runtimes
    from netskyd.config import Settings

SCREENS = Screens(idle=re.compile(r"[$#%>]\s*$"))


def command(settings: Settings, agent: str, prompt_file: Path, workdir: Path) -> str:
    """``settings.shell_command`` as it stands (a shell command line, not quoted again)."""
    return settings.shell_command
