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

from netskyd.ids import is_agent_id, is_sender_id

Kind = Literal["message", "brief", "handoff", "cron", "loop", "escalation", "harvest"]
_CHANNEL_TAG = re.compile(r"</?\s*channel\b", re.IGNORECASE)


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
    chat_id: str = Field(min_length=1, max_length=64)
    in_reply_to: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        if not is_sender_id(v):
            raise ValueError(f"not an agent id or pseudo-sender: {v!r}")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        if not is_agent_id(v):
            raise ValueError(f"not an agent id: {v!r}")
        return v

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: str) -> str:
        try:
            parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError(f"timestamp is not RFC 3339: {v!r}") from e
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp has no time zone: {v!r}")
        return v

    @field_validator("text")
    @classmethod
    def _no_wrapper_injection(cls, v: str) -> str:
        if _CHANNEL_TAG.search(v):
            raise ValueError("text contains a <channel> or </channel> tag (wrapper injection)")
        return v

    def to_json(self) -> dict[str, Any]:
        """The on-disk JSON object (``from``, not ``sender``)."""
        return self.model_dump(by_alias=True)


def render_channel(envelopes: list[Envelope]) -> str:
    """Render envelopes as ``<channel source="agent" ...>`` blocks, one after another."""
    blocks = []
    for env in envelopes:
        attrs = " ".join(
            f'{k}="{html.escape(v, quote=True)}"'
            for k, v in (
                ("source", "agent"),
                ("chat_id", env.chat_id),
                ("from", env.sender),
                ("ts", env.ts),
            )
        )
        blocks.append(f"<channel {attrs}>\n{env.text}\n</channel>")
    return "\n".join(blocks)
