"""Outbox entries: replies a runtime writes to a file instead of pasting (e.g. Codex).

A runtime that cannot type into another agent's pane writes a file into its own
``channels/agent/<agent>/outbox/`` (path in ``NETSKY_OUTBOX``). The bus turns each
entry into an envelope *from the owning agent* — whatever the file claims — and
sends it to its target's inbox. Accepted forms:

- ``*.json``: an object ``{"text": str, "to"?: agent id (default agent0),
  "kind"?: envelope kind (default "message"), "in_reply_to"?: envelope id}``;
  other keys (``from``, ``id``, ``ts``, ...) are ignored and rewritten.
- any other name: the whole file is the UTF-8 text of a message to agent0.

The envelope id is derived from the agent, the file name, its mtime and its
bytes, and ``ts`` is the file's mtime, so forwarding the same entry twice (a crash
between the send and the unlink) lands on the same inbox name and id instead of
sending a second message. Errors raise EnvelopeRejected with an ``outbox-*`` rule
or the bus's usual rules (``not-regular-file``, ``too-large``, ``bad-agent-id``, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from netsky_shared.errors import EnvelopeRejected, UnknownAgent
from netsky_shared.ids import ROOT
from netsky_shared.maildir import BadText, new_envelope
from netskyd.bus.validate import parse, read_capped

_FIELDS = ("text", "to", "kind", "in_reply_to")


def envelope_for(agent: str, path: Path, max_bytes: int) -> dict[str, Any]:
    """Build the envelope (``netsky_shared.maildir`` dict, with ``_ts_ns``) for one outbox entry.

    Raises EnvelopeRejected naming the rule the entry breaks.
    """
    raw = read_capped(path, max_bytes)
    mtime_ns = os.lstat(path).st_mtime_ns
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EnvelopeRejected("not-utf8", str(e)) from e
    fields: dict[str, Any] = {"text": body, "to": ROOT, "kind": "message", "in_reply_to": None}
    if path.name.endswith(".json"):
        try:
            value = json.loads(body)
        except json.JSONDecodeError as e:
            raise EnvelopeRejected("not-json", str(e)) from e
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise EnvelopeRejected("outbox-schema", 'expected an object with a string "text"')
        fields.update({k: value[k] for k in _FIELDS if value.get(k) is not None})
    digest = hashlib.sha256(f"{agent}\0{path.name}\0{mtime_ns}\0".encode() + raw).hexdigest()
    try:
        envelope = new_envelope(
            agent,
            str(fields["to"]),
            str(fields["text"]),
            kind=str(fields["kind"]),
            in_reply_to=fields["in_reply_to"],
            chat_id=agent,
            ts_ns=mtime_ns,
        )
    except UnknownAgent as e:
        raise EnvelopeRejected("bad-agent-id", str(e)) from e
    except BadText as e:
        raise EnvelopeRejected(e.rule, str(e)) from e
    except ValueError as e:
        raise EnvelopeRejected("outbox-schema", str(e)) from e
    envelope["id"] = digest[:32]
    # The same checks the receiving bus applies, so a bad reply is poisoned here, at its
    # author's channel, not in the target's inbox.
    parse(json.dumps({k: v for k, v in envelope.items() if not k.startswith("_")}).encode())
    return envelope
