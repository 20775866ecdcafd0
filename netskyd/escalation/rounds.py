"""A page round: the legs it goes to, the page, sending on them all, and its record.

Steps 2 to 4 of an escalation (netskyd.escalation.pager has them all), run by ``run_round``:

2. ``targets``: the configured legs that take this severity, minus ``exclude_legs``.
3. ``send_all``: every target at once, each bounded by the leg timeout; in the daemon
   in-process, with ``--direct`` each leg in its own process (``python -m
   netskyd.escalation.legs``; netskyd.escalation.direct_send), so one wedged leg cannot
   hold the others.
4. ``finish_round``: each leg's outcome goes into the incident (a failed leg gets
   ``next_ts`` = now + ``retry_base_s`` * 2^(tries-1), capped at ``retry_cap_s``;
   ``unavailable`` is not retried), one row per leg into ``state/owner-pages.jsonl``
   (appended, fsynced, never rewritten), and the leg's health into ``state/legs.json``
   (netskyd.escalation.leg_health).
   A leg that has now failed ``failing_after`` times in a row, or delivered again after
   that, is reported back so the caller can page about it (key ``leg:<name>``, on the
   other legs) or close that page.

``owner-pages.jsonl`` rows (one per leg per attempt)::

    {"ts": RFC 3339, "incident": id, "key": str, "severity": str,
     "kind": "page" | "retry" | "all-clear", "round": int, "try": int,
     "leg": name | null, "status": "delivered" | "failed" | "unavailable",
     "reason": str | null, "duration_ms": float, "via": "daemon" | "direct"}

A round with no leg to send to writes one row with ``leg: null``, ``status:
"unavailable"`` and the reason.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from netsky_shared import incidents
from netsky_shared.incidents import IncidentsLock, is_open, rfc3339
from netsky_shared.paths import Paths
from netskyd.config.legs import LegContext, LegResult, Page, configured, severity_rank
from netskyd.escalation.leg_health import update_health
from netskyd.timing import exp_backoff_s

if TYPE_CHECKING:
    from netskyd.config import Settings

Sender = Callable[[str, Any, Page, LegContext], Awaitable[LegResult]]
DEFAULT_HOME = os.path.expanduser("~/.netsky")


@dataclass
class Outcome:
    """What ``finish_round`` did: the incident as written (None for an all-clear of a
    vanished file), the audit rows, legs now failing and legs recovered."""

    incident: dict[str, Any] | None
    rows: list[dict[str, Any]]
    failing: list[dict[str, Any]]
    recovered: list[str]


def targets(
    legs: Mapping[str, Any], incident: dict[str, Any], kind: str = "page", now_s: float = 0.0
) -> dict[str, Any]:
    """The legs a round of ``kind`` goes to, by name.

    ``page``: every configured, enabled leg whose ``min_severity`` the incident meets,
    minus ``exclude_legs`` and minus those that already delivered this round (a
    round resumed after its sender died). ``retry``: of those, the ones that failed
    in this round and are due at ``now_s``. ``all-clear``: the ones that delivered
    the page, plus the desktop and tmux legs (their sentinel and marker show what
    is open).
    """
    rank = severity_rank(incident["severity"])
    eligible = {
        name: leg
        for name, leg in configured(dict(legs)).items()
        if name not in incident["exclude_legs"] and severity_rank(leg.min_severity) <= rank
    }
    if kind == "retry":
        out = {}
        for name, leg in eligible.items():
            state = incident["legs"].get(name)
            due = incidents.parse_rfc3339((state or {}).get("next_ts") or "")
            if state and state["status"] == "failed" and due is not None and due <= now_s:
                out[name] = leg
        return out
    if kind == "all-clear":
        return {
            name: leg
            for name, leg in eligible.items()
            if incident["legs"].get(name, {}).get("status") == "delivered"
            or leg.type in ("desktop", "tmux")
        }
    return {
        name: leg
        for name, leg in eligible.items()
        if incident["legs"].get(name, {}).get("status") != "delivered"
    }


def ack_command(home: str | Path, incident_id: str) -> str:
    """``netskyctl ack ID``, with ``NETSKY_HOME=...`` in front for a non-default home."""
    home = str(home)
    prefix = "" if home == DEFAULT_HOME else f"NETSKY_HOME={home} "
    return f"{prefix}netskyctl ack {incident_id}"


def open_summary(found: Iterable[dict[str, Any]], home: str | Path) -> tuple[dict[str, str], ...]:
    """``{"id", "subject", "severity", "opened_ts", "ack_command"}`` of each open incident."""
    return tuple(
        {
            **{k: i[k] for k in ("id", "subject", "severity", "opened_ts")},
            "ack_command": ack_command(home, i["id"]),
        }
        for i in found
        if is_open(i)
    )


def make_page(
    kind: Literal["page", "retry", "all-clear"],
    incident: dict[str, Any],
    home: Path,
    now_s: float,
    open_incidents: tuple[dict[str, str], ...],
) -> Page:
    """The Page a round of ``kind`` sends for ``incident``; an all-clear's body is the
    resolution."""
    body = incident["body"]
    if kind == "all-clear":
        body = incident.get("resolution") or "The cause went away."
    return Page(
        kind=kind,
        incident=incident["id"],
        key=incident["key"],
        subject=incident["subject"],
        body=body,
        severity=incident["severity"],
        ts=rfc3339(now_s),
        ack_command=ack_command(home, incident["id"]),
        host=socket.gethostname(),
        home=str(home),
        open_incidents=open_incidents,
    )


def leg_context(settings: Settings, environ: Mapping[str, str]) -> LegContext:
    """What the legs get from these settings: the environment, the leg deadline, the
    home and the tmux socket."""
    return LegContext(
        dict(environ), settings.escalation_leg_timeout_s, settings.home, settings.tmux_socket
    )


async def run_round(
    settings: Settings,
    environ: Mapping[str, str],
    incident: dict[str, Any],
    kind: Literal["page", "retry", "all-clear"],
    sender: Sender,
    via: str,
    clock: Callable[[], float],
) -> tuple[list[LegResult], Outcome]:
    """One round of ``kind`` for ``incident``, steps 2 to 4 of the module docstring:
    pick the legs, send on them all through ``sender``, record the outcome (``via``:
    ``daemon`` or ``direct``). File work runs in worker threads."""
    now = clock()
    chosen = targets(settings.legs, incident, kind, now)
    found, _ = await anyio.to_thread.run_sync(incidents.scan, settings.paths)
    page = make_page(kind, incident, settings.home, now, open_summary(found, settings.home))
    results = await send_all(chosen, page, leg_context(settings, environ), sender)
    outcome = await anyio.to_thread.run_sync(
        lambda: finish_round(
            settings.paths,
            incident["id"],
            kind,
            results,
            clock(),
            retry_base_s=settings.escalation_retry_base_s,
            retry_cap_s=settings.escalation_retry_cap_s,
            failing_after=settings.escalation_leg_failing_after,
            via=via,
            fallback=incident,
        )
    )
    return results, outcome


async def send_all(
    chosen: Mapping[str, Any], page: Page, ctx: LegContext, sender: Sender
) -> list[LegResult]:
    """Send ``page`` on every leg in ``chosen`` at once; one LegResult per leg, in order.

    ``sender`` is ``netskyd.escalation.legs.send`` (in-process) or
    ``send_in_process_of_its_own`` (netskyd.escalation.direct_send, one process per leg).
    A sender that raises counts as ``failed`` with the error (it should not raise).
    """
    results: dict[str, LegResult] = {}

    async def one(name: str, leg: Any) -> None:
        t0 = anyio.current_time()
        try:
            results[name] = await sender(name, leg, page, ctx)
        except Exception as e:  # noqa: BLE001 - a leg's bug must not stop the others
            ms = round((anyio.current_time() - t0) * 1000, 1)
            results[name] = LegResult(name, "failed", f"{type(e).__name__}: {e}", ms)

    async with anyio.create_task_group() as tg:
        for name, leg in chosen.items():
            tg.start_soon(one, name, leg)
    return [results[n] for n in chosen]


def append_audit(paths: Paths, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to ``state/owner-pages.jsonl`` in one write, then fsync.

    O_APPEND: rows from the daemon and a ``--direct`` run never interleave within a line.
    """
    if not rows:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    paths.state.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.owner_pages, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _audit_row(
    ts: str,
    incident_id: str,
    incident: dict[str, Any],
    kind: str,
    via: str,
    tries: int,
    leg: str | None,
    status: str,
    reason: str | None,
) -> dict[str, Any]:
    """One row of ``state/owner-pages.jsonl`` (docs/escalation.md, "Audit"); the keys in
    the order the file has always had them (``duration_ms`` before ``via``)."""
    return {
        "ts": ts,
        "incident": incident_id,
        "key": incident["key"],
        "severity": incident["severity"],
        "kind": kind,
        "round": incident["rounds"],
        "try": tries,
        "leg": leg,
        "status": status,
        "reason": reason,
        "duration_ms": 0.0,
        "via": via,
    }


def finish_round(
    paths: Paths,
    incident_id: str,
    kind: str,
    results: list[LegResult],
    now_s: float,
    *,
    retry_base_s: float,
    retry_cap_s: float,
    failing_after: int,
    via: str,
    fallback: dict[str, Any],
) -> Outcome:
    """Record a round's results (module docstring, step 4). ``fallback`` is the incident
    as the round saw it, used when its file has vanished. Blocking: run in a thread."""
    ts = rfc3339(now_s)
    with IncidentsLock(str(paths.escalations)):
        found, _ = incidents.scan(paths)
        current = next((i for i in found if i["id"] == incident_id), None)
        incident = current if current is not None else fallback
        rows = []
        for r in results:
            prev = incident["legs"].get(r.leg) or {}
            tries = prev.get("tries", 0) + 1 if kind == "retry" else 1
            rows.append(
                _audit_row(ts, incident_id, incident, kind, via, tries, r.leg, r.status, r.reason)
                | {"duration_ms": r.duration_ms}
            )
            if kind == "all-clear":
                continue
            next_ts = None
            if r.status == "failed":
                next_ts = rfc3339(now_s + exp_backoff_s(tries, retry_base_s, retry_cap_s))
            incident["legs"][r.leg] = {
                "status": r.status,
                "reason": r.reason,
                "ts": ts,
                "tries": tries,
                "next_ts": next_ts,
            }
        if not results:
            why = f"no configured leg takes {incident['severity']} pages"
            rows.append(
                _audit_row(ts, incident_id, incident, kind, via, 1, None, "unavailable", why)
            )
        if kind != "all-clear" and current is not None:
            pending = [
                s["next_ts"] for s in incident["legs"].values() if s.get("next_ts") is not None
            ]
            incident["next_retry_ts"] = min(pending) if pending and is_open(incident) else None
            incident["round_ts"] = None
            incidents.write_incident(paths, incident)
        append_audit(paths, rows)
        failing, recovered = update_health(paths, results, ts, failing_after)
    return Outcome(current, rows, failing, recovered)
