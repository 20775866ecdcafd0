"""``netskyctl escalate --direct``: page the owner with no daemon (the shim, a dying daemon).

The same floor as the daemon's (netskyd.escalation.pager: incidents, quiet period, audit rows,
leg health) with each leg in a process of its own (``python -m netskyd.escalation.legs``),
so nothing here needs netskyd, its socket or meta.db. Rows written here reach
meta.db when a daemon next runs its spool; failed legs are retried by that spool.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import anyio

from netskyd.config import Settings
from netskyd.config.legs import LegResult
from netskyd.escalation import pager


async def _round(
    settings: Settings,
    environ: Mapping[str, str],
    incident: dict[str, Any],
    kind: Literal["page", "retry", "all-clear"],
) -> tuple[list[LegResult], pager.Outcome]:
    results, outcome = await pager.run_round(
        settings, environ, incident, kind, pager.send_in_process_of_its_own, "direct", time.time
    )
    for f in outcome.failing:
        subject, body = pager.leg_failing_text(f)
        await escalate_direct(
            settings, environ, subject, body, f"leg:{f['leg']}", "warning", [f["leg"]]
        )
    for leg in outcome.recovered:
        closed = pager.resolve(
            settings.paths, f"leg:{leg}", f"The {leg} leg delivered a page again.", time.time()
        )
        if closed is not None:
            await _round(settings, environ, closed, "all-clear")
    return results, outcome


async def escalate_direct(
    settings: Settings,
    environ: Mapping[str, str],
    subject: str,
    body: str,
    key: str,
    severity: str = "warning",
    exclude_legs: list[str] | None = None,
) -> dict[str, Any]:
    """Open, re-page or join the incident for ``key`` and send its round on every leg,
    each in its own process. Returns the EscalateResult (docs/protocol.md) with
    ``via: "direct"``. Raises ValueError (empty key or subject, unknown severity),
    IncidentsBusy, OSError.
    """
    decision = pager.open_or_join(
        settings.paths,
        key,
        subject,
        body,
        severity,
        time.time(),
        settings.escalation_quiet_s,
        exclude_legs or (),
    )
    incident = decision.incident
    results: list[LegResult] = []
    if decision.action != "joined":
        results, outcome = await _round(settings, environ, incident, "page")
        incident = outcome.incident or incident
    return {
        "action": decision.action,
        "incident": incident,
        "results": [
            {"leg": r.leg, "status": r.status, "reason": r.reason, "duration_ms": r.duration_ms}
            for r in results
        ],
        "delivered": [r.leg for r in results if r.status == "delivered"],
        "ack_command": pager.ack_command(settings.home, incident["id"]),
        "via": "direct",
    }


def run(
    settings: Settings,
    environ: Mapping[str, str],
    subject: str,
    body: str,
    key: str,
    severity: str = "warning",
) -> dict[str, Any]:
    """``escalate_direct`` from synchronous code (netskyctl)."""
    return anyio.run(escalate_direct, settings, environ, subject, body, key, severity)


def main(argv: list[str] | None = None) -> int:
    """``python -m netskyd.escalation.direct SUBJECT BODY --key K --severity S``: what
    ``netskyctl escalate --direct`` runs (the client imports no daemon code). Prints
    the EscalateResult as one JSON object on stdout and exits 0; a config that does not
    load or a page that cannot start prints one line on stderr and exits 1."""
    import argparse
    import json
    import os
    import sys

    from netsky_shared.errors import NetskyError
    from netskyd.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m netskyd.escalation.direct")
    parser.add_argument("subject")
    parser.add_argument("body")
    parser.add_argument("--key", required=True)
    parser.add_argument("--severity", default="warning")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        settings = load_settings(None, environ)
        res = run(settings, environ, args.subject, args.body, args.key, args.severity)
    except (NetskyError, OSError, ValueError) as e:
        print(f"escalate --direct: {e}", file=sys.stderr)  # noqa: T201 - a CLI's error line
        return 1
    print(json.dumps(res))  # noqa: T201 - the result is the output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
