"""The envelope schema (pydantic) and its rendering as a ``<channel>`` block.

Schema source: ARCHITECTURE.md, "The agent bus". Rendering matches what Claude
Code 2.1.x shows as ``← agent: <text>``: the text goes on its own lines between
the opening and closing tags.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from netsky_shared.ids import is_agent_id, is_sender_id

Kind = Literal["message", "brief", "report", "handoff", "cron", "loop", "escalation", "harvest"]
_CHANNEL_TAG = re.compile(r"</?\s*channel\b", re.IGNORECASE)
#: C0 controls but tab and newline, DEL and C1: a pasted ESC could end the bracketed
#: paste early (``ESC [201~``) and type the rest as keys; CR would submit half a message.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: Validation errors the bus maps to their own poison rule (the error ``type`` with
#: ``_`` -> ``-``); every other schema error is the rule ``schema``.
RULE_ERRORS = frozenset(
    {"bad_agent_id", "bad_timestamp", "wrapper_injection", "control_characters"}
)


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries a zone (``Z`` or ``+hh:mm``).

    Raises PydanticCustomError ``bad_timestamp`` (a ValueError) when it does not parse.
    """
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise PydanticCustomError(
            "bad_timestamp", "ts is not an RFC 3339 time with a zone: {v}", {"v": repr(value)}
        )
    return parsed


class Envelope(BaseModel):
    """One message on the bus (one JSON file). ``from`` is ``sender`` in Python."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    v: Literal[1]
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    sender: str = Field(alias="from")
    to: str
    ts: str
    kind: Kind
    text: str
    chat_id: str = Field(pattern=r"^[A-Za-z0-9_.:@+-]{1,64}$")
    in_reply_to: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    #: Where it came from: another agent (the bus), or the owner's line (docs/owner.md).
    source: Literal["agent", "email", "imessage"] = "agent"

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        if not is_sender_id(v):
            raise PydanticCustomError(
                "bad_agent_id", "from: not an agent id or pseudo-sender: {v}", {"v": repr(v)}
            )
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        if not is_agent_id(v):
            raise PydanticCustomError("bad_agent_id", "to: not an agent id: {v}", {"v": repr(v)})
        return v

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: str) -> str:
        parse_ts(v)
        return v

    @field_validator("text")
    @classmethod
    def _no_wrapper_injection(cls, v: str) -> str:
        if _CHANNEL_TAG.search(v):
            raise PydanticCustomError(
                "wrapper_injection", "text contains a <channel> or </channel> tag"
            )
        m = _CONTROL.search(v)
        if m:
            raise PydanticCustomError(
                "control_characters",
                "text contains control character U+{code} at offset {at}",
                {"code": f"{ord(m.group()):04X}", "at": m.start()},
            )
        return v

    @property
    def ts_epoch(self) -> float:
        """``ts`` as seconds since the epoch."""
        return parse_ts(self.ts).timestamp()

    def to_json(self) -> dict[str, Any]:
        """The on-disk JSON object (``from``, not ``sender``; ``source`` only when it is
        not ``agent``, as senders write it)."""
        out = self.model_dump(by_alias=True)
        if out["source"] == "agent":
            del out["source"]
        return out


def render_channel(envelopes: list[Envelope]) -> str:
    """Render envelopes as ``<channel source="agent" ...>`` blocks, one after another
    (``source`` is ``email`` or ``imessage`` for the owner's messages).

    ``kind`` appears as an attribute when it is not ``message`` (e.g. ``handoff``).
    """
    blocks = []
    for env in envelopes:
        attrs = " ".join(
            f'{k}="{html.escape(v, quote=True)}"'
            for k, v in (
                ("source", env.source),
                ("chat_id", env.chat_id),
                ("from", env.sender),
                ("ts", env.ts),
                *((("kind", env.kind),) if env.kind != "message" else ()),
            )
        )
        blocks.append(f"<channel {attrs}>\n{env.text}\n</channel>")
    return "\n".join(blocks)
