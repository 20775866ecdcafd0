"""``netskyctl channel poison`` and ``channel retry``: rejected envelopes, and back to the inbox.

Each poisoned entry sits in its agent's ``poison/`` beside the daemon's
``<name>.reason.json`` (``{"rule", "detail", "ts", "file"}``; the rules are in docs/bus.md,
"Poison rules"). ``retry`` puts a fixed one back into the inbox by maildir delivery; both
work on the files themselves, so they work while netskyd is down (stdlib only).
"""

from __future__ import annotations

import os
import stat

from client.boxes import (
    REASON_SUFFIX,
    box_path,
    channel_agents,
    kind_of,
    poisoned_names,
    read_json_file,
    short_id,
    str_or_none,
)
from client.common import Usage, home_of, out, preview, setting, table
from netsky_shared.errors import InboxFull, NetskyError
from netsky_shared.ids import parse_agent
from netsky_shared.maildir import box_entries

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import Any


class NoMatch(NetskyError):
    """Raised when no poisoned envelope matches the id given to ``channel retry``."""


class AmbiguousMatch(NetskyError):
    """Raised when the id given to ``channel retry`` matches several poisoned envelopes."""

    def __init__(self, message: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.candidates = candidates


class NotRetryable(NetskyError):
    """Raised when a poisoned entry cannot go back to the inbox (not a regular file, or clash)."""


REASON_MAX_BYTES = 64 * 1024


def poisoned(home: str, agents: Sequence[str], max_bytes: int) -> list[dict[str, Any]]:
    """Every poisoned item of ``agents`` with its reason, in agent then name order.

    Each is ``{agent, file, id, rule, detail, ts, reason_file, reason_error}``:
    ``id`` when the item parses, ``rule``/``detail``/``ts`` from the daemon's
    ``<file>.reason.json`` (``{"rule", "detail", "ts", "file"}``).
    """
    items = []
    for agent in agents:
        pdir = box_path(home, agent, "poison")
        names = box_entries(pdir)
        present = set(names)
        for name in poisoned_names(names):
            env, _ = read_json_file(os.path.join(pdir, name), max_bytes)
            reason_file = name + REASON_SUFFIX if name + REASON_SUFFIX in present else None
            reason, reason_error = (
                read_json_file(os.path.join(pdir, reason_file), REASON_MAX_BYTES)
                if reason_file
                else (None, "no reason file")
            )
            r = reason or {}
            items.append(
                {
                    "agent": agent,
                    "file": name,
                    "id": str_or_none((env or {}).get("id")),
                    "rule": str_or_none(r.get("rule")),
                    "detail": str_or_none(r.get("detail")),
                    "ts": str_or_none(r.get("ts")),
                    "reason_file": reason_file,
                    "reason_error": reason_error,
                }
            )
    return items


def cmd_channel_poison(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    home = home_of(environ)
    agents = [parse_agent(args.agent)] if args.agent else channel_agents(home)
    items = poisoned(home, agents, setting(environ, "envelope_max_bytes", 256 * 1024))
    rows = [
        (
            i["agent"],
            i["file"],
            short_id(i["id"]),
            i["rule"],
            i["ts"],
            preview(i["detail"] if i["reason_error"] is None else f"! {i['reason_error']}", 60),
        )
        for i in items
    ]
    text = table(("AGENT", "FILE", "ID", "RULE", "POISONED", "DETAIL"), rows) if rows else ""
    out(args, {"items": items}, text or "nothing poisoned")
    return 0


def find_poisoned(items: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The one item whose id or file name equals ``key``, else the one they start with.

    Raises NoMatch, or AmbiguousMatch carrying the candidates.
    """
    matches = [i for i in items if key in (i["id"], i["file"])] or [
        i for i in items if (i["id"] or "").startswith(key) or i["file"].startswith(key)
    ]
    if not matches:
        n = len(items)
        where = f"{n} poisoned, see 'netskyctl channel poison'" if n else "nothing is poisoned"
        raise NoMatch(f"no poisoned envelope matches {key!r} ({where})")
    if len(matches) > 1:
        listing = "".join(f"\n  {i['agent']}  {i['file']}" for i in matches)
        raise AmbiguousMatch(
            f"{key!r} matches {len(matches)} poisoned envelopes; give more of the id or "
            f"the file name, or --agent:{listing}",
            [{"agent": i["agent"], "file": i["file"], "id": i["id"]} for i in matches],
        )
    return matches[0]


def _unused(path: str) -> str:
    """``path``, or ``<stem>.<n>.reason.json`` when an earlier retry left that name."""
    n = 0
    candidate = path
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path[: -len(REASON_SUFFIX)]}.{n}{REASON_SUFFIX}"
    return candidate


def retry(home: str, item: dict[str, Any], inbox_max_pending: int) -> dict[str, Any]:
    """Put a poisoned item back into its agent's inbox; keep its reason in ``poison/.retried/``.

    Maildir delivery again: one rename inside the agent's channel dir (one
    filesystem, atomic), then fsync of the directories. Returns ``{agent, file,
    id, path, reason_path}``. Raises InboxFull (the item stays in poison/),
    NotRetryable, OSError.
    """
    from pathlib import Path

    from netsky_shared.maildir import fsync_dir, pending_count
    from netsky_shared.paths import Paths

    agent, name = item["agent"], item["file"]
    pdir, inbox = box_path(home, agent, "poison"), box_path(home, agent, "inbox")
    src, dst = os.path.join(pdir, name), os.path.join(inbox, name)
    mode = os.lstat(src).st_mode
    if not stat.S_ISREG(mode):
        raise NotRetryable(
            f"{agent}/poison/{name} is {kind_of(mode)}, not a regular file: the daemon "
            "would poison it again; remove it instead"
        )
    pending = pending_count(Paths(Path(home)), agent)
    if pending >= inbox_max_pending:
        raise InboxFull(
            f"inbox of {agent} is full: {pending} envelopes pending "
            f"(inbox_max_pending={inbox_max_pending}); {name} stays in poison/, try again later"
        )
    os.makedirs(inbox, exist_ok=True)
    if os.path.lexists(dst):
        raise NotRetryable(f"{agent}/inbox/{name} already exists; not overwriting it")
    os.rename(src, dst)
    fsync_dir(Path(inbox))
    reason_path = None
    if item["reason_file"]:
        retried = os.path.join(pdir, ".retried")
        os.makedirs(retried, exist_ok=True)
        target = _unused(os.path.join(retried, item["reason_file"]))
        try:
            os.rename(os.path.join(pdir, item["reason_file"]), target)
            fsync_dir(Path(retried))
            reason_path = target
        except FileNotFoundError:
            pass
    fsync_dir(Path(pdir))
    return {"agent": agent, "file": name, "id": item["id"], "path": dst, "reason_path": reason_path}


def cmd_channel_retry(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    key = args.id.strip()
    if not key:
        raise Usage("channel retry needs an envelope id or file name (or a prefix of one)")
    home = home_of(environ)
    agents = [parse_agent(args.agent)] if args.agent else channel_agents(home)
    items = poisoned(home, agents, setting(environ, "envelope_max_bytes", 256 * 1024))
    res = retry(home, find_poisoned(items, key), setting(environ, "inbox_max_pending", 1000))
    out(args, res, f"{res['file']} is back in {res['agent']}'s inbox")
    return 0
