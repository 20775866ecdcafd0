"""Dialogs and usage limits on the real Codex CLI, driven by netskyd in real tmux.

Codex comes from the npm registry (``tests/npm_clis.py``) and talks to
``tests/fake_openai.py`` on 127.0.0.1. Each test reads the daemon's journal
(``dialog.seen``, ``dialog.answered``, ``activity.changed``, ``limit.*``) and asks
``netskyctl why``: what netsky saw, what it pressed, and what it concluded.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_codex import FAKE_KEY
from tests.fake_openai import FakeOpenAI, Reply, UsageLimit
from tests.harness import EnvNetsky, Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SIZES = [(100, 30), (200, 50)]


def events(ns: Netsky, name: str, agent: str = "agent0") -> list[dict[str, Any]]:
    rows = []
    for f in sorted((ns.home / "logs").glob("watchdog-events-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return [r for r in rows if r["event"] == name and r.get("agent") == agent]


def why(ns: Netsky, agent: str = "agent0") -> dict[str, Any]:
    res = ns.ctl("why", agent, "--json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def diag(ns: Netsky) -> str:
    res = ns.ctl("why", "agent0", "--json")
    pane, log = ns.pane_text("agent0"), ns.stderr()[-3000:]
    return f"\n--- why: {res.stdout} {res.stderr}\n--- agent0 pane:\n{pane}\n--- netskyd:\n{log}"


def wait(ns: Netsky, predicate: Any, timeout_s: float, what: str) -> Any:
    try:
        return wait_for(predicate, timeout_s, what, step_s=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}{diag(ns)}") from None


class CodexRig:
    """A HOME where Codex is signed in with an API key; the workdir a git repository
    (Codex asks about trust there) that ``config.toml`` does not mention."""

    def __init__(self, netsky: Netsky, codex: Path, tmp: Path, script: list[Reply]) -> None:
        self.home = tmp / "user-home"
        self.workdir = (tmp / "work").absolute()
        self.workdir.mkdir()
        subprocess.run(["git", "init", "-q", str(self.workdir)], check=True, timeout=30)
        (self.home / ".codex").mkdir(parents=True)
        (self.home / ".codex" / "auth.json").write_text(
            json.dumps({"OPENAI_API_KEY": FAKE_KEY, "auth_mode": "apikey"})
        )
        self.config = self.home / ".codex" / "config.toml"
        self.config.write_text("check_for_update_on_startup = false\n")
        self.api = FakeOpenAI(script)
        self.ns = EnvNetsky(
            netsky,
            {"HOME": str(self.home), "OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": self.api.url},
            strip_prefixes=("OPENAI_", "CODEX_"),
        )
        self.ns.configure(
            runtime="codex",
            codex_command=str(codex),
            # Codex 0.169 ignores OPENAI_BASE_URL (tests/screens/codex-0.169.0/README.md);
            # --no-daemon: no background app-server outliving the test.
            codex_args=["--no-daemon", "-c", f'openai_base_url="{self.api.url}"'],
            clones=0,
            agent_runtimes={"agentinfinity": "demo"},
            ready_timeout_s=90,
            paste_settle_ms=400,
            workdir=str(self.workdir),
        )


@pytest.fixture
def rig(netsky: Netsky, codex_bin: Path, tmp_path: Path) -> Iterator[CodexRig]:
    r = CodexRig(netsky, codex_bin, tmp_path, [])
    with r.api:
        try:
            yield r
        finally:
            r.ns.cleanup()


@pytest.mark.parametrize(("cols", "rows"), SIZES, ids=[f"{c}x{r}" for c, r in SIZES])
def test_trust_screen_answered_by_label_then_idle(rig: CodexRig, cols: int, rows: int) -> None:
    ns = rig.ns
    ns.configure(seed_runtime_settings=False, session_width=cols, session_height=rows)
    ns.start()
    wait(ns, lambda: ns.agents().get("agent0", {}).get("ready"), 120, "codex agent0 ready")
    seen = events(ns, "dialog.seen")
    assert [(e["dialog"], e["activity"], e["policy"]) for e in seen] == [
        ("codex.trust", "waiting", "approve")
    ], diag(ns)
    assert any("Trust this folder?" in line for line in seen[0]["screen"])
    answered = events(ns, "dialog.answered")
    assert [(e["dialog"], e["choice"], e["keys"]) for e in answered] == [
        ("codex.trust", "Trust and continue", ["Enter"])
    ]
    waiting = [e for e in events(ns, "activity.changed") if e["now"] == "waiting"]
    assert waiting and waiting[0]["reason"].startswith("codex.trust:")
    wait(ns, lambda: why(ns)["activity"] == "idle", 30, "agent0 idle")
    # Codex saved the owner's answer itself.
    trust = tomllib.loads(rig.config.read_text())["projects"][str(rig.workdir)]
    assert trust["trust_level"] == "trusted"
    assert not (ns.home / "state" / "seeded.jsonl").exists()


def test_seeding_means_no_trust_screen_at_all(rig: CodexRig) -> None:
    ns = rig.ns
    ns.start()
    wait(ns, lambda: ns.agents().get("agent0", {}).get("ready"), 120, "codex agent0 ready")
    assert events(ns, "dialog.seen") == [], diag(ns)
    rows = [json.loads(x) for x in (ns.home / "state" / "seeded.jsonl").read_text().splitlines()]
    assert [(r["agent"], r["runtime"], r["value"]) for r in rows] == [
        ("agent0", "codex", "trusted")
    ]
    assert rows[0]["file"] == str(rig.config)
    config = tomllib.loads(rig.config.read_text())
    assert config["check_for_update_on_startup"] is False  # the owner's line is kept
    assert config["projects"][str(rig.workdir)]["trust_level"] == "trusted"
    assert [e["changes"][0]["value"] for e in events(ns, "runtime.seeded")] == ["trusted"]


def test_usage_limit_parks_pages_once_and_nudges_at_reset(rig: CodexRig) -> None:
    ns = rig.ns
    rig.api.script[:] = [UsageLimit(resets_in_s=100)]  # shown to the minute
    ns.configure(limit_grace_s=1, hang_after_s=2)
    ns.start()
    wait(ns, lambda: ns.agents().get("agent0", {}).get("ready"), 120, "codex agent0 ready")
    sent = ns.ctl("channel", "send", "agent0", "please do the work", "--from", "agent1")
    assert sent.returncode == 0, sent.stderr
    wait(ns, lambda: why(ns)["activity"] == "limited", 60, "agent0 limited")
    w = why(ns)
    assert "hit your usage limit" in w["evidence"]["limit"]["notice"]
    marker = w["limit_marker"]
    assert marker["state"] == "parked" and marker["reset_source"] == "screen"
    assert marker["reset_at"] <= time.time() + 120, marker  # the minute Codex showed
    # Paged once a leg (here the desktop sentinel) delivered it.
    wait(ns, lambda: why(ns)["limit_marker"]["paged"], 30, "the limit page delivered")
    assert "desktop" in why(ns)["limit_marker"]["paged_on"]
    # Parked, not hung, however still the pane is (hang_after_s is 2 s here).
    time.sleep(4)
    assert why(ns)["activity"] == "limited"
    assert events(ns, "hang.suspected") == []
    incidents = json.loads(ns.ctl("incidents", "--json").stdout)["incidents"]
    assert [(i["key"], i["count"]) for i in incidents] == [("limit:agent0", 1)]
    # At the reset time: a nudge from netsky, and it leaves `limited`.
    wait(ns, lambda: events(ns, "limit.released"), 200, "the limit released")
    nudge = events(ns, "limit.released")[0]["envelope"]
    delivered = ns.home / "channels/agent/agent0/delivered"
    wait(ns, lambda: list(delivered.glob(f"*{nudge}.json")), 30, "the nudge delivered")
    wait(ns, lambda: "usage limit has reset" in ns.pane_text("agent0"), 30, "the nudge shown")
    wait(ns, lambda: why(ns)["activity"] != "limited", 30, "agent0 out of limited")
    assert len(events(ns, "limit.parked")) == 1
    # The limit's incident is closed with an all-clear.
    # (hang_after_s is 2 s here, so the work after the nudge may briefly count as a hang.)
    every = json.loads(ns.ctl("incidents", "--all", "--json").stdout)["incidents"]
    limits = [(i["key"], bool(i["resolved_ts"])) for i in every if i["key"].startswith("limit")]
    assert limits == [("limit:agent0", True)]
