"""``netskyctl why AGENT``: an agent's activity class, the reason, and the evidence.

Stdlib only, like the rest of the client. The daemon reads the agent's screen
afresh, classifies it (netskyd/activity/classify.py) and answers with the verdict; this
prints it for people (``--json``: the daemon's result as is, docs/protocol.md).
"""

from __future__ import annotations

from client.common import out
from netsky_shared import protocol
from netsky_shared.ids import parse_agent

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from client.rpc import Client

#: Screen lines shown in the human output (the JSON has them all).
SCREEN_LINES = 12


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_why(res: dict[str, Any]) -> str:
    """Render a ``why`` result (shape in docs/protocol.md) as text; ``unconsumed``
    (``{streak, envelopes: [{id, ...}], last_consumed_at, in_delivered}``) adds a line
    naming the envelopes pasted but not taken."""
    ev = res.get("evidence") or {}
    lines = [f"{res['agent']}: {res['activity']} — {res['reason']}"]
    since = f" since {res['since']}" if res.get("since") else ""
    lines.append(f"  runtime {res['runtime']}{since}")
    proc = ev.get("process") or {}
    state = "alive" if proc.get("alive") else "spawning" if proc.get("spawning") else "dead"
    if proc.get("exit_status") is not None:
        state += f" (exit status {proc['exit_status']})"
    lines.append(f"  process:     {state}, pane pid {proc.get('pane_pid') or '-'}")
    lines.append(
        f"  pane:        fingerprint unchanged {_age(ev.get('fingerprint_age_s'))}, "
        f"raw text unchanged {_age(ev.get('raw_age_s'))}"
    )
    pending = ev.get("pending") or {}
    unanswered = pending.get("unanswered_since") or "-"
    lines.append(
        f"  pending:     inbox {pending.get('inbox', 0)}, claimed {pending.get('claimed', 0)}, "
        f"unanswered delivery since {unanswered}"
    )
    at_prompt = ev.get("at_prompt")
    if at_prompt is not None:
        lines.append(f"  at prompt:   {'yes' if at_prompt else 'no'}")
    if ev.get("busy_mark"):
        lines.append(f"  busy mark:   {ev['busy_mark'].strip()}")
    dialog = ev.get("dialog")
    if dialog:
        lines.append(
            f"  dialog:      {dialog['name']} ({dialog['kind']}), instance "
            f"{res.get('dialog_instance') or '-'}, policy {res.get('dialog_policy')}"
        )
        for i, label in enumerate(dialog.get("options") or [], 1):
            mark = "❯" if label == dialog.get("highlighted") else " "
            lines.append(f"               {mark} {i}. {label}")
    limit = ev.get("limit")
    if limit:
        lines.append(f"  limit:       resets {limit.get('reset_at') or '(not on screen)'}")
    for name, key in (("hang marker", "hang_marker"), ("limit marker", "limit_marker")):
        marker = res.get(key)
        if marker:
            paged = "paged" if marker.get("paged") else "not paged yet"
            state = marker.get("state", "")
            lines.append(
                f"  {name}: {state + ', ' if state else ''}since {marker.get('since')}, {paged}"
                + (f" (incident {marker['incident']})" if marker.get("incident") else "")
            )
    unconsumed = res.get("unconsumed") or {}
    if unconsumed.get("streak"):
        envs = unconsumed.get("envelopes") or []
        ids = ", ".join(str(e.get("id")) for e in envs)
        lines.append(
            f"  unconsumed:  {unconsumed['streak']} envelope(s) pasted but not taken since "
            f"its last consumed one ({unconsumed.get('last_consumed_at') or 'never'}): {ids}"
        )
    screen = ev.get("screen") or []
    if screen:
        lines.append("  screen:")
        lines += [f"    │ {line}" for line in screen[-SCREEN_LINES:]]
    return "\n".join(lines)


def cmd_why(args: argparse.Namespace, client: Client) -> int:
    """``why AGENT``: exit 0 with the verdict (whatever the class)."""
    res = client.call(protocol.WHY, {"agent": parse_agent(args.agent)})
    out(args, res, format_why(res))
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    why = sub.add_parser(
        "why",
        parents=[common],
        help="what an agent is doing (busy, idle, waiting, limited, hung, dead), and why",
    )
    why.add_argument("agent", help="agent0, agentN or agentinfinity (or just N)")
