"""The demo agent's brief steps (netskyd.agents.demo_work) with real git in a temporary
repository: what a demo clone does with a brief, so the work loop runs with no model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netskyd.agents import demo_work
from tests.gitrepo import GIT_ENV

ENV = GIT_ENV


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30, env=ENV)
    return tmp_path


def test_steps_are_read_from_the_brief_lines_in_order() -> None:
    text = "brief for agent3: prose\nwrite a.txt hello there\n  commit first\nreport\nnot a step"
    assert demo_work.is_brief("agent3", text) and not demo_work.is_brief("agent4", text)
    assert demo_work.steps(text) == [
        ("write", "a.txt hello there"),
        ("commit", "first"),
        ("report", ""),
    ]


def test_write_append_commit_with_real_git(repo: Path) -> None:
    said: list[str] = []
    text = "write notes/a.txt one\nappend notes/a.txt two\ncommit add a"
    assert demo_work.run_steps(text, repo, ENV, said.append)
    assert (repo / "notes" / "a.txt").read_text() == "one\ntwo\n"
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, timeout=30
    )
    assert log.stdout.split("\n")[0] == "add a" and said[-1].startswith("committed ")


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", ".git/config"])
def test_a_step_never_writes_outside_the_workspace(repo: Path, name: str) -> None:
    said: list[str] = []
    assert not demo_work.run_steps(f"write {name} x\ncommit never", repo, ENV, said.append)
    assert said and said[0].startswith("step failed: write")
    assert not (repo.parent / "escape.txt").exists()
    assert "[core]" in (repo / ".git" / "config").read_text()
