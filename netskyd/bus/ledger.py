"""Consumption records: whether each delivered batch was taken, and what follows.

The bus hands every confirmed pane delivery (``netskyd.bus.delivery.Consumption``) to
``Ledger.record``, which

- journals ``envelope.consumed`` or ``envelope.unconsumed`` (one row per envelope,
  the latter with the reason and the last screen lines) and sets the rows'
  ``consumption`` / ``consumed_at`` / ``enter_retries`` in meta.db;
- counts unconsumed envelopes in a row per agent: at ``unconsumed_page_after`` the
  owner is paged (``escalate`` key ``unconsumed:<agent>``; later ones join the open
  incident), and the agent's next consumed envelope resolves it (all-clear).

An unconsumed envelope stays delivered: it is in the pane and is never pasted twice;
``consumption`` is a flag on its record. ``report`` is what ``why`` shows of it.
Source: issue 14 ("Submitted, then confirmed"), docs/bus.md "Consumed".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netsky_shared.errors import NetskyError
from netskyd.bus.delivery import Consumption
from netskyd.bus.envelope import Envelope
from netskyd.ports import Pager, SettingsView
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder


class Ledger:
    """Consumption results of one daemon's deliveries (module docstring)."""

    def __init__(
        self, *, settings: SettingsView, recorder: Recorder, store: Store, pager: Pager
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.store = store
        self.pager = pager
        self.consumed_count = 0
        self.unconsumed_count = 0
        #: Unconsumed envelopes in a row, per agent (reset by a consumed one).
        self._unconsumed_streak: dict[str, int] = {}
        #: Agents paged about (``unconsumed:<agent>``) and not resolved yet.
        self._paged_unconsumed: set[str] = set()

    async def record(
        self, agent: str, batch: list[tuple[Path, Envelope]], result: Consumption
    ) -> None:
        """Journal ``envelope.consumed`` / ``envelope.unconsumed`` (one row per envelope),
        then set the rows' ``consumption``; page after ``unconsumed_page_after`` in a
        row, resolve that page on the next consumed one."""
        ids = [env.id for _, env in batch]
        rows: list[dict[str, Any]] = [
            {
                "agent": agent,
                "envelope_id": env.id,
                "file": f.name,
                "consumption": result.state,
                "consumed_at": result.consumed_at,
                "after_ms": result.after_ms,
                "retried": result.retried,
            }
            for f, env in batch
        ]
        if result.state == "unconsumed":
            for r in rows:
                r.update(reason=result.reason, screen=list(result.screen))
            await self.recorder.events("envelope.unconsumed", rows, level="warning")
        elif result.state == "consumed":
            await self.recorder.events("envelope.consumed", rows)
        await self.store.set_consumption(
            agent, ids, result.state, result.consumed_at, result.retried
        )
        if result.state == "consumed":
            self.consumed_count += len(batch)
            self._unconsumed_streak[agent] = 0
            await self._resolve_unconsumed(agent)
        elif result.state == "unconsumed":
            self.unconsumed_count += len(batch)
            streak = self._unconsumed_streak.get(agent, 0) + len(batch)
            self._unconsumed_streak[agent] = streak
            if streak >= self.settings().unconsumed_page_after:
                await self._page_unconsumed(agent, streak, ids, result)

    async def _page_unconsumed(
        self, agent: str, streak: int, ids: list[str], result: Consumption
    ) -> None:
        body = (
            f"{agent} has not taken the last {streak} envelopes pasted into its pane "
            f"({result.reason or 'not consumed'}; Enter was pressed "
            f"{'twice' if result.retried else 'once'}). They stay delivered and are not "
            f"pasted again. Latest: {', '.join(ids)}. See: netskyctl why {agent}; "
            f"netskyctl channel ls {agent} --json."
        )
        if result.screen:
            body += "\nIts screen ends:\n" + "\n".join(f"  | {ln}" for ln in result.screen)
        try:
            await self.pager.escalate(
                f"{agent} is not taking its envelopes", body, f"unconsumed:{agent}"
            )
        except (NetskyError, OSError, ValueError) as e:
            await self.recorder.event(
                "bus.page_failed", level="error", agent=agent, error=f"{type(e).__name__}: {e}"
            )
            return
        self._paged_unconsumed.add(agent)

    async def _resolve_unconsumed(self, agent: str) -> None:
        key = f"unconsumed:{agent}"
        if agent not in self._paged_unconsumed and not self.pager.is_open(key):
            return  # the hot path: nothing open, no incident files read
        try:
            await self.pager.resolve(key, f"{agent} took an envelope again.")
        except (NetskyError, OSError) as e:
            await self.recorder.event(
                "bus.resolve_failed", level="error", agent=agent, error=f"{type(e).__name__}: {e}"
            )
            return
        self._paged_unconsumed.discard(agent)

    async def report(self, agent: str, delivered: list[str], limit: int = 20) -> dict[str, Any]:
        """What ``agent`` was given and did not take (``Store.unconsumed``), plus
        ``in_delivered``: ids of every unconsumed envelope among ``delivered`` (the
        names now in its ``delivered/``).

        Shape: ``{"streak", "envelopes": [{"id", "file", "delivered_ts", "submitted_at",
        "enter_retries"}], "last_consumed_at", "in_delivered": [ids]}``."""
        report = await self.store.unconsumed(agent, limit)
        report["in_delivered"] = await self.store.unconsumed_in(agent, delivered)
        return report
