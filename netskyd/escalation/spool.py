"""``escalate`` and ``resolve``: how anything in the daemon pages the owner, and the spool.

The floor itself (incidents, quiet period, rounds, legs, audit rows, leg health) is
``netskyd.escalation.pager``, shared with ``netskyctl escalate --direct``; this module adds what
the daemon has: the journal and meta.db, the spool task, and the page about a leg
that keeps failing.

``Spool.escalate(subject, body, key, severity)`` (the ``Pager`` port) opens, re-pages or joins the
incident for ``key`` (pager, step 1) and returns at once with the Incident; the round is sent by the
spool in the background (``wait=True`` sends it before returning, for ``netskyctl escalate``, which
prints each leg's result). So a slow SMTP server never holds the tick that noticed the problem.

``Spool.resolve(key, resolution)`` closes the open incident for ``key`` (its cause went
away: agent back, hang cleared, limit reset, tmux answering) and sends a short
all-clear to the legs that delivered its page.

The spool (``Spool.run``, a daemon task; ``await tg.start(spool.run)`` returns the
running spool) every ``escalation_spool_s``: sends the retry
rounds that are due (a failed leg, backing off, until the incident is acked or
resolved), imports new rows of ``state/owner-pages.jsonl`` into meta.db (also the
ones a ``--direct`` run wrote), records changed incidents in meta.db, and refreshes
the desktop sentinel and the tmux status-line marker when the set of open incidents
changed (e.g. ``netskyctl ack`` while the daemon runs).

Events (journal first, then meta.db, through the Recorder):

- ``escalation.opened`` (warning) / ``escalation.repaged`` (warning): ``incident, key,
  subject, severity, count, round, file``; ``escalation.repeat`` (info): a join, with
  ``count``.
- ``escalation.sent`` (info; warning when no leg delivered): ``incident, key, kind,
  round, delivered: [leg], failed: {leg: reason}, unavailable: {leg: reason}``.
- ``escalation.resolved`` (info): ``incident, key, resolution``.
- ``escalation.leg_failing`` (error) / ``escalation.leg_recovered`` (info): ``leg``.
- ``escalation.corrupt`` (error): ``file, aside, error`` for an incident file that was
  not an incident; it has been moved aside to ``<name>.corrupt-<ts>``, never dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared import incidents
from netsky_shared.errors import NetskyError
from netsky_shared.paths import Paths
from netskyd.config import Settings
from netskyd.config.legs import LegResult
from netskyd.escalation import legs as legsend
from netskyd.escalation import pager
from netskyd.periodic import every
from netskyd.ports import Clock, SettingsView
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder

#: The meta.db cursor of the ``owner-pages.jsonl`` import.
AUDIT_CURSOR = "owner-pages.jsonl"
#: Rounds sent at once by the spool.
ROUNDS_AT_ONCE = 8


@dataclass(frozen=True)
class Incident:
    """One incident as on disk (netsky_shared.incidents), plus what this call did.

    ``action`` is ``opened``, ``repaged`` or ``joined``; ``paged`` is True unless joined.
    ``results`` holds each leg's LegResult when the round was sent before returning
    (``wait=True``), else is empty. ``path`` is the incident's file.
    """

    id: str
    key: str
    subject: str
    body: str
    severity: str
    opened_ts: str
    last_ts: str
    count: int
    acked: bool
    resolved_ts: str | None
    legs: dict[str, Any]
    action: str
    results: tuple[LegResult, ...]
    path: Path

    @property
    def paged(self) -> bool:
        return self.action != "joined"

    @property
    def delivered(self) -> list[str]:
        """Legs that delivered the current round (from the results, else the file)."""
        if self.results:
            return [r.leg for r in self.results if r.status == "delivered"]
        return [n for n, s in self.legs.items() if s.get("status") == "delivered"]

    @classmethod
    def of(
        cls, value: dict[str, Any], action: str, path: Path, results: tuple[LegResult, ...] = ()
    ) -> Incident:
        return cls(
            id=value["id"],
            key=value["key"],
            subject=value["subject"],
            body=value["body"],
            severity=value["severity"],
            opened_ts=value["opened_ts"],
            last_ts=value["last_ts"],
            count=value["count"],
            acked=value["acked"],
            resolved_ts=value["resolved_ts"],
            legs=dict(value["legs"]),
            action=action,
            results=results,
            path=path,
        )


def result_json(home: Path, incident: Incident, via: str) -> dict[str, Any]:
    """The EscalateResult of ``netskyctl escalate`` (docs/protocol.md)."""
    raw = json.loads(incident.path.read_text(encoding="utf-8"))
    return {
        "action": incident.action,
        "incident": raw,
        "results": [asdict(r) for r in incident.results],
        "delivered": incident.delivered if incident.action != "joined" else [],
        "ack_command": pager.ack_command(home, incident.id),
        "via": via,
    }


class Spool:
    """The daemon's escalation spool and its ``Pager`` port (netskyd.ports).

    Built with only what it uses: the settings in force, the daemon's environment
    (credentials by reference resolve there), the Recorder, the Store and a wall clock.
    Before ``run`` starts it (tests, a daemon starting up) rounds are sent inline.
    """

    def __init__(
        self,
        *,
        settings: SettingsView,
        environ: Mapping[str, str],
        recorder: Recorder,
        store: Store,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.recorder = recorder
        self.store = store
        self.clock = clock
        self.tg: TaskGroup | None = None
        self.limiter = anyio.CapacityLimiter(ROUNDS_AT_ONCE)
        self.in_flight: set[str] = set()
        self.open_ids: frozenset[str] | None = None
        #: Keys of the open incidents, as of the last pass (plus those opened since).
        self.open_keys: set[str] = set()
        self.seen: dict[str, str] = {}  # incident id -> its JSON as last recorded
        self.archived_at = 0.0

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    def is_open(self, key: str) -> bool:
        """True when an incident for ``key`` was open at the last pass (or opened since)."""
        return key in self.open_keys

    def start_round(self, incident: dict[str, Any], kind: str) -> None:
        """Send a round of ``kind`` for ``incident`` in the running spool's task group
        (callers check ``tg``: without a running spool they await ``send_round``)."""
        assert self.tg is not None
        self.tg.start_soon(self._round, incident, kind)

    async def _round(self, incident: dict[str, Any], kind: str) -> None:
        self.in_flight.add(incident["id"])
        try:
            async with self.limiter:
                await self.send_round(incident, kind)  # type: ignore[arg-type]
        except (OSError, NetskyError) as e:
            await self.recorder.event(
                "escalation.round_failed", level="error", incident=incident["id"], error=str(e)
            )
        finally:
            self.in_flight.discard(incident["id"])

    async def pass_once(self) -> None:
        """One spool pass (module docstring)."""
        s = self.settings()
        now = self.clock()
        found, _ = await anyio.to_thread.run_sync(incidents.scan, s.paths)
        lease = s.escalation_leg_timeout_s * 2 + 10
        for incident_id in pager.due(found, now, lease):
            if incident_id in self.in_flight or self.tg is None:
                continue
            claimed = await anyio.to_thread.run_sync(
                pager.claim_round, s.paths, incident_id, now, lease
            )
            if claimed is not None:
                self.start_round(*claimed)
        open_ids = frozenset(i["id"] for i in found if incidents.is_open(i))
        self.open_keys = {i["key"] for i in found if incidents.is_open(i)}
        if self.open_ids is not None and open_ids != self.open_ids:
            await self.refresh_markers(found)
        self.open_ids = open_ids
        changed = [i for i in found if self.seen.get(i["id"]) != json.dumps(i, sort_keys=True)]
        if changed:
            await self.store.upsert_incidents(changed)
            for i in changed:
                self.seen[i["id"]] = json.dumps(i, sort_keys=True)
        await self.import_audit()
        if now - self.archived_at >= 3600:
            self.archived_at = now
            moved = await anyio.to_thread.run_sync(
                pager.archive_closed, s.paths, now, s.escalation_archive_after_s
            )
            if moved:
                await self.recorder.event("escalation.archived", incidents=moved)

    async def send_round(
        self, incident: dict[str, Any], kind: Literal["page", "retry", "all-clear"]
    ) -> list[LegResult]:
        """Send one round of ``kind`` for ``incident`` on its legs, record it (pager step 4,
        the journal, meta.db) and act on leg health. Returns each leg's result."""
        results, outcome = await pager.run_round(
            self.settings(), self.environ, incident, kind, legsend.send, "daemon", self.clock
        )
        delivered = [r.leg for r in results if r.status == "delivered"]
        await self.recorder.event(
            "escalation.sent",
            level="info" if delivered or kind == "all-clear" else "warning",
            incident=incident["id"],
            key=incident["key"],
            kind=kind,
            round=incident["rounds"],
            delivered=delivered,
            failed={r.leg: r.reason for r in results if r.status == "failed"},
            unavailable={r.leg: r.reason for r in results if r.status == "unavailable"}
            or ({"*": outcome.rows[0]["reason"]} if not results else {}),
        )
        await self.import_audit()
        if outcome.incident is not None:
            await self.store.upsert_incidents([outcome.incident])
        for f in outcome.failing:
            await self.recorder.event("escalation.leg_failing", level="error", **f)
            subject, body = pager.leg_failing_text(f)
            await self.escalate(
                subject, body, f"leg:{f['leg']}", "warning", exclude_legs=[f["leg"]]
            )
        for leg in outcome.recovered:
            await self.recorder.event("escalation.leg_recovered", leg=leg)
            await self.resolve(f"leg:{leg}", f"The {leg} leg delivered a page again.")
        return results

    async def escalate(
        self,
        subject: str,
        body: str,
        key: str,
        severity: str = "warning",
        *,
        exclude_legs: list[str] | None = None,
        wait: bool = False,
    ) -> Incident:
        """Page the owner about ``subject`` (one line) with ``body``, deduplicated by ``key``.

        ``key`` names the condition (e.g. ``agent0:crash-loop``, ``hang:agent3``);
        ``severity`` is ``info``, ``warning`` or ``critical`` (legs have a minimum).
        Within the quiet period of the open incident for ``key`` this joins it; otherwise
        a round goes to every leg: in the background, or before returning with ``wait``.
        Time comes from ``clock``. Raises ValueError for an empty key or subject or an
        unknown severity, IncidentsBusy when the incidents lock stays held (10 s), OSError
        when a file cannot be written.
        """
        s = self.settings()
        decision = await anyio.to_thread.run_sync(
            lambda: pager.open_or_join(
                s.paths,
                key,
                subject,
                body,
                severity,
                self.clock(),
                s.escalation_quiet_s,
                exclude_legs or (),
            )
        )
        incident = decision.incident
        path = s.paths.escalations / f"{incident['id']}.json"
        for c in decision.corrupt:
            await self.recorder.event(
                "escalation.corrupt",
                level="error",
                file=c["file"],
                aside=c["aside"],
                error=c["error"],
            )
        if decision.action == "joined":
            await self.recorder.event(
                "escalation.repeat",
                incident=incident["id"],
                key=key,
                subject=incident["subject"],
                count=incident["count"],
                last_ts=incident["last_ts"],
                file=str(path),
            )
            return Incident.of(incident, "joined", path)
        await self.recorder.event(
            f"escalation.{decision.action}",
            level="warning",
            incident=incident["id"],
            key=key,
            subject=incident["subject"],
            body=incident["body"],
            severity=incident["severity"],
            count=incident["count"],
            round=incident["rounds"],
            file=str(path),
        )
        self.open_keys.add(key)
        if wait or self.tg is None:
            results = await self.send_round(incident, "page")
            return Incident.of(incident, decision.action, path, tuple(results))
        self.start_round(incident, "page")
        return Incident.of(incident, decision.action, path)

    async def resolve(self, key: str, resolution: str) -> Incident | None:
        """Close the open incident for ``key`` as resolved (``resolution``: one or two
        sentences on what happened) and send the all-clear; None when none was open."""
        s = self.settings()
        incident = await anyio.to_thread.run_sync(
            pager.resolve, s.paths, key, resolution, self.clock()
        )
        self.open_keys.discard(key)
        if incident is None:
            return None
        path = s.paths.escalations / f"{incident['id']}.json"
        await self.recorder.event(
            "escalation.resolved", incident=incident["id"], key=key, resolution=resolution
        )
        if self.tg is None:
            await self.send_round(incident, "all-clear")
        else:
            self.start_round(incident, "all-clear")
        return Incident.of(incident, "resolved", path)

    async def refresh_markers(self, found: list[dict[str, Any]]) -> None:
        """Make the desktop sentinel and the tmux status-line marker show the incidents
        open now (after an ack or a resolution made elsewhere). Errors are journalled."""
        from netskyd.config.legs import configured

        s = self.settings()
        open_now = pager.open_summary(found, s.home)
        legctx = pager.leg_context(s, self.environ)
        for name, leg in configured(dict(s.legs)).items():
            try:
                if leg.type == "desktop":
                    path = leg.path.expanduser() if leg.path else s.home / "OWNER-PAGE.txt"
                    if open_now:
                        page = pager.make_page(
                            "page", _latest(found), s.home, self.clock(), open_now
                        )
                        await anyio.to_thread.run_sync(legsend.write_sentinel, path, page)
                    else:
                        path.unlink(missing_ok=True)
                elif leg.type == "tmux" and leg.status_line:
                    await legsend.refresh_marker(legctx, list(open_now))
            except OSError as e:
                await self.recorder.event(
                    "escalation.refresh_failed", level="warning", leg=name, error=str(e)
                )

    async def import_audit(self) -> int:
        """Import the rows of ``state/owner-pages.jsonl`` past the meta.db cursor (each at
        its byte offset, so twice is harmless); a partial last line waits. Returns how
        many rows were read."""
        return await import_audit(self.settings(), self.store)

    async def run(self, *, task_status: TaskStatus[Spool] = anyio.TASK_STATUS_IGNORED) -> None:
        """Long-running task: the spool (module docstring) until cancelled. Started with
        ``await tg.start(spool.run)``, which returns the running spool."""
        async with anyio.create_task_group() as tg:
            self.tg = tg
            task_status.started(self)

            async def one_pass() -> None:
                try:
                    await self.pass_once()
                except (OSError, NetskyError) as e:
                    await self.recorder.event(
                        "escalation.spool_failed", level="error", error=str(e)
                    )

            try:
                await every(lambda: self.settings().escalation_spool_s, one_pass, at_once=True)
            finally:
                self.tg = None


def _latest(found: list[dict[str, Any]]) -> dict[str, Any]:
    open_ = [i for i in found if incidents.is_open(i)]
    return max(open_, key=lambda i: (i["paged_ts"] or i["opened_ts"], i["id"]))


async def import_audit(settings: Settings, store: Store) -> int:
    """Import the rows of ``state/owner-pages.jsonl`` past the meta.db cursor into
    ``store`` (each at its byte offset, so twice is harmless); a partial last line
    waits. Returns how many rows were read."""
    path = settings.paths.owner_pages
    start = await store.cursor(AUDIT_CURSOR)

    def read() -> tuple[list[dict[str, Any]], int]:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return [], start
        rows = []
        offset = start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                row = {
                    "kind": "unreadable",
                    "status": "unreadable",
                    "reason": line[:200].decode(errors="replace"),
                    "ts": "",
                }
            if isinstance(row, dict):
                rows.append({**row, "file_offset": offset})
            offset += len(line)
        return rows, offset

    rows, end = await anyio.to_thread.run_sync(read)
    if end != start:
        await store.add_owner_pages(rows, (AUDIT_CURSOR, end))
    return len(rows)
