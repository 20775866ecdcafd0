"""What the activity monitor remembers of one agent's pane between observations.

A leaf of the monitor and its mixins (``hangs``, ``parking``, ``answers``): they all
read and update the same ``Watch``, so it lives apart from ``netskyd.activity.monitor``
(which re-exports it) and no import circle forms around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netskyd.activity.classify import Verdict
from netskyd.activity.dialogs import Dialog


@dataclass
class Watch:
    """What the monitor remembers of one agent's pane (reset when its session changes)."""

    session_id: str | None = None
    fp: str | None = None
    fp_changed_at: float | None = None
    raw: str | None = None
    raw_changed_at: float | None = None
    last_idle_at: float | None = None
    verdict: Verdict | None = None
    verdict_since: float | None = None
    observed_at: float | None = None
    dialog: Dialog | None = None
    #: The last screen captured (visible pane text).
    screen: str | None = None
    #: The hang and limit markers, as on disk (read once per Watch, then kept in step).
    hang: dict[str, Any] | None = None
    limit: dict[str, Any] | None = None
    markers_loaded: bool = False
    #: Instance ids of dialogs journalled as left for the owner (once each).
    left: set[str] | None = None
    #: The unknown dialog's instance id the owner was paged for (key ``dialog:<agent>``).
    unknown_paged: str | None = None
