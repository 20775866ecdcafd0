"""The escalation floor shared by netskyd and ``netskyctl escalate --direct``.

Everything in the floor works on files only (``state/escalations/``,
``state/owner-pages.jsonl``, ``state/legs.json``) under the incidents flock, so the daemon, a
``--direct`` run from the shim and ``netskyctl ack`` can act on the same incidents at once
without undoing each other. The daemon (netskyd.escalation.spool) adds the journal, meta.db
and the spool.

This module is the floor's face: callers use ``pager.X``. The code lives by concern:

- netskyd.escalation.lifecycle: the incident files (``open_or_join``, ``resolve``, ``due``,
  ``claim_round``, ``archive_closed``);
- netskyd.escalation.rounds: a page round (``targets``, ``make_page``, ``send_all``,
  ``finish_round`` with the rows of ``state/owner-pages.jsonl``, ``run_round``);
- netskyd.escalation.leg_health: each leg's record in ``state/legs.json`` and the page
  about a leg that keeps failing;
- netskyd.escalation.direct_send: the ``--direct`` sender, each leg in a process of its own.

One escalation, step by step (each step's rules are in its module's docstring):

1. ``open_or_join``: the open incident with this key is *joined* inside the quiet period,
   *re-paged* after it or when more severe, else one is *opened*; opening and re-paging
   start a round, its ``round_ts`` a lease so nobody else sends it meanwhile.
2. ``targets``: the configured legs that take this severity, minus ``exclude_legs``.
3. ``send_all``: every target at once, each bounded by the leg timeout; in the daemon
   in-process, with ``--direct`` each leg in its own process.
4. ``finish_round``: each leg's outcome into the incident (a failed leg is retried,
   backing off), one audit row per leg, and the leg's health; a leg now failing, or
   recovered, is reported back so the caller can page about it or close that page.

Later rounds: ``due`` finds an incident with a failed leg whose retry time has come, or a
round whose sender died (its lease ran out); ``claim_round`` takes it.
"""

from __future__ import annotations

from netskyd.escalation.direct_send import send_in_process_of_its_own
from netskyd.escalation.leg_health import leg_failing_text, read_health
from netskyd.escalation.lifecycle import (
    Action,
    Decision,
    archive_closed,
    claim_round,
    due,
    open_or_join,
    resolve,
)
from netskyd.escalation.rounds import (
    DEFAULT_HOME,
    Outcome,
    Sender,
    ack_command,
    append_audit,
    finish_round,
    leg_context,
    make_page,
    open_summary,
    run_round,
    send_all,
    targets,
)

__all__ = [
    "DEFAULT_HOME",
    "Action",
    "Decision",
    "Outcome",
    "Sender",
    "ack_command",
    "append_audit",
    "archive_closed",
    "claim_round",
    "due",
    "finish_round",
    "leg_context",
    "leg_failing_text",
    "make_page",
    "open_or_join",
    "open_summary",
    "read_health",
    "resolve",
    "run_round",
    "send_all",
    "send_in_process_of_its_own",
    "targets",
]
