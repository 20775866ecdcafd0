"""Outbox forwarding: what a runtime wrote into its ``outbox/``, sent on as envelopes.

A mixin of ``netskyd.bus.watcher.Bus``, which schedules ``forward_outbox(agent)`` when the
watch sees a new file in ``channels/agent/<agent>/outbox/`` (and at each rescan). Turning
one entry into an envelope is ``netskyd.bus.outbox.envelope_for``; sending it is
``netsky_shared.maildir.send`` (``tmp/``, fsync, rename into the target's ``inbox/``, fsync
the directory); only then is the entry unlinked. A crash in between forwards it again, but
its id and inbox name derive from the entry, so it is still one message (docs/bus.md,
"Outbox").
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from netsky_shared.errors import EnvelopeRejected, InboxFull
from netsky_shared.maildir import box_entries, send
from netskyd.bus import outbox

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.ports import SettingsView
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder


class Forwarding:
    """Forwards outbox entries; the host class provides ``settings``, ``recorder``,
    ``store``, ``paths``, ``forwarded_count`` and, from ``netskyd.bus.claims.Claims``,
    ``poison_many``."""

    settings: SettingsView
    recorder: Recorder
    store: Store
    forwarded_count: int

    # Declared for the type checker only: a runtime stub could shadow the real method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        async def poison_many(self, agent: str, items: list[tuple[Path, str, str]]) -> None: ...

    async def forward_outbox(self, agent: str) -> int:
        """Forward what ``agent``'s runtime wrote into its ``outbox/`` (see netskyd.bus.outbox).

        Each entry becomes an envelope from ``agent`` (whatever it claims) to its ``to``
        (agent0 by default); a bad entry is poisoned in ``agent``'s channel; a full
        target inbox leaves the entry for the next tick. Returns how many were forwarded.
        """
        s = self.settings()
        box = self.paths.channel(agent, "outbox")
        forwarded = 0
        bad: list[tuple[Path, str, str]] = []
        for name in box_entries(box):
            f = box / name
            try:
                envelope = outbox.envelope_for(agent, f, s.envelope_max_bytes)
                landed = send(
                    self.paths,
                    envelope,
                    inbox_max_pending=s.inbox_max_pending,
                    envelope_max_bytes=s.envelope_max_bytes,
                )
            except EnvelopeRejected as e:
                bad.append((f, e.rule, e.detail))
                continue
            except InboxFull as e:
                await self.recorder.event(
                    "envelope.forward_deferred", level="warning", agent=agent, file=name,
                    error=str(e),
                )
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
            forwarded += 1
            await self.recorder.event(
                "envelope.forwarded", agent=agent, file=name, envelope_id=envelope["id"],
                to=envelope["to"], kind=envelope["kind"], landed=landed.name,
            )
            await self.store.add_messages(
                [
                    {
                        "envelope_id": envelope["id"],
                        "sender": agent,
                        "recipient": envelope["to"],
                        "kind": envelope["kind"],
                        "envelope_ts": envelope["ts"],
                        "file": landed.name,
                        "status": "forwarded",
                        "via": "outbox",
                    }
                ]
            )
        if bad:
            await self.poison_many(agent, bad)
        self.forwarded_count += forwarded
        return forwarded
