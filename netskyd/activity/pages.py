"""A marker's page: escalate once, confirm that a leg delivered it, resolve at the all-clear.

A mixin of ``netskyd.activity.monitor.Monitor``, shared by the hang marker
(``netskyd.activity.hangs``) and usage-limit parking (``netskyd.activity.parking``);
``_resolve`` also closes the unknown-dialog incident (``netskyd.activity.answers``). A
marker (a JSON dict in ``state/<kind>/<agent>.json``) is paged in two steps, each
written to its file at once:

1. ``incident``: the id the ``Pager`` returned for ``escalate(key="<kind>:<agent>")``
   (the spool retries the legs; an escalate that failed is tried again at the next
   observation);
2. ``paged: true``, ``paged_ts`` (RFC 3339 UTC) and ``paged_on`` (the legs that
   delivered), once the incident file ``state/escalations/<incident>.json`` shows a leg
   delivered or the owner acknowledged it. An incident that has gone, or closed
   undelivered, clears ``incident`` so the next observation pages afresh.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from netsky_shared.errors import NetskyError
from netsky_shared.maildir import now_rfc3339
from netsky_shared.markers import write_marker

if TYPE_CHECKING:
    from netskyd.ports import Pager, SettingsView
    from netskyd.store.recorder import Recorder


class MarkerPages:
    """Paging for a marker; the host class (``Monitor``) provides ``settings``, the
    ``pager`` and the ``recorder``."""

    settings: SettingsView
    pager: Pager
    recorder: Recorder

    async def _follow_page(
        self,
        kind: str,
        agent: str,
        path: Any,
        marker: dict[str, Any],
        page: Callable[[], Awaitable[None]],
    ) -> None:
        """For a marker not yet paged: page (``page()``) when it has no incident yet,
        else see whether a leg has delivered that incident's page (``_confirm``)."""
        if marker.get("paged"):
            return
        if marker.get("incident"):
            await self._confirm(kind, agent, path, marker)
        else:
            await page()

    async def _page(
        self, kind: str, agent: str, path: Any, marker: dict[str, Any], subject: str, body: str
    ) -> None:
        """Escalate for ``marker`` (key ``<kind>:<agent>``) and record the incident at once;
        ``paged: true`` follows only once a leg delivered it (``_confirm``). A failed
        escalate is journalled and tried again at the next observation."""
        try:
            incident = await self.pager.escalate(subject, body, key=f"{kind}:{agent}")
        except (OSError, NetskyError, ValueError) as e:
            await self.recorder.event(
                f"{kind}.page_failed", level="error", agent=agent, error=str(e)
            )
            return
        marker.update(incident=incident.id)
        write_marker(path, marker)
        await self._confirm(kind, agent, path, marker)

    async def _confirm(self, kind: str, agent: str, path: Any, marker: dict[str, Any]) -> None:
        """Mark ``marker`` paged once its incident shows a leg that delivered (or the owner
        acknowledged it); journal ``<kind>.paged`` with the legs. An incident file that
        has gone, or closed undelivered, is paged afresh at the next observation."""
        incident_path = self.settings().paths.escalations / f"{marker['incident']}.json"
        try:
            incident = json.loads(incident_path.read_text(encoding="utf-8"))
            legs = incident.get("legs") or {}
            delivered = [n for n, st in dict(legs).items() if st.get("status") == "delivered"]
        except (OSError, ValueError, AttributeError):
            incident, delivered = None, []
        if incident is not None and not delivered and not incident.get("acked"):
            if incident.get("resolved_ts") is None:
                return  # the spool is still trying the legs
            incident = None  # closed undelivered while the condition lasts
        if incident is None:
            marker.update(incident=None)
            write_marker(path, marker)
            return
        marker.update(paged=True, paged_ts=now_rfc3339(), paged_on=delivered)
        write_marker(path, marker)
        await self.recorder.event(
            f"{kind}.paged",
            level="warning",
            agent=agent,
            incident=marker["incident"],
            legs=delivered,
            acked=bool(incident.get("acked")),
        )

    async def _resolve(self, key: str, resolution: str) -> None:
        """Close the incident for ``key`` with an all-clear (journalled when it fails)."""
        try:
            await self.pager.resolve(key, resolution)
        except (OSError, NetskyError) as e:
            await self.recorder.event(
                "escalation.resolve_failed", level="error", key=key, error=str(e)
            )
