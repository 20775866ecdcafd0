"""Named crash points for the tests that kill the daemon at one exact step.

``crash_point(settings, name)`` sends the daemon SIGKILL (what ``kill -9`` sends: no
cleanup, no finally blocks) when the ``debug_crash_at`` setting names ``name``; with the
setting unset (always, in real use) it does nothing. Points: ``schedule.persisted`` (a
fire's row is committed and its envelope not yet sent, netskyd.schedule.scheduler).
"""

from __future__ import annotations

import os
import signal

from netskyd.config import Settings


def crash_point(settings: Settings, name: str) -> None:
    """SIGKILL this process when ``settings.debug_crash_at == name``."""
    if settings.debug_crash_at == name:
        os.kill(os.getpid(), signal.SIGKILL)
