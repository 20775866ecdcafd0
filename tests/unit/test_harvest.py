"""Workspaces and harvests with real git on real repositories in temporary directories.

A failed harvest (conflict, red check, deadline) must leave the target's branch, working
tree and index byte-identical; a green one moves the branch by fast-forward; a clone can
never push into the branch agent0 has checked out.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from netsky_shared.errors import GitError, HarvestRefused
from netskyd.work.git import Git
from netskyd.work.harvest import Request, harvest
from netskyd.work.names import branch_of, pick_clone, workspace_name
from netskyd.work.workspaces import create
from tests.gitrepo import GIT_ENV, git, new_repo, snapshot

pytestmark = pytest.mark.timeout(120)

ENV = GIT_ENV
sh = git


def source_repo(tmp_path: Path) -> Path:
    return new_repo(tmp_path / "src", {"README": "hello\n", "shared.txt": "one\n"}, "first")


async def brief(tmp_path: Path, src: Path, name: str, agent: str = "agent1") -> Path:
    ws = await create(Git(60), src, tmp_path / "workspaces", name, None, agent)
    assert ws.created and ws.branch == branch_of(name) and ws.base == "main"
    return ws.repo


def commit(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).write_text(text)
    sh(repo, "add", "-A")
    sh(repo, "commit", "-q", "-m", message)
    return sh(repo, "rev-parse", "HEAD")


def request(tmp_path: Path, src: Path, repo: Path, name: str, **kw: object) -> Request:
    base_sha = sh(repo, "config", "netsky.base-sha")
    fields: dict[str, object] = {
        "harvest_id": f"h-{name}",
        "name": name,
        "scratch": tmp_path / "workspaces" / ".harvest" / f"h-{name}",
        "workspace_repo": repo,
        "branch": branch_of(name),
        "base_sha": base_sha,
        "target": src,
        "onto": "main",
        "check": None,
        "check_timeout_s": 30.0,
        "log_path": tmp_path / "logs" / f"h-{name}.log",
        "push": True,
    }
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


def test_workspace_names_are_safe() -> None:
    assert workspace_name("fix-transport") == "fix-transport"
    assert workspace_name("Fix the transport!") == "Fix-the-transport"
    assert workspace_name("../../etc/passwd") == "etc-passwd"
    assert workspace_name("-rf /") == "rf"
    assert workspace_name("a" * 300) == "a" * 64
    assert workspace_name("x.lock") == "x"
    for bad in ("", "..", "///", " - ", "."):
        with pytest.raises(ValueError):
            workspace_name(bad)


def test_pick_clone_takes_the_lowest_free_slot_and_names_the_holders() -> None:
    assert pick_clone(None, [], 3) == ("agent1", None)
    assert pick_clone(None, [1, 3], 3) == ("agent2", None)
    agent, why = pick_clone(None, [1, 2, 3], 3)
    assert agent is None and why is not None and "agent1, agent2, agent3" in why
    assert pick_clone(5, [], 3)[0] is None
    assert pick_clone(2, [2], 3)[0] is None
    assert pick_clone(2, [1], 3) == ("agent2", None)


async def test_a_green_harvest_fast_forwards_the_checked_out_branch(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "feature")
    tips = [commit(repo, f"f{i}.txt", f"{i}\n", f"add f{i}") for i in range(3)]
    (tmp_path / "logs").mkdir()
    out = await harvest(Git(60), request(tmp_path, src, repo, "feature", check="test -f f2.txt"))
    assert out.outcome == "landed", out.reason
    assert out.commits == 3 and out.check_exit == 0 and out.source_tip == tips[-1]
    assert sh(src, "rev-parse", "main") == out.onto_after
    assert [sh(src, "log", "-1", "--format=%s", f"main~{i}") for i in (2, 1, 0)] == [
        "add f0", "add f1", "add f2"
    ]  # fmt: skip
    assert (src / "f2.txt").read_text() == "2\n"  # the working tree moved with the branch
    assert sh(src, "status", "--porcelain") == ""
    assert sh(src, "worktree", "list").count("\n") == 0  # the scratch worktree is gone
    assert sh(src, "for-each-ref", "refs/netsky") == ""  # and the private ref


async def test_a_conflict_leaves_the_target_byte_identical(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "clash")
    commit(repo, "shared.txt", "clone's\n", "clone edits shared")
    commit(src, "shared.txt", "agent0's\n", "agent0 edits shared")
    before = snapshot(src)
    out = await harvest(Git(60), request(tmp_path, src, repo, "clash"))
    assert out.outcome == "conflict" and out.conflicts == ["shared.txt"]
    assert "shared.txt" in (out.reason or "")
    assert snapshot(src) == before


async def test_a_red_check_leaves_the_target_byte_identical(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "red")
    commit(repo, "new.txt", "x\n", "add new")
    before = snapshot(src)
    req = request(tmp_path, src, repo, "red", check="echo checking; exit 7")
    out = await harvest(Git(60), req)
    assert out.outcome == "red" and out.check_exit == 7 and "exited 7" in (out.reason or "")
    assert "checking" in req.log_path.read_text()
    assert snapshot(src) == before


async def test_a_check_past_its_deadline_is_red(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "slow")
    commit(repo, "new.txt", "x\n", "add new")
    before = snapshot(src)
    req = request(tmp_path, src, repo, "slow", check="sleep 30", check_timeout_s=0.5)
    out = await harvest(Git(60), req)
    assert out.outcome == "red" and "did not finish within 0.5s" in (out.reason or "")
    assert snapshot(src) == before


async def test_a_dirty_target_is_refused_untouched(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "dirty")
    commit(repo, "new.txt", "x\n", "add new")
    (src / "README").write_text("edited by the owner\n")
    before = snapshot(src)
    with pytest.raises(HarvestRefused, match="uncommitted changes"):
        await harvest(Git(60), request(tmp_path, src, repo, "dirty"))
    assert snapshot(src) == before


async def test_nothing_to_harvest_is_refused(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "empty")
    with pytest.raises(HarvestRefused, match="nothing to harvest"):
        await harvest(Git(60), request(tmp_path, src, repo, "empty"))


async def test_a_branch_not_checked_out_moves_by_update_ref(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    sh(src, "branch", "release")
    repo = await brief(tmp_path, src, "rel")
    commit(repo, "r.txt", "r\n", "for release")
    out = await harvest(Git(60), request(tmp_path, src, repo, "rel", onto="release"))
    assert out.outcome == "landed"
    assert sh(src, "rev-parse", "release") == out.onto_after != sh(src, "rev-parse", "main")
    assert not (src / "r.txt").exists()  # main's tree is not touched


async def test_a_clone_cannot_push_into_the_checked_out_branch(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    repo = await brief(tmp_path, src, "push")
    commit(repo, "p.txt", "p\n", "sneaky")
    before = sh(src, "rev-parse", "main")
    res = await anyio.run_process(
        ["git", "push", "origin", "HEAD:main"], cwd=repo, env=ENV, check=False
    )
    assert res.returncode != 0 and b"refusing to update checked out branch" in res.stderr
    assert sh(src, "rev-parse", "main") == before


async def test_a_second_brief_into_a_workspace_reuses_it(tmp_path: Path) -> None:
    src = source_repo(tmp_path)
    first = await brief(tmp_path, src, "pair")
    commit(first, "a.txt", "a\n", "first agent's work")
    again = await create(Git(60), src, tmp_path / "workspaces", "pair", None, "agent2")
    assert not again.created and again.repo == first and (first / "a.txt").exists()


async def test_git_has_a_deadline(tmp_path: Path) -> None:
    git = Git(0.5)
    with pytest.raises(GitError, match="did not finish within 0.5s"):
        await git.run("-c", "alias.slow=!sleep 30", "slow", cwd=tmp_path)



async def test_a_harvest_a_killed_daemon_left_is_recovered(tmp_path: Path) -> None:
    from netsky_shared.paths import Paths
    from netskyd.store.db import Store
    from netskyd.store.journal import Journal
    from netskyd.store.recorder import Recorder
    from netskyd.store.work import WorkRecords
    from netskyd.work.loop import WorkLoop

    src = source_repo(tmp_path)
    home = tmp_path / "home"
    paths = Paths(home)
    paths.logs.mkdir(parents=True)
    scratch = paths.workspaces / ".harvest" / "t-x"
    sh(src, "worktree", "add", "-q", "--detach", str(scratch), "main")  # as a dead daemon left it
    sh(src, "update-ref", "refs/netsky/harvest/x", "main")
    store = await Store.open(home / "meta.db")
    try:
        records = WorkRecords(store)
        row = {"ts": "t", "dispatch_id": None, "agent": "agent1", "workspace": "x",
               "target_repo": str(src), "onto": "main", "outcome": "running"}  # fmt: skip
        hid = await records.add_harvest(row)
        settings = type("S", (), {"paths": paths})()
        loop = WorkLoop(
            settings=lambda: settings,  # type: ignore[arg-type, return-value]
            git=Git(30),
            records=records,
            recorder=Recorder(Journal(paths.logs), store),
            crew=None,  # type: ignore[arg-type]
            agents=None,  # type: ignore[arg-type]
        )
        assert await loop.recover() == 1
        [got] = await records.harvests()
        assert got["id"] == hid and got["outcome"] == "failed" and "interrupted" in got["reason"]
        assert not scratch.exists()
        assert sh(src, "worktree", "list").count("\n") == 0
        assert sh(src, "for-each-ref", "refs/netsky") == ""
        assert await loop.recover() == 0
    finally:
        await store.close()


async def test_a_landing_is_pushed_where_the_branch_has_an_upstream(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    sh(tmp_path, "init", "-q", "--bare", str(remote))
    src = source_repo(tmp_path)
    sh(src, "remote", "add", "origin", str(remote))
    sh(src, "push", "-q", "-u", "origin", "main")
    repo = await brief(tmp_path, src, "pushed")
    tip = commit(repo, "p.txt", "p\n", "to be pushed")
    out = await harvest(Git(60), request(tmp_path, src, repo, "pushed"))
    assert out.outcome == "landed" and out.pushed == "origin/main"
    assert sh(remote, "log", "-1", "--format=%s", "main") == "to be pushed"
    assert sh(remote, "rev-parse", "main") == out.onto_after != tip  # a new commit, same change
    # With push off (--no-push), the remote stays behind.
    commit(repo, "q.txt", "q\n", "kept local")
    req = request(tmp_path, src, repo, "pushed", push=False, base_sha=tip)
    local = await harvest(Git(60), req)
    assert local.outcome == "landed" and local.pushed is None
    assert sh(remote, "log", "-1", "--format=%s", "main") == "to be pushed"
