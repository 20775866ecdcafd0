"""The hang marker: written when an agent is judged hung, paged once, archived when it moves.

A mixin of ``netskyd.activity.monitor.Monitor``. After each observation ``_hang`` keeps
``state/hang/<agent>.json`` in step with the verdict (``netskyd.activity.classify``):

- a ``hung`` verdict writes the marker and journals ``hang.suspected``; the owner is
  paged once (``escalate`` key ``hang:<agent>``, through ``netskyd.activity.pages``):
  the marker records the incident at once and ``paged: true`` only once a leg
  delivered the page;
- when the pane moves (its fingerprint differs from the marker's), the session is
  replaced or the agent dies, the marker is archived as
  ``state/archive/hang-<agent>-<YYYYmmddTHHMMSSZ>-<6 hex>.json`` with ``cleared_ts``
  and ``cleared_by``, ``hang.cleared`` is journalled and the incident resolved
  (all-clear).

Marker shape::

    state/hang/<agent>.json  {"agent", "session_id", "since", "detected_ts", "fingerprint",
                              "reason", "evidence", "paged", "incident", "paged_ts",
                              "paged_on": [legs that delivered]}

``since`` (when the pane last moved) and ``detected_ts`` are RFC 3339 UTC.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from netsky_shared.maildir import now_rfc3339
from netsky_shared.markers import remove_marker, write_marker
from netskyd.activity.classify import Activity, Verdict, iso
from netskyd.activity.pages import MarkerPages
from netskyd.runtimes.screen import screen_lines

if TYPE_CHECKING:
    from netskyd.activity.watch import Watch

HANG_DIR = "hang"


class HangMarkers(MarkerPages):
    """The hang marker of each agent; the host class (``Monitor``) provides
    ``settings``, the ``pager`` and the ``recorder`` (see ``MarkerPages``)."""

    def _hang_path(self, agent: str) -> Any:
        return self.settings().paths.marker(HANG_DIR) / f"{agent}.json"

    async def _hang(
        self,
        agent: str,
        session_id: str | None,
        alive: bool,
        w: Watch,
        verdict: Verdict,
        now: float,
        pages: bool,
    ) -> None:
        path = self._hang_path(agent)
        marker = w.hang
        if marker is not None:
            by = (
                "session replaced"
                if marker.get("session_id") != session_id
                else "agent gone"
                if not alive
                else "pane moved"
                if w.fp is not None and marker.get("fingerprint") != w.fp
                else None
            )
            if by is not None:
                await self._clear_hang(agent, path, marker, now, by, verdict)
                marker = w.hang = None
        if verdict.activity is not Activity.HUNG:
            return
        if marker is None:
            marker = {
                "agent": agent,
                "session_id": session_id,
                "since": iso(w.fp_changed_at),
                "detected_ts": now_rfc3339(),
                "fingerprint": w.fp,
                "reason": verdict.reason,
                "evidence": verdict.evidence,
                "paged": False,
                "incident": None,
                "paged_ts": None,
            }
            write_marker(path, marker)
            w.hang = marker
            await self.recorder.event(
                "hang.suspected",
                level="warning",
                agent=agent,
                reason=verdict.reason,
                since=marker["since"],
                file=str(path),
            )
        if pages:
            await self._follow_page(
                "hang",
                agent,
                path,
                marker,
                lambda: self._page_hang(agent, path, marker, verdict, w),
            )

    async def _page_hang(
        self, agent: str, path: Any, marker: dict[str, Any], verdict: Verdict, w: Watch
    ) -> None:
        screen = "\n".join(screen_lines(w.screen or "")[-15:])
        ev = verdict.evidence
        body = (
            f"{agent} looks hung: {verdict.reason}.\n"
            f"Pane unchanged since {marker['since']}; pending: {ev.get('pending')}.\n"
            f"Evidence: netskyctl why {agent}   Look: tmux attach -t {agent}\n\n"
            f"Last screen lines:\n{screen}"
        )
        await self._page("hang", agent, path, marker, f"{agent} looks hung", body)

    async def _clear_hang(
        self,
        agent: str,
        path: Any,
        marker: dict[str, Any],
        now: float,
        by: str,
        verdict: Verdict,
    ) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        name = f"hang-{agent}-{stamp}-{uuid.uuid4().hex[:6]}.json"
        archive = self.settings().paths.marker("archive") / name
        write_marker(archive, {**marker, "cleared_ts": iso(now), "cleared_by": by})
        remove_marker(path)
        await self.recorder.event(
            "hang.cleared",
            agent=agent,
            by=by,
            since=marker.get("since"),
            incident=marker.get("incident"),
            activity=verdict.activity.value,
            archive=str(archive),
        )
        await self._resolve(
            f"hang:{agent}",
            f"{agent} is no longer hung ({by}) after hanging since {marker.get('since')}.",
        )
