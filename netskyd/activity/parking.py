"""Usage-limit parking: park on a limit notice, page once, nudge and release at the reset.

A mixin of ``netskyd.activity.monitor.Monitor``. When the screen shows a usage-limit
notice (``ScreenFacts.limit_notice``, ``netskyd.activity.classify``) the agent is
*parked*: ``state/limit/<agent>.json`` says ``state: parked``, ``limit.parked`` is
journalled, and the owner is paged once (key ``limit:<agent>``, through
``netskyd.activity.pages``). A parked agent is never hung and never restarted, and
deliveries to it are held (``Monitor.held``).

The reset time comes from the notice's line and the two after it (parsed by
``netskyd.activity.limits``); the nudge is due at that time plus ``limit_grace_s``, or
``limit_default_wait_s`` after parking when the screen gives none. When it is due the
marker says ``released`` (written first, so the nudge is never held by the parking),
a nudge envelope from ``netsky`` goes to the agent's inbox, ``limit.released`` is
journalled, the bus is woken for the agent and the incident resolved. The notice it
was parked for never parks it again; a new session drops the marker.

Marker shape::

    state/limit/<agent>.json {"agent", "session_id", "state": "parked"|"released",
                              "since", "notice", "reset_at", "reset_source":
                              "screen"|"default", "nudge_at", "paged", "incident",
                              "paged_ts", "released_ts", "nudge_envelope"}

Times in markers are RFC 3339 UTC; ``*_at`` fields are epoch seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netsky_shared.errors import NetskyError
from netsky_shared.maildir import new_envelope, send
from netsky_shared.markers import remove_marker, write_marker
from netskyd.activity.classify import ScreenFacts, iso
from netskyd.activity.limits import parse_reset
from netskyd.activity.pages import MarkerPages
from netskyd.runtimes.screen import screen_lines

if TYPE_CHECKING:
    from netskyd.activity.watch import Watch
    from netskyd.ports import Wake

LIMIT_DIR = "limit"


class Parking(MarkerPages):
    """Usage-limit parking of each agent; the host class (``Monitor``) provides the
    bus's ``wake``, besides ``settings``, the ``pager`` and the ``recorder`` (see
    ``MarkerPages``)."""

    wake: Wake

    def _limit_path(self, agent: str) -> Any:
        return self.settings().paths.marker(LIMIT_DIR) / f"{agent}.json"

    async def _limit_state(
        self,
        agent: str,
        session_id: str | None,
        w: Watch,
        facts: ScreenFacts | None,
        text: str | None,
        now: float,
        pages: bool,
    ) -> dict[str, Any] | None:
        """The parked limit marker in force for ``agent`` (parking or releasing as due;
        paging only when ``pages``)."""
        path = self._limit_path(agent)
        marker = w.limit
        if marker is not None and marker.get("session_id") != session_id:
            remove_marker(path)  # a new session: the old notice means nothing
            marker = w.limit = None
        parked = marker is not None and marker.get("state") == "parked"
        if parked and marker is not None and now >= float(marker.get("nudge_at") or 0):
            await self._release(agent, path, marker, now)
            return None
        if parked and marker is not None:
            if pages:
                await self._follow_page(
                    "limit", agent, path, marker, lambda: self._page_limit(agent, path, marker)
                )
            return marker
        notice = facts.limit_notice if facts else None
        if notice is None or text is None:
            return None
        if marker is not None and marker.get("notice") == notice:
            return None  # the notice it was already parked for (and released from)
        w.limit = await self._park(agent, session_id, path, notice, text, now, pages)
        return w.limit

    async def _park(
        self,
        agent: str,
        session_id: str | None,
        path: Any,
        notice: str,
        text: str,
        now: float,
        pages: bool,
    ) -> dict[str, Any]:
        lines = screen_lines(text)
        at = max(i for i, ln in enumerate(lines) if ln == notice)
        reset = parse_reset(" ".join(ln.strip() for ln in lines[at : at + 3]), now)
        s = self.settings()
        nudge = reset + s.limit_grace_s if reset else now + s.limit_default_wait_s
        marker: dict[str, Any] = {
            "agent": agent,
            "session_id": session_id,
            "state": "parked",
            "since": iso(now),
            "notice": notice,
            "reset_at": reset,
            "reset_source": "screen" if reset else "default",
            "nudge_at": nudge,
            "paged": False,
            "incident": None,
            "paged_ts": None,
            "released_ts": None,
            "nudge_envelope": None,
        }
        write_marker(path, marker)
        await self.recorder.event(
            "limit.parked",
            level="warning",
            agent=agent,
            notice=notice.strip(),
            reset_at=iso(reset),
            nudge_at=iso(nudge),
            file=str(path),
        )
        if pages:
            await self._page_limit(agent, path, marker)
        return marker

    async def _page_limit(self, agent: str, path: Any, marker: dict[str, Any]) -> None:
        reset = marker.get("reset_at")
        when = f"It resets at {iso(reset)}" if reset else "The screen gives no reset time"
        body = (
            f"{agent} is parked on a usage limit: {marker['notice'].strip()}\n{when}; netsky "
            f"will nudge it at {iso(marker['nudge_at'])}. It is not restarted meanwhile, and "
            f"envelopes for it wait in its inbox.\nEvidence: netskyctl why {agent}"
        )
        await self._page("limit", agent, path, marker, f"{agent} hit a usage limit", body)

    async def _release(self, agent: str, path: Any, marker: dict[str, Any], now: float) -> None:
        reset = marker.get("reset_at")
        text = (
            f"Your usage limit has reset ({iso(reset)}). Carry on with your work."
            if reset
            else "You were parked on a usage limit; it may have reset by now. Carry on "
            "with your work (if the limit is still in force, say so and stop)."
        )
        envelope = new_envelope("netsky", agent, text, kind="message", chat_id="netsky")
        marker.update(state="released", released_ts=iso(now), nudge_envelope=envelope["id"])
        write_marker(path, marker)  # released first: the nudge is never held by the parking
        s = self.settings()
        try:
            send(s.paths, envelope, inbox_max_pending=s.inbox_max_pending)
        except (OSError, NetskyError) as e:
            await self.recorder.event(
                "limit.nudge_failed", level="error", agent=agent, error=str(e)
            )
        await self.recorder.event(
            "limit.released",
            agent=agent,
            since=marker.get("since"),
            reset_at=iso(reset),
            envelope=envelope["id"],
        )
        self.wake.kick(agent)
        await self._resolve(
            f"limit:{agent}",
            f"{agent}'s usage limit should have reset; netsky nudged it to carry on.",
        )
