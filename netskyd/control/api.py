"""Control methods: what each JSON-RPC method of ``netsky_shared.protocol`` does.

Each handler takes ``(svc, params)`` (``Services``: the running components) and returns a JSON-able
result, or raises RpcError (or a NetskyError, mapped to an error code by ``control``). Shapes are
documented in ``docs/protocol.md``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from netsky_shared import protocol
from netsky_shared.errors import NetskyError
from netsky_shared.ids import parse_agent
from netsky_shared.incidents import list_incidents
from netsky_shared.maildir import now_rfc3339
from netsky_shared.protocol import SCHEMA_VERSION
from netskyd import __version__
from netskyd.activity.monitor import Monitor
from netskyd.agents.sessions import SessionWatcher
from netskyd.bus.watcher import Bus
from netskyd.config import Runtime
from netskyd.escalation.spool import Spool
from netskyd.owner.callers import NotAllowed, agent_of, owner_line_caller
from netskyd.owner.channels import OwnerChannels
from netskyd.ports import Clock, SettingsView, TickView
from netskyd.schedule.crontab import CronEntry
from netskyd.schedule.plan import ScheduleError
from netskyd.schedule.scheduler import Scheduler
from netskyd.store.db import Store
from netskyd.supervision.supervisor import Supervisor
from netskyd.work.loop import WorkLoop


@dataclass(frozen=True)
class Services:
    """What the control socket's methods may reach: the running components, each
    started and ready when the socket opens (netskyd.app.wiring builds it)."""

    settings: SettingsView
    clock: Clock
    ticks: TickView
    store: Store
    pager: Spool
    supervisor: Supervisor
    monitor: Monitor
    bus: Bus
    sessions: SessionWatcher | None
    work: WorkLoop
    schedule: Scheduler
    owner: OwnerChannels
    #: Rebuild and write the health report now (netskyd.keepalive.health.refresh).
    refresh_health: Callable[[], Awaitable[dict[str, Any]]]


Handler = Callable[[Services, dict[str, Any]], Awaitable[Any]]


class RpcError(Exception):
    """Raised by a handler to answer with a specific JSON-RPC error code."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _int(params: dict[str, Any], key: str, default: int | None) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RpcError(protocol.INVALID_PARAMS, f"{key} must be a non-negative integer")
    return value


def _float(params: dict[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise RpcError(protocol.INVALID_PARAMS, f"{key} must be a positive number")
    return float(value)


def _runtime(params: dict[str, Any]) -> Runtime | None:
    runtime = params.get("runtime")
    try:
        return Runtime(runtime) if runtime else None
    except ValueError as e:
        raise RpcError(
            protocol.INVALID_PARAMS, f"unknown runtime {runtime!r} (one of {', '.join(Runtime)})"
        ) from e


def _agent(params: dict[str, Any]) -> str:
    try:
        return parse_agent(str(params.get("agent", "")))
    except ValueError as e:
        raise RpcError(protocol.UNKNOWN_AGENT, str(e)) from e


async def hello(svc: Services, params: dict[str, Any]) -> Any:
    theirs = params.get("api_version")
    if theirs != protocol.API_VERSION:
        raise RpcError(
            protocol.VERSION_SKEW,
            f"version skew: client speaks API {theirs}, netskyd {__version__} speaks "
            f"API {protocol.API_VERSION}; use the netskyctl of the same install",
            {"api_version": protocol.API_VERSION, "version": __version__},
        )
    return {"api_version": protocol.API_VERSION, "version": __version__, "pid": os.getpid()}


async def ping(svc: Services, params: dict[str, Any]) -> Any:
    return {"pong": True, "ts": now_rfc3339()}


async def status(svc: Services, params: dict[str, Any]) -> Any:
    sup = svc.supervisor
    now = svc.clock()
    return {
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "api_version": protocol.API_VERSION,
            "schema_version": SCHEMA_VERSION,
            "home": str(svc.settings().home),
            "tmux_socket": svc.settings().tmux_socket,
            "uptime_s": round(now - svc.ticks.started_at, 1),
            "ticks": svc.ticks.tick_count,
            "tick_interval_s": svc.settings().tick_interval_s,
            "last_tick_age_s": None
            if svc.ticks.last_tick_at is None
            else round(now - svc.ticks.last_tick_at, 1),
        },
        "desired": {"state": "up" if sup.desired.up else "down", "agents": sup.desired.wanted()},
        "agents": sup.rows(),
        "unknown_sessions": sup.unknown_sessions,
        "restarts": svc.supervisor.restarts.rows(),
        "last_restarts": _last_per_agent(await svc.store.restarts(None, 200)),
        "incidents": list_incidents(svc.settings().paths),
        # Each briefed clone's task (docs/work.md): agent, workspace, branch, state, ahead.
        "clones": [
            {k: d[k] for k in ("agent", "workspace", "branch", "state", "ahead", "head_sha")}
            for d in (await svc.work.status())["clones"]
        ],
        # Cron entries and loops (docs/schedule.md): the next three fires, counts, a
        # cron.toml that is not valid.
        "schedule": svc.schedule.summary(),
        # The owner's inbound sources (docs/owner.md): state, last message, counts.
        "owner": svc.owner.rows(),
        "bus": {
            "delivered": svc.bus.delivered_count,
            "duplicates": svc.bus.duplicate_count,
            "poisoned": svc.bus.poisoned_count,
            "forwarded": svc.bus.forwarded_count,
            "in_flight": svc.bus.in_flight(),
        },
    }


def _last_per_agent(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first
        last.setdefault(row["agent"], row)
    return last


def _agent_rows(svc: Services, agents: list[str]) -> list[dict[str, Any]]:
    return [r for r in svc.supervisor.rows() if r["agent"] in agents]


async def up(svc: Services, params: dict[str, Any]) -> Any:
    clones = _int(params, "clones", None)
    timeout_s = _float(params, "timeout_s", svc.settings().ready_timeout_s + 5)
    agents = await svc.supervisor.set_up(clones)
    ready = await svc.supervisor.wait_ready(agents, timeout_s) if params.get("wait", True) else None
    return {"agents": _agent_rows(svc, agents), "ready": ready}


async def down(svc: Services, params: dict[str, Any]) -> Any:
    return {"killed": await svc.supervisor.set_down()}


async def agent(svc: Services, params: dict[str, Any]) -> Any:
    name = _agent(params)
    rt = _runtime(params)
    timeout_s = _float(params, "timeout_s", svc.settings().ready_timeout_s + 5)
    agents = await svc.supervisor.add_agent(name, rt)
    ready = await svc.supervisor.wait_ready(agents, timeout_s) if params.get("wait", True) else None
    return {"agents": _agent_rows(svc, agents), "ready": ready}


async def kill(svc: Services, params: dict[str, Any]) -> Any:
    return await svc.supervisor.kill(_agent(params))


async def channel_replay(svc: Services, params: dict[str, Any]) -> Any:
    name = _agent(params)
    since = params.get("since")
    if not isinstance(since, str) or not since:
        raise RpcError(protocol.INVALID_PARAMS, "since must be an RFC 3339 timestamp")
    try:
        replayed = await svc.bus.replay(name, since)
    except ValueError as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e
    return {"agent": name, "since": since, "replayed": replayed, "count": len(replayed)}


async def restart_(svc: Services, params: dict[str, Any]) -> Any:
    handoff = params.get("handoff")
    if handoff is not None and not isinstance(handoff, str):
        raise RpcError(protocol.INVALID_PARAMS, "handoff must be a string")
    if not svc.supervisor.desired.up:
        raise NetskyError("the constellation is down; run 'netskyctl up' first")
    clones = _int(params, "clones", None)
    text = handoff or "netsky: planned restart requested by the owner (no handoff text given)."
    m = await svc.supervisor.restarts.request(
        text, clones=clones, by="owner", force=bool(params.get("force", True))
    )
    return {"agent": m.agent, "restart_id": m.restart_id, "state": m.state.value}


async def restarts(svc: Services, params: dict[str, Any]) -> Any:
    name = params.get("agent")
    if name is not None:
        name = _agent(params)
    limit = _int(params, "limit", 50) or 50
    return {"restarts": await svc.store.restarts(name, limit)}


async def session_event(svc: Services, params: dict[str, Any]) -> Any:
    event = params.get("event")
    if event not in ("pane-died", "session-closed") or not isinstance(params.get("session"), str):
        raise RpcError(protocol.INVALID_PARAMS, "event must be pane-died or session-closed")
    if svc.sessions is None:
        return {"accepted": False}
    return {"accepted": svc.sessions.post_params(params)}


async def why(svc: Services, params: dict[str, Any]) -> Any:
    name = _agent(params)
    sup = svc.supervisor
    if name not in sup.agents and name not in sup.desired.wanted():
        raise RpcError(protocol.UNKNOWN_AGENT, f"{name} is not part of the constellation")
    result = await svc.monitor.why(name)
    # Envelopes pasted but not taken (netskyd/bus/confirm.py): {streak, envelopes: [{id,
    # file, delivered_ts, submitted_at, enter_retries}], last_consumed_at, in_delivered}.
    result["unconsumed"] = await svc.bus.unconsumed(name)
    return result


async def escalate_(svc: Services, params: dict[str, Any]) -> Any:
    from netsky_shared.incidents import SEVERITIES
    from netskyd.escalation.spool import result_json

    subject, body, key = (params.get(k) for k in ("subject", "body", "key"))
    severity = params.get("severity", "warning")
    if not all(isinstance(v, str) and v.strip() for v in (subject, key)):
        raise RpcError(protocol.INVALID_PARAMS, "subject and key must be non-empty strings")
    if not isinstance(body, str):
        raise RpcError(protocol.INVALID_PARAMS, "body must be a string")
    if severity not in SEVERITIES:
        raise RpcError(protocol.INVALID_PARAMS, f"severity must be one of {', '.join(SEVERITIES)}")
    assert isinstance(subject, str) and isinstance(key, str)
    incident = await svc.pager.escalate(subject, body, key, severity, wait=True)
    return result_json(svc.settings().home, incident, "daemon")


async def health_(svc: Services, params: dict[str, Any]) -> Any:
    return await svc.refresh_health()


async def debug_block_loop(svc: Services, params: dict[str, Any]) -> Any:
    from netskyd.keepalive.heartbeat import block_loop

    if not svc.settings().debug_rpc:
        raise RpcError(protocol.METHOD_NOT_FOUND, "debug methods need the debug_rpc setting")
    return block_loop(_float(params, "seconds", 1.0))


def _str(params: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise RpcError(protocol.INVALID_PARAMS, f"{key} must be a non-empty string")
    return value


async def _not_from_a_clone(svc: Services, params: dict[str, Any], what: str) -> None:
    """Refuse ``what`` when the call comes from a clone's pane (the process tree, as for
    the owner's verbs): briefing, harvesting and ending clones are agent0's. Raises
    NotAllowed."""
    pid = params.get("_peer_pid")
    if not isinstance(pid, int):
        return
    who = await anyio.to_thread.run_sync(agent_of, pid, _panes(svc))
    if who is not None and who not in ("agent0", "agentinfinity"):
        raise NotAllowed(
            f"{who} may not {what}: clones never brief, harvest or end clones; ask agent0 "
            f"(netskyctl channel send agent0 TEXT --from {who})"
        )


async def clone_brief(svc: Services, params: dict[str, Any]) -> Any:
    await _not_from_a_clone(svc, params, "brief a clone")
    text = _str(params, "text", required=True)
    workspace = _str(params, "workspace", required=True)
    assert text is not None and workspace is not None
    rt = _runtime(params)
    wait_s = params.get("wait_s", 0.0)
    if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or wait_s < 0:
        raise RpcError(protocol.INVALID_PARAMS, "wait_s must be a number of seconds >= 0")
    try:
        return await svc.work.brief(
            text,
            workspace,
            agent=_int(params, "agent", None),
            runtime=rt,
            repo=_str(params, "repo"),
            base=_str(params, "base"),
            wait_s=float(wait_s),
        )
    except ValueError as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e


async def clone_report(svc: Services, params: dict[str, Any]) -> Any:
    text = _str(params, "text", required=True)
    assert text is not None
    return await svc.work.report(
        _agent(params), text, sha=_str(params, "sha"), done=bool(params.get("done", False))
    )


async def clone_status(svc: Services, params: dict[str, Any]) -> Any:
    agent = _agent(params) if params.get("agent") is not None else None
    return await svc.work.status(agent, every=bool(params.get("all", False)))


async def clone_kill(svc: Services, params: dict[str, Any]) -> Any:
    await _not_from_a_clone(svc, params, "end a clone")
    return await svc.work.kill(
        _agent(params), rm=bool(params.get("rm", False)), force=bool(params.get("force", False))
    )


async def harvest_(svc: Services, params: dict[str, Any]) -> Any:
    await _not_from_a_clone(svc, params, "harvest")
    target = _str(params, "target", required=True)
    assert target is not None
    return await svc.work.harvest(
        target,
        onto=_str(params, "onto"),
        check=_str(params, "check"),
        push=bool(params.get("push", True)),
    )


def _name(params: dict[str, Any]) -> str:
    name = _str(params, "name", required=True)
    assert name is not None
    return name


async def cron_add(svc: Services, params: dict[str, Any]) -> Any:
    fields = {k: params[k] for k in ("name", "schedule", "agent", "text", "tz", "catchup",
                                     "paused") if params.get(k) is not None}  # fmt: skip
    from netskyd.schedule.crontab import CrontabError, check_entry

    try:
        entry: CronEntry = check_entry(fields)
        return await svc.schedule.cron_add(entry)
    except (CrontabError, ScheduleError) as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e


async def cron_ls(svc: Services, params: dict[str, Any]) -> Any:
    return await svc.schedule.cron_ls()


async def cron_rm(svc: Services, params: dict[str, Any]) -> Any:
    try:
        return await svc.schedule.cron_rm(_name(params))
    except ValueError as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e


async def cron_run(svc: Services, params: dict[str, Any]) -> Any:
    return await svc.schedule.cron_run(_name(params))


async def cron_pause(svc: Services, params: dict[str, Any]) -> Any:
    try:
        return await svc.schedule.cron_pause(_name(params), bool(params.get("paused", True)))
    except ValueError as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e


async def loop_create(svc: Services, params: dict[str, Any]) -> Any:
    interval = _str(params, "interval", required=True)
    text = _str(params, "text", required=True)
    assert interval is not None and text is not None
    by = params.get("from") or "owner"
    if not isinstance(by, str):
        raise RpcError(protocol.INVALID_PARAMS, "from must be an agent id")
    try:
        return await svc.schedule.loop_create(
            _agent(params), interval, text, count=_int(params, "count", None),
            until=_str(params, "until"), by=by,
        )  # fmt: skip
    except ValueError as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e


async def loop_ls(svc: Services, params: dict[str, Any]) -> Any:
    return await svc.schedule.loop_ls(every=bool(params.get("all", False)))


async def loop_rm(svc: Services, params: dict[str, Any]) -> Any:
    loop_id = _int(params, "id", None)
    if loop_id is None:
        raise RpcError(protocol.INVALID_PARAMS, "id must be a loop's number")
    return await svc.schedule.loop_rm(loop_id)


async def schedule_fires(svc: Services, params: dict[str, Any]) -> Any:
    kind = params.get("kind")
    if kind not in (None, "cron", "loop"):
        raise RpcError(protocol.INVALID_PARAMS, "kind must be cron or loop")
    return await svc.schedule.fires(
        kind=kind, entry=_str(params, "entry"), limit=_int(params, "limit", 50) or 50
    )


def _panes(svc: Services) -> dict[str, int]:
    return {a: st.pane_pid for a, st in svc.supervisor.agents.items() if st.pane_pid}


async def _owner_caller(svc: Services, params: dict[str, Any]) -> str:
    """Who signs an owner verb (netskyd.owner.callers; the process walk in a worker
    thread: off Linux it runs ``ps``); raises NotAllowed for a clone."""
    claimed = params.get("agent_n")
    pid = params.get("_peer_pid")
    said = str(claimed) if claimed not in (None, "") else None
    caller = pid if isinstance(pid, int) else None
    return await anyio.to_thread.run_sync(owner_line_caller, caller, said, _panes(svc))


async def imessage_send(svc: Services, params: dict[str, Any]) -> Any:
    text = _str(params, "text", required=True)
    assert text is not None
    by = await _owner_caller(svc, params)
    return {**await svc.owner.send_imessage(text, by), "by": by}


def _mail(params: dict[str, Any]) -> tuple[str, str]:
    """``(subject, body)`` of ``email.send`` / ``email.draft``."""
    subject = _str(params, "subject", required=True)
    body = params.get("body", "")
    if not isinstance(body, str):
        raise RpcError(protocol.INVALID_PARAMS, "body must be a string")
    assert subject is not None
    return subject, body


async def email_send(svc: Services, params: dict[str, Any]) -> Any:
    subject, body = _mail(params)
    by = await _owner_caller(svc, params)
    return {**await svc.owner.send_email(subject, body, by), "by": by}


async def email_draft(svc: Services, params: dict[str, Any]) -> Any:
    subject, body = _mail(params)
    by = await _owner_caller(svc, params)
    return {**await svc.owner.draft_email(subject, body, by), "by": by}


HANDLERS: dict[str, Handler] = {
    protocol.HELLO: hello,
    protocol.PING: ping,
    protocol.STATUS: status,
    protocol.UP: up,
    protocol.DOWN: down,
    protocol.AGENT: agent,
    protocol.KILL: kill,
    protocol.CHANNEL_REPLAY: channel_replay,
    protocol.RESTART: restart_,
    protocol.RESTARTS: restarts,
    protocol.SESSION_EVENT: session_event,
    protocol.WHY: why,
    protocol.ESCALATE: escalate_,
    protocol.HEALTH: health_,
    protocol.CLONE_BRIEF: clone_brief,
    protocol.CLONE_REPORT: clone_report,
    protocol.CLONE_STATUS: clone_status,
    protocol.CLONE_KILL: clone_kill,
    protocol.HARVEST: harvest_,
    protocol.CRON_ADD: cron_add,
    protocol.CRON_LS: cron_ls,
    protocol.CRON_RM: cron_rm,
    protocol.CRON_RUN: cron_run,
    protocol.CRON_PAUSE: cron_pause,
    protocol.LOOP_CREATE: loop_create,
    protocol.LOOP_LS: loop_ls,
    protocol.LOOP_RM: loop_rm,
    protocol.SCHEDULE_FIRES: schedule_fires,
    protocol.IMESSAGE_SEND: imessage_send,
    protocol.EMAIL_SEND: email_send,
    protocol.EMAIL_DRAFT: email_draft,
    protocol.DEBUG_BLOCK_LOOP: debug_block_loop,
}
assert set(HANDLERS) == protocol.METHODS, "every protocol method needs a handler"
