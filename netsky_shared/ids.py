"""Agent ids and roles, and the RFC 3339 UTC form of timestamps on disk (stdlib only;
shared by the daemon, the client and the demo agent).

Agent ids are ``agent0`` (root orchestrator), ``agent1``..``agentN`` (clones) and
``agentinfinity`` (watchdog); tmux session names equal agent ids. Pseudo-senders
(``agentcron``, ``agentloop``, ``netsky``, ``owner``) may appear in an envelope's
``from`` but own no inbox. Source: ARCHITECTURE.md, "The constellation".
"""

from __future__ import annotations

import re
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime

ROOT = "agent0"
WATCHDOG = "agentinfinity"
PSEUDO_SENDERS = frozenset({"agentcron", "agentloop", "netsky", "owner"})
MAX_CLONE = 999

_AGENT_RE = re.compile(r"^agent(0|[1-9][0-9]{0,2}|infinity)$")
#: Sessions a restart may tear down (agentinfinity survives every restart).
TEARDOWN_RE = re.compile(r"^agent[0-9]+$")


def is_agent_id(value: str) -> bool:
    """Return True when ``value`` is ``agent0``, ``agent1``..``agent999`` or ``agentinfinity``."""
    return bool(_AGENT_RE.match(value))


def is_sender_id(value: str) -> bool:
    """Return True for an agent id or a pseudo-sender (``owner``, ``netsky``, ...)."""
    return is_agent_id(value) or value in PSEUDO_SENDERS


def clone_id(n: int) -> str:
    """Return the agent id of clone ``n`` (1-based).

    Raises ValueError when ``n`` is outside 1..MAX_CLONE.
    """
    if not 1 <= n <= MAX_CLONE:
        raise ValueError(f"clone number must be 1..{MAX_CLONE}, got {n}")
    return f"agent{n}"


def parse_agent(value: str) -> str:
    """Normalise what a person types (``3``, ``agent3``, ``infinity``) to an agent id.

    Raises ValueError naming the bad value.
    """
    v = value.strip()
    if v.isdigit() or v == "infinity":
        v = f"agent{int(v) if v.isdigit() else v}"
    if not is_agent_id(v):
        raise ValueError(
            f"not an agent id: {value!r} (expected agent0, agent1..agent{MAX_CLONE} "
            "or agentinfinity)"
        )
    return v


def agent_n(agent: str) -> str:
    """Return the ``AGENT_N`` value of an agent: ``"0"``, ``"3"`` or ``"infinity"``."""
    return agent.removeprefix("agent")


def role_of(agent: str) -> str:
    """Return the role of an agent: ``orchestrator``, ``clone`` or ``watchdog``."""
    if agent == ROOT:
        return "orchestrator"
    if agent == WATCHDOG:
        return "watchdog"
    return "clone"


def sort_key(agent: str) -> tuple[int, int]:
    """Order agents as people read them: agent0, agent1, ..., agentN, agentinfinity."""
    n = agent_n(agent)
    return (1, 0) if n == "infinity" else (0, int(n) if n.isdigit() else 0)


def format_uptime(seconds: float) -> str:
    """Render a duration for people: ``4h12m``, ``3m05s``, ``12s``."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def rfc3339(when: float | datetime, *, digits: int = 6) -> str:
    """Format a time as RFC 3339 UTC: ``2026-11-21T10:00:00.123456Z`` (``digits=6``, the
    default) or ``2026-11-21T10:00:00Z`` (``digits=0``).

    ``when`` is either seconds since the epoch (a float: with ``digits=6`` the microseconds
    are ``int(when * 1e6)``, truncated; with ``digits=0`` the second is ``time.gmtime``'s,
    truncated) or an aware UTC ``datetime``, printed as its fields say (so a caller that
    builds it with ``datetime.fromtimestamp(s, UTC)`` keeps datetime's rounding to the
    microsecond). Done with ``time`` alone: datetime costs more import time than
    ``netskyctl status`` may spend. Raises ValueError when ``digits`` is not 0 or 6.
    """
    if digits not in (0, 6):
        raise ValueError(f"digits must be 0 or 6, not {digits!r}")
    if not isinstance(when, int | float):
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if digits else "%Y-%m-%dT%H:%M:%SZ")
    if not digits:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    sec, us = divmod(int(when * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{us:06d}Z"
