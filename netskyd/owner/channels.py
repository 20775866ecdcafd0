"""The owner's line in the daemon: one task per configured source (docs/owner.md).

``OwnerChannels.run`` starts a loop per source that is configured and enabled:

- **email**: connect (``netskyd.owner.imap.Mailbox``), start from the durable cursor
  (``owner.email.<uidvalidity>`` in meta.db's ``cursors``: the last UID handled; a new
  UIDVALIDITY, or none yet, starts at the newest message, so old mail is not replayed),
  take every newer message, then IDLE (or sleep ``poll_s``) and again;
- **imessage**: read rows of the Messages database newer than the cursor
  (``owner.imessage``: the last ROWID handled) every ``poll_s``.

Each message: parsed into an ``Inbound`` (a message that cannot be is quarantined),
then ``admit``: delivered into agent0's inbox, dropped (not on the allowlist; a journal row,
counted), quarantined into agent0's ``poison/`` (over the sender's rate, too large, the
bus's rules), and only then the cursor moves. A crash between fetch and delivery fetches
the message again; a crash between delivery and the cursor finds it already delivered.

A source that cannot connect, log in or read is ``failing``: after two failures in a row
an incident ``source:<name>`` is raised on the other legs (not the one that is failing),
once; it is resolved when the source works again. The loop retries with backoff (from
``poll_s`` up to 5 minutes); every call has the source's ``timeout_s``, and nothing here
runs on the tick.

Journal events: ``owner.received``, ``owner.dropped``, ``owner.quarantined``,
``owner.source_failing``, ``owner.source_ok``, ``owner.cursor`` (a new UIDVALIDITY).
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from netsky_shared.ids import rfc3339
from netskyd.config.legs import LegUnavailable
from netskyd.faults import crash_point
from netskyd.owner import deliver as box
from netskyd.owner import imessage as messages_db
from netskyd.owner import mail
from netskyd.owner.imap import ImapError, Mailbox
from netskyd.owner.inbound import Inbound, Quarantine, admit, allowed
from netskyd.owner.outbound import Outbound
from netskyd.ports import Clock, Pager, SettingsView
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.timing import exp_backoff_s

#: Failures in a row before the source's incident is raised (one blip is not a page).
FAILURES_BEFORE_PAGE = 2
#: Longest wait between retries of a failing source.
RETRY_CAP_S = 300.0
#: Messages taken from a source in one go.
BATCH = 100


@dataclass
class SourceState:
    """What ``status`` and ``doctor`` show of one source."""

    name: str
    state: str = "starting"  # starting | ok | failing | unavailable
    since: str = ""
    error: str | None = None
    last_message_ts: str | None = None
    delivered: int = 0
    dropped: int = 0
    quarantined: int = 0
    idle: bool | None = None
    failures: int = 0
    incident: bool = False


class OwnerChannels(Outbound):
    """The owner's inbound sources (this module) and outbound verbs (``Outbound``)."""

    def __init__(
        self,
        *,
        settings: SettingsView,
        environ: Mapping[str, str],
        store: Store,
        recorder: Recorder,
        pager: Pager,
        clock: Clock = time.time,
        platform: str = sys.platform,
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.store = store
        self.recorder = recorder
        self.pager = pager
        self.clock = clock
        self.platform = platform
        self.sources: dict[str, SourceState] = {}
        #: Per (source, sender): when each of the last hour's deliveries was.
        self._recent: dict[tuple[str, str], collections.deque[float]] = {}

    async def run(self, *, task_status: anyio.abc.TaskStatus[OwnerChannels]) -> None:
        """Start a loop per configured source; say started at once (the sources connect
        in the background)."""
        owner = self.settings().owner
        async with anyio.create_task_group() as tg:
            if owner.email is not None and owner.email.enabled:
                self.sources["email"] = SourceState("email", since=rfc3339(self.clock()))
                tg.start_soon(self._email_loop)
            if owner.imessage is not None and owner.imessage.enabled:
                self.sources["imessage"] = SourceState("imessage", since=rfc3339(self.clock()))
                tg.start_soon(self._imessage_loop)
            task_status.started(self)

    def rows(self) -> list[dict[str, Any]]:
        """Each source's state (``SourceState`` as a dict), for ``status`` and ``doctor``."""
        return [asdict(s) for s in self.sources.values()]

    # ----- health -----------------------------------------------------------------------------

    async def _ok(self, st: SourceState) -> None:
        st.failures = 0
        if st.state != "ok":
            was = st.state
            st.state, st.since, st.error = "ok", rfc3339(self.clock()), None
            await self.recorder.event("owner.source_ok", source=st.name, was=was)
        if st.incident:
            st.incident = False
            await self.pager.resolve(f"source:{st.name}", f"the {st.name} source works again")

    async def _failing(self, st: SourceState, error: str, *, unavailable: bool = False) -> None:
        st.failures += 1
        state = "unavailable" if unavailable else "failing"
        if st.state != state or st.error != error:
            st.state, st.since, st.error = state, rfc3339(self.clock()), error
            await self.recorder.event("owner.source_failing", level="warning", source=st.name,
                                      state=state, error=error)  # fmt: skip
        if unavailable or st.incident or st.failures < FAILURES_BEFORE_PAGE:
            return
        st.incident = True
        try:
            await self.pager.escalate(
                f"the owner's {st.name} line is down: {error[:120]}",
                f"netskyd cannot read the owner's {st.name} ({error}). Messages sent to "
                f"agent0 that way wait at the source and arrive once it works again; "
                f"'netskyctl status' shows the source's state.",
                f"source:{st.name}",
                "warning",
                exclude_legs=[st.name],
            )
        except (ValueError, OSError) as e:  # the pager's own trouble: logged, retried next time
            st.incident = False
            await self.recorder.event("owner.page_failed", level="error", source=st.name,
                                      error=str(e))  # fmt: skip

    async def _retry_wait(self, st: SourceState, poll_s: float) -> None:
        await anyio.sleep(exp_backoff_s(st.failures, min(poll_s, 5.0), RETRY_CAP_S))

    # ----- one message ------------------------------------------------------------------------

    def _rate(self, item: Inbound) -> int:
        window = self._recent.setdefault((item.source, item.sender.lower()), collections.deque())
        now = self.clock()
        while window and window[0] < now - 3600:
            window.popleft()
        return len(window)

    async def take(self, st: SourceState, item: Inbound | Quarantine, ref: str) -> None:
        """Decide and act on one message (module docstring). Raises OSError (a full disk:
        the cursor does not move, the message is read again)."""
        cfg = getattr(self.settings().owner, st.name)
        paths = self.settings().paths
        if isinstance(item, Quarantine):
            stub = Inbound(st.name, ref, "unknown", st.name, self.clock(), None,  # type: ignore[arg-type]
                           f"(a message netskyd could not read: {item.reason})")  # fmt: skip
            name = await anyio.to_thread.run_sync(box.quarantine, paths, stub, "unreadable",
                                                  item.reason)  # fmt: skip
            st.quarantined += 1
            await self.recorder.event(
                "owner.quarantined", level="warning", source=st.name, ref=ref,
                rule="unreadable", reason=item.reason, file=name,
            )  # fmt: skip
            return
        # Only an allowed sender has a rate window: a stranger's mail must not grow one.
        recent = self._rate(item) if allowed(item.sender, cfg.allow) else 0
        verdict, why = admit(item, cfg.allow, recent, cfg.rate_per_hour, cfg.max_text_bytes)
        if verdict == "drop":
            st.dropped += 1
            await self.recorder.event("owner.dropped", source=st.name, ref=ref,
                                      sender=item.sender, reason=why)  # fmt: skip
            return
        if verdict in ("limited", "quarantine"):
            rule = "rate-limit" if verdict == "limited" else why.split(":", 1)[0]
            name = await anyio.to_thread.run_sync(box.quarantine, paths, item, rule, why)
            st.quarantined += 1
            await self.recorder.event("owner.quarantined", level="warning", source=st.name,
                                      ref=ref, sender=item.sender, rule=rule, reason=why,
                                      file=name)  # fmt: skip
            return
        max_bytes = max(self.settings().envelope_max_bytes, cfg.max_text_bytes + 4096)
        envelope_id, sent = await anyio.to_thread.run_sync(
            lambda: box.deliver(paths, item, envelope_max_bytes=max_bytes)
        )
        self._recent[(item.source, item.sender.lower())].append(self.clock())
        st.delivered += 1
        st.last_message_ts = rfc3339(self.clock())
        await self.recorder.event("owner.received", source=st.name, ref=ref, sender=item.sender,
                                  envelope_id=envelope_id, again=not sent)  # fmt: skip

    # ----- email ------------------------------------------------------------------------------

    async def _email_loop(self) -> None:
        st = self.sources["email"]
        while True:
            cfg = self.settings().owner.email
            assert cfg is not None
            try:
                password = cfg.password.resolve(self.environ)
                async with Mailbox(cfg, password) as mb:
                    st.idle = mb.idle
                    name = f"owner.email.{mb.uidvalidity}"
                    known = await self.store.cursor_or_none(name)
                    if known is None:
                        cursor = await mb.max_uid()
                        await self.store.set_cursor(name, cursor)
                        await self.recorder.event("owner.cursor", source="email", cursor=name,
                                                  uid=cursor)  # fmt: skip
                    else:
                        cursor = known
                    await self._ok(st)
                    while True:
                        for uid in (await mb.uids_after(cursor))[:BATCH]:
                            await self._take_mail(st, mb, uid)
                            cursor = uid
                            await self.store.set_cursor(name, cursor)
                        await mb.wait(cfg.idle_s if mb.idle else cfg.poll_s)
                        await self._ok(st)
            except (ImapError, LegUnavailable, OSError) as e:
                await self._failing(st, str(e))
                await self._retry_wait(st, cfg.poll_s)

    async def _take_mail(self, st: SourceState, mb: Mailbox, uid: int) -> None:
        cfg = mb.cfg
        ref = f"email:{mb.uidvalidity}:{uid}"
        size = await mb.size(uid)
        if size is None:
            return  # gone (expunged) between the search and now
        item: Inbound | Quarantine
        if size > cfg.max_bytes:
            item = Quarantine(f"message is {size} bytes; at most {cfg.max_bytes} (not fetched)")
        else:
            raw = await mb.fetch(uid)
            if raw is None:
                return
            crash_point(self.settings(), "owner.fetched")
            item = await anyio.to_thread.run_sync(self._parse, raw, mb.uidvalidity, uid,
                                                  cfg.max_bytes)  # fmt: skip
        await self.take(st, item, ref)

    @staticmethod
    def _parse(raw: bytes, uidvalidity: int, uid: int, max_bytes: int) -> Inbound | Quarantine:
        """``mail.parse`` in a worker thread (a hostile mail may take a second)."""
        try:
            return mail.parse(raw, uidvalidity=uidvalidity, uid=uid, max_bytes=max_bytes)
        except Quarantine as q:
            return q

    # ----- iMessage ---------------------------------------------------------------------------

    async def _imessage_loop(self) -> None:
        st = self.sources["imessage"]
        name = "owner.imessage"
        while True:
            cfg = self.settings().owner.imessage
            assert cfg is not None
            path = cfg.db.expanduser()
            try:
                with anyio.fail_after(cfg.timeout_s):
                    conn = await anyio.to_thread.run_sync(messages_db.open_ro, path, cfg.timeout_s)
                try:
                    known = await self.store.cursor_or_none(name)
                    if known is None:
                        cursor = await anyio.to_thread.run_sync(messages_db.max_rowid, conn)
                        await self.store.set_cursor(name, cursor)
                    else:
                        cursor = known
                    while True:
                        with anyio.fail_after(cfg.timeout_s):
                            rows = await anyio.to_thread.run_sync(
                                messages_db.read_new, conn, cursor, BATCH
                            )
                        await self._ok(st)
                        for rowid, item in rows:
                            ref = item.ref if isinstance(item, Inbound) else f"imessage:{rowid}"
                            await self.take(st, item, ref)
                            cursor = rowid
                            await self.store.set_cursor(name, cursor)
                        await anyio.sleep(cfg.poll_s)
                finally:
                    conn.close()
            except messages_db.SourceUnavailable as e:
                await self._failing(st, str(e), unavailable=True)
                await anyio.sleep(max(cfg.poll_s, 60.0))
            except (TimeoutError, OSError, sqlite3.Error) as e:
                await self._failing(st, f"{type(e).__name__}: {e}")
                await self._retry_wait(st, cfg.poll_s)
