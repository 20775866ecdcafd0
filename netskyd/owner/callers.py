"""Who is calling: the agent whose pane a control-socket client runs in (docs/owner.md).

The owner's verbs are for agent0 and agentinfinity only. A client's own word
(``AGENT_N``) is not enough: a clone could set it. So the daemon takes the client's pid
from the socket (``SO_PEERCRED`` / ``LOCAL_PEERPID``, netskyd.unixsock) and walks its
parents up to the pane process of one of the agents' tmux sessions: that pane's agent
is the caller. A process in no agent's pane is the owner at a terminal (or a script of
theirs), unless it says it is a clone.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from netsky_shared.errors import NetskyError
from netsky_shared.ids import ROOT, WATCHDOG, parse_agent

#: Agents that may use the owner's line.
OWNER_LINE = (ROOT, WATCHDOG)
#: Parents walked at most (a pane's shell, a runtime, its tool process, netskyctl).
MAX_DEPTH = 64


class NotAllowed(NetskyError):
    """Raised when an agent other than agent0 or agentinfinity asks for an owner verb."""


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None when it is gone or unknown): /proc where there is
    one, else ``ps`` (macOS), with a deadline."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[1])  # after "(comm) state"
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    try:
        out = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=2, check=False)  # fmt: skip
        return int(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def agent_of(pid: int, panes: Mapping[str, int]) -> str | None:
    """The agent whose pane process is ``pid`` or one of its ancestors; None for none."""
    by_pid = {p: a for a, p in panes.items()}
    seen = 0
    current: int | None = pid
    while current is not None and current > 1 and seen < MAX_DEPTH:
        if current in by_pid:
            return by_pid[current]
        current = parent_of(current)
        seen += 1
    return None


def owner_line_caller(pid: int | None, claimed: str | None, panes: Mapping[str, int]) -> str:
    """Who signs an owner verb: the caller's agent (or ``owner`` for the owner at a
    terminal). ``claimed``: the client's ``AGENT_N`` as it sent it (None: unset). Raises
    NotAllowed for a clone, or for a claim the process tree contradicts."""
    try:
        said = parse_agent(claimed) if claimed else None
    except ValueError as e:
        raise NotAllowed(f"AGENT_N {claimed!r} is not an agent") from e
    found = agent_of(pid, panes) if pid else None
    if found is not None and said is not None and found != said:
        raise NotAllowed(f"AGENT_N says {said}, but the call comes from {found}'s pane")
    who = found or said
    if who is not None and who not in OWNER_LINE:
        raise NotAllowed(
            f"{who} may not reach the owner: only agent0 (and agentinfinity) have a line to "
            "the owner; send it to agent0 instead: netskyctl channel send agent0 TEXT "
            f"--from {who}"
        )
    return who or "owner"
