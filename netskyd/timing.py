"""Time arithmetic, pure: the drift-free deadline grid, the one exponential backoff, and
how long a tick may run. No clock is read here and nothing is imported from the project,
so the pure decision modules (the restart machine) and the tasks share one definition.
"""

from __future__ import annotations

import hashlib


def next_deadline(start: float, interval: float, now: float) -> float:
    """Next time on the grid ``start + k * interval`` strictly after ``now`` (seconds)."""
    k = int((now - start) // interval) + 1
    return start + k * interval


def exp_backoff_s(
    attempt: int, base_s: float, cap_s: float, *, jitter: float = 0.0, key: str = ""
) -> float:
    """Seconds to wait before retry ``attempt`` (1-based; 0 counts as 1) of anything that
    failed: ``base_s * 2^(attempt-1)``, times a jitter factor, capped at ``cap_s``.

    The one exponential backoff (restarts, escalation legs). ``jitter`` in [0, 1): the
    factor lies in [1 - jitter, 1 + jitter] and comes from a hash of (``key``,
    ``attempt``): deterministic, yet different keys do not retry in step. ``jitter=0``
    (the default) is the plain, unjittered exponential. Returns a float.
    """
    raw = base_s * 2.0 ** max(0, attempt - 1)
    if jitter:
        digest = hashlib.sha256(f"{key}:{attempt}".encode()).digest()
        u = int.from_bytes(digest[:4], "big") / 0xFFFFFFFF * 2 - 1  # in [-1, 1]
        raw *= 1 + jitter * u
    return float(min(cap_s, raw))


def tick_deadline_s(interval: float, tmux_timeout_s: float) -> float:
    """How long one tick may run: long enough for several tmux calls, at most 30 s."""
    return max(4 * tmux_timeout_s, min(interval, 30.0))
