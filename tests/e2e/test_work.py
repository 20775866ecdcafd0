"""End to end: the work loop with a real daemon, real tmux, demo clones and real git.

agent0's repository is a real git repository in a temporary directory; each clone is
briefed into its own full clone, follows its brief's steps with real git (the demo
agent's ``write``/``commit``/``done``), reports with ``netskyctl clone report``, and is
harvested onto main behind the check.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.gitrepo import git, new_repo, snapshot
from tests.harness import Netsky, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]



@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """agent0's repository: main with one commit and a check script."""
    files = {"README": "the project\n", "shared.txt": "base\n"}
    return new_repo(tmp_path / "agent0-repo", files)


def start(netsky: Netsky, repo: Path, **settings: object) -> None:
    netsky.configure(clones=0, repo=str(repo), **settings)
    netsky.start()
    wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 60, "agent0 ready")


def brief(netsky: Netsky, tmp_path: Path, name: str, text: str, *args: str) -> dict[str, object]:
    path = tmp_path / f"{name}.md"
    path.write_text(text)
    argv = ["clone", "brief", str(path), "--workspace", name, "--wait", "20", "--json", *args]
    res = netsky.ctl(*argv)
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(json.loads(res.stdout))


def test_two_clones_brief_report_harvest(netsky: Netsky, repo: Path, tmp_path: Path) -> None:
    start(netsky, repo, check_command="test -f one.txt && test -f two.txt || test ! -f two.txt")
    one = brief(
        netsky, tmp_path, "feature one",
        "Add one.\nwrite one.txt first\ncommit add one\nappend one.txt more\ncommit extend one\n"
        "done one.txt added",
    )  # fmt: skip
    two = brief(
        netsky, tmp_path, "feature-two", "Add two.\nwrite two.txt second\ncommit add two\ndone two"
    )
    d1, d2 = one["dispatch"], two["dispatch"]
    assert isinstance(d1, dict) and isinstance(d2, dict)
    assert (d1["agent"], d2["agent"]) == ("agent1", "agent2")
    assert d1["workspace"] == "feature-one" and d1["branch"] == "netsky/feature-one"
    assert one["ready"] is True and one["delivered"] is True
    for n in ("1", "2"):
        waited = netsky.ctl("clone", "wait", n, "--timeout", "60")
        assert waited.returncode == 0, waited.stdout + waited.stderr
    ws1 = Path(str(d1["repo"]))
    assert ws1.is_relative_to(netsky.home / "workspaces" / "feature-one")
    assert git(ws1, "rev-parse", "--abbrev-ref", "HEAD") == "netsky/feature-one"
    status = json.loads(netsky.ctl("clone", "status", "1", "--json").stdout)["clones"][0]
    assert status["state"] == "done" and status["ahead"] == 2

    # agent0 got both reports as report envelopes, naming branch and head.
    delivered0 = netsky.home / "channels/agent/agent0/delivered"
    reports = wait_for(
        lambda: [
            e for e in (json.loads(p.read_text()) for p in delivered0.glob("*.json"))
            if e["kind"] == "report"
        ] if len(list(delivered0.glob("*.json"))) >= 2 else None,
        30,
        "two reports in agent0's delivered/",
    )  # fmt: skip
    assert {r["from"] for r in reports} == {"agent1", "agent2"}
    texts = [r["text"] for r in reports]
    assert any("netsky/feature-one" in t and "2 commits ahead" in t for t in texts)

    # Harvest both in turn: main gets both ranges, behind the check.
    first = netsky.ctl("harvest", "1", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    h1 = json.loads(first.stdout)
    assert h1["outcome"] == "landed" and h1["commits"] == 2 and h1["check_exit"] == 0
    second = netsky.ctl("harvest", "feature-two", "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout)["commits"] == 1
    log = git(repo, "log", "--format=%s", "main")
    assert log.splitlines() == ["add two", "extend one", "add one", "start"]
    assert (repo / "one.txt").read_text() == "first\nmore\n" and (repo / "two.txt").exists()
    assert git(repo, "status", "--porcelain") == ""
    assert Path(h1["log"]).read_text().startswith("$ test -f one.txt")

    # The clones learn the outcome; the records say what happened.
    wait_for(
        lambda: any(
            json.loads(p.read_text())["kind"] == "harvest"
            for p in (netsky.home / "channels/agent/agent1/delivered").glob("*.json")
        ),
        30,
        "agent1's harvest envelope",
    )
    db = sqlite3.connect(netsky.home / "meta.db")
    outcomes = db.execute("SELECT workspace, outcome, commits FROM harvests ORDER BY id").fetchall()
    db.close()
    assert outcomes == [("feature-one", "landed", 2), ("feature-two", "landed", 1)]

    # The workspaces die with the tasks.
    for n, name in (("1", "feature-one"), ("2", "feature-two")):
        res = netsky.ctl("clone", "kill", n, "--rm")
        assert res.returncode == 0, res.stdout + res.stderr
        assert not (netsky.home / "workspaces" / name).exists()
    wait_for(lambda: not {"agent1", "agent2"} & netsky.sessions(), 20, "the clones' sessions end")


def test_conflict_and_red_check_leave_main_untouched(
    netsky: Netsky, repo: Path, tmp_path: Path
) -> None:
    start(netsky, repo, check_command="exit 3")
    brief(netsky, tmp_path, "clash", "write shared.txt clone\ncommit clone edits\ndone edited")
    brief(netsky, tmp_path, "red", "write red.txt x\ncommit add red\ndone red")
    for n in ("1", "2"):
        assert netsky.ctl("clone", "wait", n, "--timeout", "60").returncode == 0
    (repo / "shared.txt").write_text("agent0's own edit\n")
    git(repo, "commit", "-qam", "agent0 edits shared")
    before = snapshot(repo)
    clash = netsky.ctl("harvest", "1", "--json")
    assert clash.returncode == 1 and json.loads(clash.stdout)["outcome"] == "conflict"
    assert "shared.txt" in json.loads(clash.stdout)["reason"]
    assert snapshot(repo) == before
    red = netsky.ctl("harvest", "2")
    assert red.returncode == 1 and "red" in red.stdout + red.stderr
    assert snapshot(repo) == before
    # The work is still there to harvest once fixed: removing it is refused without --force.
    kept = netsky.ctl("clone", "kill", "2", "--rm")
    assert kept.returncode == 1 and "never harvested" in kept.stdout + kept.stderr
    assert (netsky.home / "workspaces" / "red" / "repo").is_dir()


def test_hostile_input(netsky: Netsky, repo: Path, tmp_path: Path) -> None:
    start(netsky, repo, max_clones=2)
    # Workspace names are made safe: never outside workspaces/, never an option.
    path = tmp_path / "b.md"
    path.write_text("nothing to do")
    for raw, safe in (
        ("../../etc", "etc"),
        ("a/b c", "a-b-c"),
        ("-rf", "rf"),
        ("x" * 300, "x" * 64),
    ):
        res = netsky.ctl("clone", "brief", str(path), "--workspace", raw, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        got = json.loads(res.stdout)["dispatch"]
        assert got["workspace"] == safe
        assert Path(got["repo"]).resolve().is_relative_to((netsky.home / "workspaces").resolve())
        assert netsky.ctl("clone", "kill", got["agent"][5:], "--rm", "--force").returncode == 0
    bad = netsky.ctl("clone", "brief", str(path), "--workspace", "../..")
    assert bad.returncode == 2 and "workspace" in bad.stderr
    # A brief file that is missing, or not UTF-8.
    missing = netsky.ctl("clone", "brief", str(tmp_path / "nope.md"), "--workspace", "w")
    assert missing.returncode == 2 and "nope.md" in missing.stderr
    binary = tmp_path / "bin.md"
    binary.write_bytes(b"\xff\xfe not utf-8 \x80")
    res = netsky.ctl("clone", "brief", str(binary), "--workspace", "w")
    assert res.returncode == 2 and "UTF-8" in res.stderr
    # max_clones reached: 75, naming who holds the slots.
    brief(netsky, tmp_path, "one", "nothing")
    brief(netsky, tmp_path, "two", "nothing")
    full = netsky.ctl("clone", "brief", str(path), "--workspace", "three")
    assert full.returncode == 75 and "agent1, agent2" in full.stderr
    # Harvest of an unknown clone: 2.
    unknown = netsky.ctl("harvest", "7")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
