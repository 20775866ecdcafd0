"""Escalation end to end: a real netskyd (or none, with ``--direct``), a real SMTP server
(aiosmtpd, STARTTLS with AUTH) and real HTTP servers on 127.0.0.1.

- the mail and the POSTs arrive with the subject, the body, the incident id and the
  ack command;
- failing legs, one by one and all at once: the spool retries until the ack, and
  ``state/owner-pages.jsonl`` and meta.db show every attempt;
- a leg that keeps failing is paged about on the others, and its recovery closes that;
- a storm of 1,000 identical escalations inside the quiet period is one page per leg;
- ``netskyctl escalate --direct`` pages with no daemon; the daemon imports its rows later;
- a daemon started by the shim (``--revived-by``) pages that it died.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.paths import socket_path
from tests.harness import EnvNetsky, Netsky, wait_for
from tests.owner_servers import HttpServer, SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

USER, PASSWORD = "owner@example.org", "app-password-123"
FAST = {
    "clones": 0,
    "escalation_retry_base_s": 0.3,
    "escalation_retry_cap_s": 1.0,
    "escalation_spool_s": 0.1,
    "escalation_leg_timeout_s": 5.0,
}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer("starttls", auth=(USER, PASSWORD)) as server:
        yield server


@pytest.fixture
def hook() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


@pytest.fixture
def ntfy() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


def legs(smtp: SmtpServer, hook: HttpServer, ntfy: HttpServer | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "email": {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "starttls",
            "username": USER,
            "password": {"env": "TEST_SMTP_PASSWORD"},
            "from": "netsky@example.org",
            "to": [USER],
            "ca_file": str(smtp.ca_file),
        },
        "webhook": {"url": f"{hook.url}/page", "format": "json"},
        "desktop": {"enabled": False},
        "tmux": {"enabled": False},
    }
    if ntfy is not None:
        out["ntfy"] = {"type": "webhook", "url": f"{ntfy.url}/netsky-topic", "format": "text"}
    return out


def with_password(netsky: Netsky) -> EnvNetsky:
    return EnvNetsky(netsky, {"TEST_SMTP_PASSWORD": PASSWORD})


def audit(home: Path) -> list[dict[str, Any]]:
    path = home / "state" / "owner-pages.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def db_pages(home: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "meta.db") as db:
        return db.execute(
            "SELECT incident, leg, status, try, via FROM owner_pages ORDER BY file_offset"
        ).fetchall()


def escalate(ns: Netsky, *args: str) -> tuple[int, dict[str, Any]]:
    res = ns.ctl("escalate", *args, "--json")
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def body_of(msg: Any) -> str:
    return str(msg.get_content())


def test_mail_and_posts_arrive_with_subject_body_incident_and_ack_command(
    netsky: Netsky, smtp: SmtpServer, hook: HttpServer, ntfy: HttpServer
) -> None:
    netsky.configure(**FAST, legs=legs(smtp, hook, ntfy))
    ns = with_password(netsky)
    ns.start()
    code, res = escalate(ns, "agent0 crash loop", "5 restarts in 600 s", "--key", "agent0:x")
    assert code == 0, res
    incident = res["incident"]["id"]
    ack = f"NETSKY_HOME={netsky.home} netskyctl ack {incident}"
    assert res["ack_command"] == ack and res["action"] == "opened"
    assert {r["leg"]: r["status"] for r in res["results"]} == {
        "email": "delivered",
        "webhook": "delivered",
        "ntfy": "delivered",
    }
    [mail] = smtp.wait_for_messages(1)
    assert mail["Subject"] == "[netsky] agent0 crash loop"
    assert mail["X-Netsky-Incident"] == incident
    text = body_of(mail)
    assert "5 restarts in 600 s" in text and incident in text and ack in text
    [post] = hook.wait_for_requests(1)
    sent = json.loads(post.body)
    assert (sent["subject"], sent["body"], sent["incident"]) == (
        "agent0 crash loop",
        "5 restarts in 600 s",
        incident,
    )
    assert sent["ack_command"] == ack and ack in sent["text"]
    [topic] = ntfy.wait_for_requests(1)
    assert topic.path == "/netsky-topic" and topic.header("Title") == "[netsky] agent0 crash loop"
    assert ack in topic.body.decode() and "5 restarts" in topic.body.decode()
    # Audited in the file at once and in meta.db by the spool.
    assert {(r["leg"], r["status"]) for r in audit(netsky.home)} == {
        ("email", "delivered"),
        ("webhook", "delivered"),
        ("ntfy", "delivered"),
    }
    wait_for(lambda: len(db_pages(netsky.home)) == 3, 10, "owner pages in meta.db")
    # The owner acks; the same key pages afresh afterwards.
    assert ns.ctl("ack", incident).returncode == 0
    code, again = escalate(ns, "agent0 crash loop", "again", "--key", "agent0:x")
    assert code == 0 and again["action"] == "opened" and again["incident"]["id"] != incident
    smtp.wait_for_messages(2)


def test_failing_legs_are_retried_until_ack_and_every_attempt_is_audited(
    netsky: Netsky, hook: HttpServer
) -> None:
    failing_smtp = SmtpServer("starttls", auth=(USER, PASSWORD), fail_with="451 try later")
    with failing_smtp as smtp:
        netsky.configure(**FAST, legs=legs(smtp, hook), escalation_leg_failing_after=1000)
        ns = with_password(netsky)
        ns.start()
        # One by one: the mail fails (451) while the webhook delivers.
        code, res = escalate(ns, "one leg down", "b", "--key", "one")
        assert code == 0 and res["delivered"] == ["webhook"]
        one = res["incident"]["id"]
        wait_for(lambda: _tries(netsky.home, one, "email") >= 3, 30, "email retried")
        smtp.fail_with = None  # the server takes mail again: the next retry delivers
        wait_for(lambda: _delivered(netsky.home, one, "email"), 30, "email delivered")
        [mail] = smtp.wait_for_messages(1)
        assert one in body_of(mail)
        rows = [r for r in audit(netsky.home) if r["incident"] == one]
        email = [r for r in rows if r["leg"] == "email"]
        assert [r["try"] for r in email] == list(range(1, len(email) + 1))
        assert [r["status"] for r in email] == ["failed"] * (len(email) - 1) + ["delivered"]
        assert [r["leg"] for r in rows].count("webhook") == 1  # delivered once, never again
        # All at once: both fail and keep being retried until the owner acks.
        smtp.fail_with = "451 try later"
        hook.status = 502
        code, res = escalate(ns, "all legs down", "b", "--key", "all")
        assert code == 1 and res["delivered"] == []
        text = ns.ctl("escalate", "all legs down", "--key", "x2").stdout
        assert "retries the failed legs" in text
        every = res["incident"]["id"]
        wait_for(
            lambda: min(_tries(netsky.home, every, "email"), _tries(netsky.home, every, "webhook"))
            >= 3,
            30,
            "both legs retried",
        )
        assert ns.ctl("ack", every).returncode == 0
        frozen = len([r for r in audit(netsky.home) if r["incident"] == every])
        # Proof that the spool kept running after the ack: another failing incident
        # gets three more tries meanwhile; the acked one gets none.
        _, other = escalate(ns, "another", "b", "--key", "another")
        wait_for(lambda: _tries(netsky.home, other["incident"]["id"], "webhook") >= 3, 30, "x")
        assert len([r for r in audit(netsky.home) if r["incident"] == every]) == frozen
        wait_for(lambda: len(db_pages(netsky.home)) >= len(audit(netsky.home)), 10, "db rows")
        assert [r[:4] for r in db_pages(netsky.home)] == [
            (r["incident"], r["leg"], r["status"], r["try"]) for r in audit(netsky.home)
        ]


def _tries(home: Path, incident: str, leg: str) -> int:
    return len([r for r in audit(home) if r["incident"] == incident and r["leg"] == leg])


def _delivered(home: Path, incident: str, leg: str) -> bool:
    return any(
        r["status"] == "delivered"
        for r in audit(home)
        if r["incident"] == incident and r["leg"] == leg
    )


def test_a_leg_that_keeps_failing_is_paged_on_the_others_then_all_clear(
    netsky: Netsky, smtp: SmtpServer, hook: HttpServer
) -> None:
    netsky.configure(**FAST, legs=legs(smtp, hook), escalation_leg_failing_after=3)
    ns = with_password(netsky)
    ns.start()
    hook.status = 500
    escalate(ns, "something broke", "b", "--key", "broke")
    mails = smtp.wait_for_messages(2, timeout_s=30)
    about = [m for m in mails if "webhook page leg keeps failing" in m["Subject"]]
    assert about, [m["Subject"] for m in mails]
    assert "HTTP 500" in body_of(about[0])
    incidents = json.loads(ns.ctl("incidents", "--json").stdout)["incidents"]
    leg_incident = next(i for i in incidents if i["key"] == "leg:webhook")
    assert leg_incident["exclude_legs"] == ["webhook"]
    hook.status = 200  # the next retry delivers: the leg page closes with an all-clear
    wait_for(
        lambda: any("all clear: the webhook page leg" in str(m["Subject"]) for m in smtp.messages),
        30,
        "the all-clear mail",
    )
    closed = json.loads(ns.ctl("incidents", "--all", "--json").stdout)["incidents"]
    assert next(i for i in closed if i["key"] == "leg:webhook")["resolved_ts"] is not None


def test_a_storm_of_1000_identical_escalations_is_one_page_per_leg(
    netsky: Netsky, smtp: SmtpServer, hook: HttpServer, ntfy: HttpServer
) -> None:
    netsky.configure(**FAST, legs=legs(smtp, hook, ntfy))
    ns = with_password(netsky)
    ns.start()
    sock = socket_path(str(netsky.home))

    def call(_: int) -> str:
        with Client(sock, timeout_s=60) as c:
            res = c.call(
                protocol.ESCALATE,
                {"subject": "agent2 hung", "body": "storm", "key": "hang:agent2"},
                timeout_s=60,
            )
        return str(res["action"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        actions = list(pool.map(call, range(1000)))
    assert actions.count("opened") == 1 and actions.count("joined") == 999
    [incident] = json.loads(ns.ctl("incidents", "--json").stdout)["incidents"]
    assert incident["count"] == 1000
    assert len(smtp.wait_for_messages(1)) == 1
    assert len(hook.wait_for_requests(1)) == 1 and len(ntfy.wait_for_requests(1)) == 1
    pages = [r for r in audit(netsky.home) if r["kind"] == "page"]
    assert sorted(r["leg"] for r in pages) == ["email", "ntfy", "webhook"]
    # Nothing more trickles out afterwards.
    ns.ctl("escalate", "agent2 hung", "storm", "--key", "hang:agent2")
    assert len(smtp.messages) == 1 and len(hook.requests) == 1 and len(ntfy.requests) == 1


def test_direct_pages_with_no_daemon_each_leg_in_its_own_process(
    netsky: Netsky, smtp: SmtpServer, hook: HttpServer, tmp_path: Path
) -> None:
    slow = HttpServer(delay_s=30)  # a wedged leg must not hold the others
    with slow:
        cfg = legs(smtp, hook)
        cfg["slow"] = {"type": "webhook", "url": f"{slow.url}/x"}
        netsky.configure(**{**FAST, "escalation_leg_timeout_s": 2.0}, legs=cfg)
        ns = with_password(netsky)
        assert ns.ctl("ping").returncode == protocol.EXIT_NOT_RUNNING
        refused = ns.ctl("escalate", "x", "y")
        assert refused.returncode == protocol.EXIT_NOT_RUNNING and "--direct" in refused.stderr
        code, res = escalate(ns, "netskyd is gone", "the shim could not start it", "--direct",
                             "--key", "daemon:dead", "--severity", "critical")  # fmt: skip
        assert code == 0, res
        assert res["via"] == "direct" and res["incident"]["severity"] == "critical"
        results = {r["leg"]: r for r in res["results"]}
        assert results["email"]["status"] == "delivered"
        assert results["webhook"]["status"] == "delivered"
        assert results["slow"]["status"] == "failed" and "timed out" in results["slow"]["reason"]
        [mail] = smtp.wait_for_messages(1)
        assert res["incident"]["id"] in body_of(mail) and res["ack_command"] in body_of(mail)
        assert {r["via"] for r in audit(netsky.home)} == {"direct"}
        # The daemon, once up, imports what --direct wrote and retries the failed leg.
        slow.delay_s = 0
        ns.start()
        wait_for(
            lambda: ("slow", "delivered") in {(r[1], r[2]) for r in db_pages(netsky.home)},
            30,
            "the daemon's spool to retry the slow leg and import every row",
        )
        vias = {r[4] for r in db_pages(netsky.home)}
        assert vias == {"direct", "daemon"}


def test_a_daemon_revived_by_the_shim_pages_the_owner(
    netsky: Netsky, smtp: SmtpServer, hook: HttpServer
) -> None:
    netsky.configure(**FAST, legs=legs(smtp, hook))
    ns = EnvNetsky(netsky, {"TEST_SMTP_PASSWORD": PASSWORD, "NETSKY_REVIVED_BY": "shim"})
    ns.start()
    [post] = hook.wait_for_requests(1, timeout_s=30)
    sent = json.loads(post.body)
    assert sent["key"] == "daemon:revived" and "revived by shim" in sent["subject"]


def _posts(hook: HttpServer) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in hook.requests]


def test_a_crash_loop_pages_critical_and_closes_with_an_all_clear_when_the_agent_is_back(
    netsky: Netsky, hook: HttpServer, tmp_path: Path
) -> None:
    flag = tmp_path / "keep-crashing"
    flag.touch()
    crasher = (
        f"test -e {shlex.quote(str(flag))} && exit 3; "
        f"exec {shlex.quote(sys.executable)} -m netskyd.agents.demo_agent"
    )
    cfg = {"webhook": {"url": f"{hook.url}/page"}, "tmux": {"enabled": False}}
    netsky.configure(
        **{**FAST, "clones": 1},
        legs=cfg,
        agent_runtimes={"agent1": "custom"},
        custom_command=crasher,
        restart_backoff_base_s=0.2,
        restart_max_attempts=50,
        crashloop_restarts=3,
        crashloop_window_s=6.0,
        crashloop_cooldown_s=3.0,
        crashloop_cooldown_cap_s=3.0,
        restart_verify_s=1.0,
    )
    netsky.start()
    wait_for(lambda: any(p["key"] == "agent1:crash-loop" for p in _posts(hook)), 60, "loop page")
    loop = next(p for p in _posts(hook) if p["key"] == "agent1:crash-loop")
    assert loop["severity"] == "critical" and loop["kind"] == "page"
    # The failed attempts before it paged at info: the desktop leg, not the webhook.
    assert not any(p["key"] == "agent1:restart-failed" for p in _posts(hook))
    failed = [r for r in audit(netsky.home) if r["key"] == "agent1:restart-failed"]
    assert failed and {r["leg"] for r in failed} == {"desktop"}
    sentinel = (netsky.home / "OWNER-PAGE.txt").read_text()
    assert "agent1 is crash-looping" in sentinel and "netskyctl ack" in sentinel
    flag.unlink()  # the agent starts cleanly after the cooldown: the restart verifies
    wait_for(
        lambda: any(
            p["key"] == "agent1:crash-loop" and p["kind"] == "all-clear" for p in _posts(hook)
        ),
        60,
        "the all-clear",
    )
    every = json.loads(netsky.ctl("incidents", "--all", "--json").stdout)["incidents"]
    closed = {i["key"]: i for i in every}
    assert closed["agent1:crash-loop"]["resolved_ts"] is not None
    assert "agent1 is back" in closed["agent1:crash-loop"]["resolution"]
    assert closed["agent1:restart-failed"]["resolved_ts"] is not None
    wait_for(lambda: not (netsky.home / "OWNER-PAGE.txt").exists(), 10, "sentinel removed")


def test_a_hang_pages_once_and_clearing_it_sends_the_all_clear(
    netsky: Netsky, hook: HttpServer
) -> None:
    cfg = {"webhook": {"url": f"{hook.url}/page"}}
    netsky.configure(**{**FAST, "clones": 1}, legs=cfg, tick_interval_s=0.5, hang_after_s=3)
    netsky.start()
    netsky.wait_all_ready(["agent0", "agent1", "agentinfinity"], 30)
    for text in ("hang", "ping"):
        assert netsky.ctl("channel", "send", "agent1", text, "--from", "agent0").returncode == 0
    wait_for(lambda: any(p["key"] == "hang:agent1" for p in _posts(hook)), 30, "the hang page")
    marker = json.loads((netsky.home / "state" / "hang" / "agent1.json").read_text())
    wait_for(
        lambda: json.loads((netsky.home / "state/hang/agent1.json").read_text())["paged"],
        10,
        "the marker to record the delivered page",
    )
    marker = json.loads((netsky.home / "state" / "hang" / "agent1.json").read_text())
    assert "webhook" in marker["paged_on"]
    # The tmux leg marked netsky's status line while the incident is open.
    right = subprocess.run(
        ["tmux", "-L", netsky.socket_name, "show-options", "-gv", "status-right"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    assert "#{@netsky-page}" in right
    tty = subprocess.run(
        ["tmux", "-L", netsky.socket_name, "display-message", "-p", "-t", "=agent1:",
         "#{pane_tty}"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout.strip()  # fmt: skip
    with open(tty, "w") as f:
        f.write("\r\nthe agent printed something\r\n")
    wait_for(
        lambda: any(p["key"] == "hang:agent1" and p["kind"] == "all-clear" for p in _posts(hook)),
        20,
        "the all-clear",
    )
    assert [p["kind"] for p in _posts(hook) if p["key"] == "hang:agent1"] == ["page", "all-clear"]
    wait_for(
        lambda: "#{@netsky-page}"
        not in subprocess.run(
            ["tmux", "-L", netsky.socket_name, "show-options", "-gv", "status-right"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout,  # fmt: skip
        10,
        "the status-line marker to go",
    )


def test_client_escalate_rejects_an_empty_subject(netsky: Netsky) -> None:
    res = netsky.ctl("escalate", " ", "body", "--direct")
    assert res.returncode == protocol.EXIT_USAGE and "SUBJECT" in res.stderr
    assert not (netsky.home / "state" / "escalations").exists()
