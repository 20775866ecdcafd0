"""An owner's message into agent0's inbox, or into its ``poison/`` with the reason
(docs/owner.md). Blocking file work: callers run these in a worker thread.

The envelope's id is the item's own (``Inbound.envelope_id``), so delivering the same
item twice (a crash after the send and before the cursor moved) finds it already in one
of agent0's boxes and does nothing. A quarantined item is written as the envelope it
would have been (its text as read: ``channel retry`` can put it in the inbox once the
reason is gone, e.g. for a rate-limited one) beside ``<name>.reason.json``, the bus's
poison format (``{"rule", "detail", "ts", "file"}``), so ``netskyctl channel poison``
lists it with the bus's own rejects.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from netsky_shared.ids import ROOT, rfc3339
from netsky_shared.maildir import (
    atomic_write_bytes,
    envelope_filename,
    fsync_dir,
    new_envelope,
    publish,
    stage,
)
from netsky_shared.paths import Paths
from netskyd.owner.inbound import Inbound

#: The boxes an envelope may be in once sent (``tmp/`` is not "sent").
BOXES = ("inbox", "claimed", "delivered", "poison")
_CHAT_ID = re.compile(r"[^A-Za-z0-9_.:@+-]")


def chat_id_of(item: Inbound) -> str:
    """The envelope's ``chat_id``: the item's conversation in the characters the bus
    allows (others become ``_``), at most 64."""
    return (_CHAT_ID.sub("_", item.chat_id) or item.source)[:64]


def envelope_of(item: Inbound, *, checked: bool = True) -> dict[str, Any]:
    """The envelope for ``item``: from ``owner`` to agent0, ``source`` set, the id derived
    from the item. ``checked=False`` skips the bus's text rules (for a quarantine copy)."""
    ts_ns = time.time_ns()
    if checked:
        env = new_envelope("owner", ROOT, item.body(), chat_id=chat_id_of(item),
                           ts_ns=ts_ns, source=item.source)  # fmt: skip
    else:
        env = {
            "v": 1, "id": "", "from": "owner", "to": ROOT, "ts": rfc3339(ts_ns / 1e9),
            "kind": "message", "text": item.body(), "chat_id": chat_id_of(item),
            "in_reply_to": None, "source": item.source, "_ts_ns": ts_ns,
        }  # fmt: skip
    env["id"] = item.envelope_id()
    return env


def already_there(paths: Paths, envelope_id: str) -> bool:
    """True when an envelope with this id is in one of agent0's boxes."""
    suffix = f"-owner-{envelope_id}.json"
    for box in BOXES:
        d = paths.channel(ROOT, box)
        if d.is_dir() and any(n.endswith(suffix) for n in _names(d)):
            return True
    return False


def _names(d: Any) -> list[str]:
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


def deliver(paths: Paths, item: Inbound, *, envelope_max_bytes: int) -> tuple[str, bool]:
    """Put ``item`` in agent0's inbox unless it is there already; returns (envelope id,
    sent now). The inbox limit does not apply: the owner's message is never refused.
    Raises OSError, BadText (the caller checked the text first), EnvelopeTooLarge."""
    env = envelope_of(item)
    if already_there(paths, env["id"]):
        return env["id"], False
    tmp = stage(paths, env, inbox_max_pending=1 << 30, envelope_max_bytes=envelope_max_bytes)
    publish(tmp)
    return env["id"], True


def quarantine(paths: Paths, item: Inbound, rule: str, detail: str) -> str:
    """Write ``item`` into agent0's ``poison/`` with its reason; returns the file name.
    Writing the same item twice keeps one copy."""
    env = envelope_of(item, checked=False)
    name = envelope_filename(env)
    poison = paths.channel(ROOT, "poison")
    poison.mkdir(parents=True, exist_ok=True)
    suffix = f"-owner-{env['id']}.json"
    for existing in _names(poison):
        if existing.endswith(suffix):
            return existing
    body = {k: v for k, v in env.items() if not k.startswith("_")}
    reason = {"rule": rule, "detail": detail, "ts": rfc3339(time.time()), "file": name,
              "source": item.source, "ref": item.ref, "sender": item.sender}  # fmt: skip
    atomic_write_bytes(poison / f"{name}.reason.json",
                       (json.dumps(reason, indent=2) + "\n").encode(), sync_dir=False)  # fmt: skip
    atomic_write_bytes(poison / name, (json.dumps(body, ensure_ascii=False) + "\n").encode(),
                       sync_dir=False)  # fmt: skip
    fsync_dir(poison)
    return name
