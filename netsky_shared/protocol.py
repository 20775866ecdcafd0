"""The control-socket wire contract: JSON-RPC 2.0, one JSON object per line.

Stdlib only: both ``netskyd`` and the thin ``netskyctl`` import it. The same
contract is written for people in ``docs/protocol.md``; keep the two in step.

Transport: a Unix stream socket at ``NETSKY_HOME/netskyd.sock`` (mode 0600, the
peer's uid must equal the daemon's). Each request and response is one UTF-8 JSON
object terminated by ``\\n``. A client sends ``hello`` first and compares
``api_version`` (source: Supervisor's ``supervisorctl.upcheck``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time the client does not need
    from typing import Any, Final

#: Bumped on any incompatible change to methods, params or results.
API_VERSION: Final = 1

#: meta.db's schema version (``PRAGMA user_version``) this install writes and reads:
#: the number of the last migration in ``netskyd.store.db.MIGRATIONS`` (a unit test holds
#: the two equal). ``netskyctl doctor`` compares the file's with it, without aiosqlite.
SCHEMA_VERSION: Final = 7

#: Longest accepted request or response line, in bytes.
MAX_LINE_BYTES: Final = 4 * 1024 * 1024

# Method names (params -> result shapes are documented in docs/protocol.md).
HELLO: Final = "hello"  # {api_version} -> {api_version, version, pid}
PING: Final = "ping"  # {} -> {"pong": true, "ts"}
STATUS: Final = "status"  # {} -> StatusResult
UP: Final = "up"  # {clones?: int, wait?: bool, timeout_s?: float} -> {agents: [...]}
DOWN: Final = "down"  # {} -> {killed: [agent ids]}
AGENT: Final = "agent"  # {agent, runtime?, wait?, timeout_s?} -> {agents: [...]}
KILL: Final = "kill"  # {agent} -> {killed: bool, desired: bool}
#: {agent, since: RFC 3339} -> {agent, since, replayed: [envelope ids], count}
CHANNEL_REPLAY: Final = "channel.replay"
#: {handoff?: str, clones?: int, force?: bool} -> {agent, restart_id, state}
RESTART: Final = "restart"
#: {agent?: str, limit?: int} -> {restarts: [RestartRow, newest first]}
RESTARTS: Final = "restarts"
#: {event: "pane-died" | "session-closed", session, status?: int} -> {accepted: bool}
#: (sent by the tmux hooks through ``python -m client.hook``)
SESSION_EVENT: Final = "session.event"
#: {agent} -> WhyResult (the activity class, its reason and evidence; docs/activity.md)
WHY: Final = "why"
#: {subject, body, key, severity?} -> EscalateResult (netskyd.escalation.spool; docs/escalation.md):
#: {action, incident, results: [{leg, status, reason, duration_ms}], delivered, via}
ESCALATE: Final = "escalate"
#: {} -> HealthReport (netskyd.keepalive.health; docs/keepalive.md); also written to
#: state/health.json
HEALTH: Final = "health"
#: The work loop (docs/work.md). {text, workspace, agent?: int, runtime?, repo?: absolute
#: path, base?, wait_s?} -> {dispatch: DispatchRow, ready: bool, delivered: bool | null}
CLONE_BRIEF: Final = "clone.brief"
#: {agent, text, sha?, done?: bool} -> {dispatch: DispatchRow, envelope: id}
CLONE_REPORT: Final = "clone.report"
#: {agent?, all?: bool} -> {clones: [DispatchRow, newest first]}
CLONE_STATUS: Final = "clone.status"
#: {agent, rm?: bool, force?: bool} -> {agent, killed, dispatch: DispatchRow, removed}
CLONE_KILL: Final = "clone.kill"
#: {target: "agentN" | "N" | workspace, onto?, check?, push?: bool} -> HarvestResult
HARVEST: Final = "harvest"
#: Scheduling (docs/schedule.md). {name, schedule, agent, text, tz?, catchup?, paused?}
#: -> {entry: EntryRow}
CRON_ADD: Final = "cron.add"
#: {} -> {entries: [EntryRow], crontab: {path, error, loaded_ts, last_good}}
CRON_LS: Final = "cron.ls"
#: {name} -> {removed: name}
CRON_RM: Final = "cron.rm"
#: {name} -> {entry: EntryRow, fire: FireRow}
CRON_RUN: Final = "cron.run"
#: {name, paused: bool} -> {entry: EntryRow}
CRON_PAUSE: Final = "cron.pause"
#: {agent, interval: "10m", text, count?: int, until?: RFC 3339 | "2h", from?} -> {loop: LoopRow}
LOOP_CREATE: Final = "loop.create"
#: {all?: bool} -> {loops: [LoopRow]}
LOOP_LS: Final = "loop.ls"
#: {id: int} -> {loop: LoopRow}
LOOP_RM: Final = "loop.rm"
#: {kind?: "cron" | "loop", entry?, limit?: int} -> {fires: [FireRow, newest first]}
SCHEDULE_FIRES: Final = "schedule.fires"
#: The owner's line (docs/owner.md); only agent0 and agentinfinity (the daemon checks the
#: caller's pane). {text, agent_n?} -> {to, ts, by}
IMESSAGE_SEND: Final = "imessage.send"
#: {subject, body, agent_n?} -> {to, subject, message_id, ts, by}
EMAIL_SEND: Final = "email.send"
#: {subject, body, agent_n?} -> {mailbox, to, subject, ts, by}
EMAIL_DRAFT: Final = "email.draft"
#: {seconds: float} -> {blocked_s} — blocks the event loop (only with ``debug_rpc``)
DEBUG_BLOCK_LOOP: Final = "debug.block_loop"
METHODS: Final = frozenset(
    {
        HELLO,
        PING,
        STATUS,
        UP,
        DOWN,
        AGENT,
        KILL,
        CHANNEL_REPLAY,
        RESTART,
        RESTARTS,
        SESSION_EVENT,
        WHY,
        ESCALATE,
        HEALTH,
        CLONE_BRIEF,
        CLONE_REPORT,
        CLONE_STATUS,
        CLONE_KILL,
        HARVEST,
        CRON_ADD,
        CRON_LS,
        CRON_RM,
        CRON_RUN,
        CRON_PAUSE,
        LOOP_CREATE,
        LOOP_LS,
        LOOP_RM,
        SCHEDULE_FIRES,
        IMESSAGE_SEND,
        EMAIL_SEND,
        EMAIL_DRAFT,
        DEBUG_BLOCK_LOOP,
    }
)

# JSON-RPC 2.0 standard error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# netsky application error codes (JSON-RPC's server-defined range).
NETSKY_ERROR: Final = -32000  # any other NetskyError
VERSION_SKEW: Final = -32001  # client and daemon disagree on API_VERSION
UNKNOWN_AGENT: Final = -32010  # not an agent id, or not part of the constellation
SPAWN_FAILED: Final = -32011  # a spawn or readiness wait failed
TEMPORARY_FAILURE: Final = -32075  # try again later (e.g. an inbox is full)

# netskyctl exit codes (ARCHITECTURE.md, "Client").
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_RUNNING: Final = 3
EXIT_VERSION_SKEW: Final = 4
EXIT_TEMPFAIL: Final = 75


def exit_code_for(error_code: int) -> int:
    """Map a JSON-RPC error code to the netskyctl exit code a script can branch on."""
    if error_code == VERSION_SKEW:
        return EXIT_VERSION_SKEW
    if error_code == TEMPORARY_FAILURE:
        return EXIT_TEMPFAIL
    if error_code in (INVALID_PARAMS, UNKNOWN_AGENT):
        return EXIT_USAGE
    return EXIT_FAILED


def request(req_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a JSON-RPC 2.0 request object."""
    return {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}}


def result(req_id: Any, value: Any) -> dict[str, Any]:
    """Build a JSON-RPC 2.0 success response."""
    return {"jsonrpc": "2.0", "id": req_id, "result": value}


def error(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """Build a JSON-RPC 2.0 error response; ``data`` is added only when not None."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": err}
