"""Control methods: what each JSON-RPC method of ``netsky_shared.protocol`` does.

Each handler takes ``(ctx, params)`` and returns a JSON-able result, or raises
RpcError (or a NetskyError, mapped to an error code by ``control``).
Shapes are documented in ``docs/protocol.md``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from netsky_shared import protocol
from netsky_shared.errors import NetskyError
from netsky_shared.ids import parse_agent
from netsky_shared.incidents import list_incidents
from netsky_shared.maildir import now_rfc3339
from netsky_shared.protocol import SCHEMA_VERSION
from netskyd import __version__
from netskyd.config import Runtime
from netskyd.context import Context

Handler = Callable[[Context, dict[str, Any]], Awaitable[Any]]


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


def _agent(params: dict[str, Any]) -> str:
    try:
        return parse_agent(str(params.get("agent", "")))
    except ValueError as e:
        raise RpcError(protocol.UNKNOWN_AGENT, str(e)) from e


async def hello(ctx: Context, params: dict[str, Any]) -> Any:
    theirs = params.get("api_version")
    if theirs != protocol.API_VERSION:
        raise RpcError(
            protocol.VERSION_SKEW,
            f"version skew: client speaks API {theirs}, netskyd {__version__} speaks "
            f"API {protocol.API_VERSION}; use the netskyctl of the same install",
            {"api_version": protocol.API_VERSION, "version": __version__},
        )
    return {"api_version": protocol.API_VERSION, "version": __version__, "pid": os.getpid()}


async def ping(ctx: Context, params: dict[str, Any]) -> Any:
    return {"pong": True, "ts": now_rfc3339()}


async def status(ctx: Context, params: dict[str, Any]) -> Any:
    sup = ctx.sup()
    now = ctx.clock()
    return {
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "api_version": protocol.API_VERSION,
            "schema_version": SCHEMA_VERSION,
            "home": str(ctx.settings.home),
            "tmux_socket": ctx.settings.tmux_socket,
            "uptime_s": round(now - ctx.started_at, 1),
            "ticks": ctx.tick_count,
            "tick_interval_s": ctx.settings.tick_interval_s,
            "last_tick_age_s": None
            if ctx.last_tick_at is None
            else round(now - ctx.last_tick_at, 1),
        },
        "desired": {"state": "up" if sup.desired.up else "down", "agents": sup.desired.wanted()},
        "agents": sup.rows(),
        "unknown_sessions": sup.unknown_sessions,
        "restarts": ctx.the_watchdog().rows(),
        "last_restarts": _last_per_agent(await ctx.store.restarts(None, 200)),
        "incidents": list_incidents(ctx.paths),
        "bus": {
            "delivered": ctx.the_bus().delivered_count,
            "duplicates": ctx.the_bus().duplicate_count,
            "poisoned": ctx.the_bus().poisoned_count,
            "forwarded": ctx.the_bus().forwarded_count,
            "in_flight": ctx.the_bus().in_flight(),
        },
    }


def _last_per_agent(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first
        last.setdefault(row["agent"], row)
    return last


def _agent_rows(ctx: Context, agents: list[str]) -> list[dict[str, Any]]:
    return [r for r in ctx.sup().rows() if r["agent"] in agents]


async def up(ctx: Context, params: dict[str, Any]) -> Any:
    clones = _int(params, "clones", None)
    timeout_s = _float(params, "timeout_s", ctx.settings.ready_timeout_s + 5)
    agents = await ctx.sup().set_up(clones)
    ready = await ctx.sup().wait_ready(agents, timeout_s) if params.get("wait", True) else None
    return {"agents": _agent_rows(ctx, agents), "ready": ready}


async def down(ctx: Context, params: dict[str, Any]) -> Any:
    return {"killed": await ctx.sup().set_down()}


async def agent(ctx: Context, params: dict[str, Any]) -> Any:
    name = _agent(params)
    runtime = params.get("runtime")
    try:
        rt = Runtime(runtime) if runtime else None
    except ValueError as e:
        raise RpcError(
            protocol.INVALID_PARAMS, f"unknown runtime {runtime!r} (one of {', '.join(Runtime)})"
        ) from e
    timeout_s = _float(params, "timeout_s", ctx.settings.ready_timeout_s + 5)
    agents = await ctx.sup().add_agent(name, rt)
    ready = await ctx.sup().wait_ready(agents, timeout_s) if params.get("wait", True) else None
    return {"agents": _agent_rows(ctx, agents), "ready": ready}


async def kill(ctx: Context, params: dict[str, Any]) -> Any:
    return await ctx.sup().kill(_agent(params))


async def channel_replay(ctx: Context, params: dict[str, Any]) -> Any:
    name = _agent(params)
    since = params.get("since")
    if not isinstance(since, str) or not since:
        raise RpcError(protocol.INVALID_PARAMS, "since must be an RFC 3339 timestamp")
    try:
        replayed = await ctx.the_bus().replay(name, since)
    except ValueError as e:
        raise RpcError(protocol.INVALID_PARAMS, str(e)) from e
    return {"agent": name, "since": since, "replayed": replayed, "count": len(replayed)}


async def restart_(ctx: Context, params: dict[str, Any]) -> Any:
    handoff = params.get("handoff")
    if handoff is not None and not isinstance(handoff, str):
        raise RpcError(protocol.INVALID_PARAMS, "handoff must be a string")
    if not ctx.sup().desired.up:
        raise NetskyError("the constellation is down; run 'netskyctl up' first")
    clones = _int(params, "clones", None)
    text = handoff or "netsky: planned restart requested by the owner (no handoff text given)."
    m = await ctx.the_watchdog().request(
        text, clones=clones, by="owner", force=bool(params.get("force", True))
    )
    return {"agent": m.agent, "restart_id": m.restart_id, "state": m.state.value}


async def restarts(ctx: Context, params: dict[str, Any]) -> Any:
    name = params.get("agent")
    if name is not None:
        name = _agent(params)
    limit = _int(params, "limit", 50) or 50
    return {"restarts": await ctx.store.restarts(name, limit)}


async def session_event(ctx: Context, params: dict[str, Any]) -> Any:
    event = params.get("event")
    if event not in ("pane-died", "session-closed") or not isinstance(params.get("session"), str):
        raise RpcError(protocol.INVALID_PARAMS, "event must be pane-died or session-closed")
    if ctx.sessions is None:
        return {"accepted": False}
    return {"accepted": ctx.sessions.post_params(params)}


async def why(ctx: Context, params: dict[str, Any]) -> Any:
    name = _agent(params)
    sup = ctx.sup()
    if name not in sup.agents and name not in sup.desired.wanted():
        raise RpcError(protocol.UNKNOWN_AGENT, f"{name} is not part of the constellation")
    result = await ctx.the_monitor().why(name)
    # Envelopes pasted but not taken (netskyd/consume.py): {streak, envelopes: [{id,
    # file, delivered_ts, submitted_at, enter_retries}], last_consumed_at, in_delivered}.
    result["unconsumed"] = await ctx.the_bus().unconsumed(name)
    return result


async def escalate_(ctx: Context, params: dict[str, Any]) -> Any:
    from netsky_shared.incidents import SEVERITIES
    from netskyd.escalation.spool import escalate, result_json

    subject, body, key = (params.get(k) for k in ("subject", "body", "key"))
    severity = params.get("severity", "warning")
    if not all(isinstance(v, str) and v.strip() for v in (subject, key)):
        raise RpcError(protocol.INVALID_PARAMS, "subject and key must be non-empty strings")
    if not isinstance(body, str):
        raise RpcError(protocol.INVALID_PARAMS, "body must be a string")
    if severity not in SEVERITIES:
        raise RpcError(protocol.INVALID_PARAMS, f"severity must be one of {', '.join(SEVERITIES)}")
    assert isinstance(subject, str) and isinstance(key, str)
    incident = await escalate(ctx, subject, body, key, severity, wait=True)
    return result_json(ctx.settings.home, incident, "daemon")


async def health_(ctx: Context, params: dict[str, Any]) -> Any:
    from netskyd.keepalive.health import refresh

    return await refresh(ctx)


async def debug_block_loop(ctx: Context, params: dict[str, Any]) -> Any:
    from netskyd.keepalive.heartbeat import block_loop

    if not ctx.settings.debug_rpc:
        raise RpcError(protocol.METHOD_NOT_FOUND, "debug methods need the debug_rpc setting")
    return block_loop(_float(params, "seconds", 1.0))


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
    protocol.DEBUG_BLOCK_LOOP: debug_block_loop,
}
assert set(HANDLERS) == protocol.METHODS, "every protocol method needs a handler"
