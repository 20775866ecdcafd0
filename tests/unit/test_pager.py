"""netskyd.escalation.pager on real files with scripted legs: quiet period, re-pages, severity
routing, backoff, interrupted rounds, audit rows, leg health, all-clears, archiving.

The legs here are scripted senders (a pure unit test of the floor's rules); the real
legs against real SMTP/HTTP servers are in test_legs.py and tests/e2e/test_escalation.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netsky_shared import incidents
from netsky_shared.incidents import rfc3339
from netsky_shared.paths import Paths
from netskyd.config import Settings
from netskyd.config.legs import LegContext, LegResult, Page
from netskyd.escalation import pager

pytestmark = pytest.mark.timeout(60)

T0 = 1_795_000_000.0
QUIET = 3600.0
LEGS = {
    "email": {"type": "email", "host": "h", "from": "a@x", "to": ["b@x"]},
    "hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
    "tmux": {"enabled": False},
}


def settings(tmp_path: Path, **legs: Any) -> Settings:
    return Settings.model_validate({"home": tmp_path, "legs": legs or LEGS})


class Script:
    """A sender whose answer per leg is set by the test; records every call."""

    def __init__(self, **status: str) -> None:
        self.status = dict(status)
        self.calls: list[tuple[str, Page]] = []

    async def __call__(self, name: str, leg: Any, page: Page, ctx: LegContext) -> LegResult:
        self.calls.append((name, page))
        st = self.status.get(name, "delivered")
        return LegResult(name, st, None if st == "delivered" else f"{name} says no", 1.0)  # type: ignore[arg-type]


async def page_round(
    s: Settings, decision: pager.Decision, sender: Script, kind: str = "page", now: float = T0
) -> pager.Outcome:
    inc = decision.incident
    chosen = pager.targets(s.legs, inc, kind, now)
    page = pager.make_page(kind, inc, s.home, now, ())  # type: ignore[arg-type]
    ctx = LegContext({}, 5.0, s.home, None)
    results = await pager.send_all(chosen, page, ctx, sender)
    return pager.finish_round(
        s.paths, inc["id"], kind, results, now, retry_base_s=30, retry_cap_s=120,
        failing_after=3, via="test", fallback=inc,
    )  # fmt: skip


def audit(paths: Paths) -> list[dict[str, Any]]:
    return [json.loads(x) for x in paths.owner_pages.read_text().splitlines()]


def test_quiet_period_joins_then_pages_again(tmp_path: Path) -> None:
    p = Paths(tmp_path)
    first = pager.open_or_join(p, "k", "s", "b1", "warning", T0, QUIET)
    assert first.action == "opened" and first.incident["rounds"] == 1
    inside = pager.open_or_join(p, "k", "s", "b2", "warning", T0 + QUIET - 1, QUIET)
    assert inside.action == "joined" and inside.incident["count"] == 2
    assert inside.incident["body"] == "b1"  # a join changes nothing the owner saw
    after = pager.open_or_join(p, "k", "s", "b3", "warning", T0 + QUIET + 1, QUIET)
    assert after.action == "repaged" and after.incident["id"] == first.incident["id"]
    assert after.incident["rounds"] == 2 and after.incident["body"] == "b3"
    assert after.incident["paged_ts"] == rfc3339(T0 + QUIET + 1)


def test_a_more_severe_escalation_pages_inside_the_quiet_period(tmp_path: Path) -> None:
    p = Paths(tmp_path)
    pager.open_or_join(p, "k", "s", "b", "info", T0, QUIET)
    worse = pager.open_or_join(p, "k", "s", "b", "critical", T0 + 5, QUIET)
    assert worse.action == "repaged" and worse.incident["severity"] == "critical"
    same = pager.open_or_join(p, "k", "s", "b", "warning", T0 + 6, QUIET)
    assert same.action == "joined" and same.incident["severity"] == "critical"


def test_severity_routes_to_the_legs_that_take_it(tmp_path: Path) -> None:
    s = settings(tmp_path)
    info = pager.open_or_join(s.paths, "i", "s", "b", "info", T0, QUIET).incident
    assert set(pager.targets(s.legs, info)) == {"desktop"}  # email and hook start at warning
    warn = pager.open_or_join(s.paths, "w", "s", "b", "warning", T0, QUIET).incident
    assert set(pager.targets(s.legs, warn)) == {"email", "hook", "desktop"}
    excl = pager.open_or_join(s.paths, "x", "s", "b", "warning", T0, QUIET, ["email"]).incident
    assert set(pager.targets(s.legs, excl)) == {"hook", "desktop"}


async def test_failed_legs_back_off_and_only_they_are_retried(tmp_path: Path) -> None:
    s = settings(tmp_path)
    d = pager.open_or_join(s.paths, "k", "s", "b", "warning", T0, QUIET)
    sender = Script(hook="failed", email="unavailable")
    out = await page_round(s, d, sender)
    inc = out.incident
    assert inc is not None
    assert inc["legs"]["hook"]["next_ts"] == rfc3339(T0 + 30)
    assert inc["legs"]["email"]["next_ts"] is None  # unavailable: not retried
    assert inc["next_retry_ts"] == rfc3339(T0 + 30) and inc["round_ts"] is None
    assert pager.due(incidents.scan(s.paths)[0], T0 + 29, 70) == []
    for n, wait in enumerate([60, 120, 120, 120], start=2):  # doubling, capped at 120
        now = T0 + 1000 * n
        claimed = pager.claim_round(s.paths, inc["id"], now, 70)
        assert claimed is not None and claimed[1] == "retry"
        assert pager.claim_round(s.paths, inc["id"], now, 70) is None  # leased
        assert set(pager.targets(s.legs, claimed[0], "retry", now)) == {"hook"}
        out = await page_round(s, pager.Decision(claimed[0], "opened"), sender, "retry", now)
        assert out.incident is not None
        hook = out.incident["legs"]["hook"]
        assert (hook["tries"], hook["next_ts"]) == (n, rfc3339(now + wait))
    rows = [r for r in audit(s.paths) if r["leg"] == "hook"]
    assert [r["try"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["kind"] for r in rows[1:]} == {"retry"}


async def test_ack_or_resolve_stops_the_retries(tmp_path: Path) -> None:
    s = settings(tmp_path)
    d = pager.open_or_join(s.paths, "k", "s", "b", "warning", T0, QUIET)
    await page_round(s, d, Script(hook="failed"))
    incidents.ack(s.paths, d.incident["id"], now_s=T0 + 1)
    assert pager.due(incidents.scan(s.paths)[0], T0 + 1e6, 70) == []
    assert pager.claim_round(s.paths, d.incident["id"], T0 + 1e6, 70) is None
    d2 = pager.open_or_join(s.paths, "k2", "s", "b", "warning", T0, QUIET)
    await page_round(s, d2, Script(hook="failed"))
    closed = pager.resolve(s.paths, "k2", "it went away", T0 + 2)
    assert closed is not None and closed["next_retry_ts"] is None
    assert pager.due(incidents.scan(s.paths)[0], T0 + 1e6, 70) == []
    assert pager.resolve(s.paths, "k2", "again", T0 + 3) is None  # nothing open


async def test_an_interrupted_round_resumes_on_the_legs_that_had_not_delivered(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path)
    d = pager.open_or_join(s.paths, "k", "s", "b", "warning", T0, QUIET)
    # The sender died after the email went out: round_ts stays set, hook never answered.
    inc = d.incident
    with incidents.IncidentsLock(str(s.paths.escalations)):
        inc["legs"]["email"] = {"status": "delivered", "reason": None, "ts": "", "tries": 1,
                                "next_ts": None}  # fmt: skip
        incidents.write_incident(s.paths, inc)
    assert pager.due(incidents.scan(s.paths)[0], T0 + 10, 70) == []  # lease still running
    claimed = pager.claim_round(s.paths, inc["id"], T0 + 71, 70)
    assert claimed is not None and claimed[1] == "page"
    assert set(pager.targets(s.legs, claimed[0], "page")) == {"hook", "desktop"}


async def test_audit_rows_cover_every_leg_and_a_round_with_no_leg(tmp_path: Path) -> None:
    s = settings(tmp_path, email={"type": "email", "host": "h", "from": "a", "to": ["b"]},
                 tmux={"enabled": False}, desktop={"enabled": False})  # fmt: skip
    d = pager.open_or_join(s.paths, "k", "s", "b", "warning", T0, QUIET)
    await page_round(s, d, Script(email="failed"))
    d2 = pager.open_or_join(s.paths, "k2", "s", "b", "info", T0, QUIET)
    await page_round(s, d2, Script())
    rows = audit(s.paths)
    assert [(r["incident"], r["leg"], r["status"]) for r in rows] == [
        (d.incident["id"], "email", "failed"),
        (d2.incident["id"], None, "unavailable"),
    ]
    assert "no configured leg takes info pages" in rows[1]["reason"]
    assert set(rows[0]) == {
        "ts", "incident", "key", "severity", "kind", "round", "try", "leg", "status",
        "reason", "duration_ms", "via",
    }  # fmt: skip


async def test_a_leg_failing_n_times_in_a_row_is_reported_once_and_its_recovery(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path)
    sender = Script(hook="failed")
    failing = []
    for n in range(5):
        d = pager.open_or_join(s.paths, f"k{n}", "s", "b", "warning", T0, QUIET)
        failing += (await page_round(s, d, sender)).failing
    assert [f["leg"] for f in failing] == ["hook"]  # at the third, not again
    assert pager.read_health(s.paths)["hook"]["failures"] == 5
    sender.status["hook"] = "delivered"
    d = pager.open_or_join(s.paths, "k9", "s", "b", "warning", T0, QUIET)
    out = await page_round(s, d, sender)
    assert out.recovered == ["hook"] and pager.read_health(s.paths)["hook"]["failures"] == 0
    subject, body = pager.leg_failing_text(failing[0])
    assert "hook" in subject and "hook says no" in body


async def test_all_clear_goes_to_the_legs_that_delivered(tmp_path: Path) -> None:
    s = settings(tmp_path)
    d = pager.open_or_join(s.paths, "k", "s", "b", "warning", T0, QUIET)
    await page_round(s, d, Script(hook="failed"))
    closed = pager.resolve(s.paths, "k", "agent0 is back", T0 + 5)
    assert closed is not None
    assert set(pager.targets(s.legs, closed, "all-clear")) == {"email", "desktop"}
    page = pager.make_page("all-clear", closed, s.home, T0 + 5, ())
    assert page.title() == "[netsky] all clear: s" and "agent0 is back" in page.text()
    assert "nothing to acknowledge" in page.text()


def test_pages_carry_the_incident_and_the_ack_command(tmp_path: Path) -> None:
    s = settings(tmp_path)
    d = pager.open_or_join(s.paths, "k", "agent0 is hung", "body text", "warning", T0, QUIET)
    page = pager.make_page("page", d.incident, s.home, T0, ())
    assert d.incident["id"] in page.text() and "body text" in page.text()
    assert page.ack_command == f"NETSKY_HOME={tmp_path} netskyctl ack {d.incident['id']}"
    assert page.ack_command in page.text()


def test_old_incident_files_read_with_defaults(tmp_path: Path) -> None:
    p = Paths(tmp_path)
    p.escalations.mkdir(parents=True)
    old = incidents.new_incident("20261101T000000Z-0000abcd", "k", "s", "b", T0)
    for field in ("severity", "resolved_ts", "resolution", "rounds", "paged_ts",
                  "next_retry_ts", "round_ts", "exclude_legs"):  # fmt: skip
        del old[field]
    old["legs"] = []
    (p.escalations / "20261101T000000Z-0000abcd.json").write_text(json.dumps(old))
    (found,), bad = incidents.scan(p)
    assert not bad and found["legs"] == {} and found["severity"] == "warning"
    assert pager.open_or_join(p, "k", "s", "b", "warning", T0 + 1, QUIET).action in (
        "joined",
        "repaged",
    )


def test_closed_incidents_are_archived_after_a_while(tmp_path: Path) -> None:
    p = Paths(tmp_path)
    a = pager.open_or_join(p, "a", "s", "b", "warning", T0, QUIET).incident
    b = pager.open_or_join(p, "b", "s", "b", "warning", T0, QUIET).incident
    pager.open_or_join(p, "c", "s", "b", "warning", T0, QUIET)
    incidents.ack(p, a["id"], now_s=T0)
    pager.resolve(p, "b", "gone", T0 + 100)
    assert pager.archive_closed(p, T0 + 50, 60) == []
    assert pager.archive_closed(p, T0 + 61, 60) == [a["id"]]
    assert pager.archive_closed(p, T0 + 161, 60) == [b["id"]]
    assert sorted(x.name for x in (p.escalations / "archive").iterdir()) == sorted(
        [f"{a['id']}.json", f"{b['id']}.json"]
    )
    assert [i["key"] for i in incidents.scan(p)[0]] == ["c"]


def test_the_documented_leg_examples_load(tmp_path: Path) -> None:
    """docs/escalation.md's config block is valid settings (the docs stay true)."""
    import re
    import tomllib

    doc = (Path(__file__).resolve().parents[2] / "docs" / "escalation.md").read_text()
    [block] = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    s = Settings.model_validate({"home": tmp_path, **tomllib.loads(block)})
    assert {n: leg.type for n, leg in s.legs.items()} == {
        "imessage": "imessage",
        "email": "email",
        "ntfy": "webhook",
        "hook": "webhook",
        "desktop": "desktop",
        "tmux": "tmux",
    }


def test_secrets_are_references_never_values(tmp_path: Path) -> None:
    from netsky_shared.errors import ConfigError
    from netskyd.config import load_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text('[legs.hook]\ntype = "webhook"\nurl = "http://x"\ntoken = "s3cret"\n')
    with pytest.raises(ConfigError, match="by reference"):
        load_settings(cfg, {})
