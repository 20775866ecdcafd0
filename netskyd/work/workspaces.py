"""Workspaces: ``workspaces/<name>/repo``, a full git clone of the source repository on the
branch ``netsky/<name>``.

A clone is made in ``workspaces/<name>/.repo.tmp-<pid>`` and renamed into place, so a daemon
killed mid-clone leaves a temporary directory (removed by the next attempt), never a half
repository under ``repo``. The source repository gets ``receive.denyCurrentBranch=refuse``
first: a clone's ``git push`` can never move the branch agent0 has checked out. Every git
call goes through the ``Git`` port (a deadline each).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import anyio

from netsky_shared.errors import GitError
from netskyd.work.git import Git
from netskyd.work.names import branch_of


@dataclass(frozen=True)
class Workspace:
    """A workspace as created or found: its name, repository, branch and base."""

    name: str
    repo: Path
    branch: str
    #: What the branch started from: a branch name of the source (or a commit) and its sha.
    base: str
    base_sha: str
    #: True when this call cloned it; False when an existing workspace was reused.
    created: bool


async def source_of(git: Git, repo: Path) -> Path:
    """The top-level directory of the git repository at ``repo``. Raises GitError when
    ``repo`` is not inside a git working tree."""
    if not await anyio.to_thread.run_sync(repo.is_dir):
        raise GitError(f"source repository {repo} does not exist")
    return Path(await git.run("rev-parse", "--show-toplevel", cwd=repo))


async def current_branch(git: Git, repo: Path) -> str | None:
    """The branch checked out in ``repo``; None when its HEAD is detached."""
    res = await git.probe("symbolic-ref", "--quiet", "--short", "HEAD", cwd=repo)
    return res.out.strip() if res.code == 0 and res.out.strip() else None


async def guard_source(git: Git, source: Path) -> None:
    """``receive.denyCurrentBranch=refuse`` on ``source``: a push into its checked-out
    branch is refused (git's default only warns on some versions)."""
    await git.run("config", "receive.denyCurrentBranch", "refuse", cwd=source)


async def create(
    git: Git, source: Path, workspaces: Path, name: str, base: str | None, agent: str
) -> Workspace:
    """Clone ``source`` into ``workspaces/<name>/repo`` on ``netsky/<name>`` from ``base``
    (default: the branch ``source`` has checked out), or reuse the workspace when it
    already exists (a second agent briefed into it: same branch, same base).

    The clone commits as ``<agent> (netsky)`` when no git identity is configured.
    Raises GitError (not a repository, unknown base, detached HEAD with no ``base``, a
    clone that fails or misses its deadline).
    """
    repo = workspaces / name / "repo"
    branch = branch_of(name)
    if (repo / ".git").exists():
        return await _existing(git, repo, name, branch)
    await guard_source(git, source)
    if base is None:
        base = await current_branch(git, source)
        if base is None:
            raise GitError(f"{source} has a detached HEAD: name the base with --base")
    base_sha = await git.run("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", cwd=source)
    tmp = workspaces / name / f".repo.tmp-{os.getpid()}"
    await anyio.to_thread.run_sync(_clear_tmp, workspaces / name)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        await git.run("clone", "--quiet", "--no-checkout", str(source), str(tmp), cwd=tmp.parent)
        await git.run("checkout", "--quiet", "-b", branch, base_sha, cwd=tmp)
        await git.run("config", "netsky.workspace", name, cwd=tmp)
        await git.run("config", "netsky.base", base, cwd=tmp)
        await git.run("config", "netsky.base-sha", base_sha, cwd=tmp)
        if (await git.probe("config", "user.email", cwd=tmp)).code != 0:
            await git.run("config", "user.name", f"{agent} (netsky)", cwd=tmp)
            await git.run("config", "user.email", f"{agent}@netsky.localhost", cwd=tmp)
        os.rename(tmp, repo)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
        raise
    return Workspace(name, repo, branch, base, base_sha, created=True)


async def _existing(git: Git, repo: Path, name: str, branch: str) -> Workspace:
    base = await git.run("config", "netsky.base", cwd=repo)
    base_sha = await git.run("config", "netsky.base-sha", cwd=repo)
    return Workspace(name, repo, branch, base, base_sha, created=False)


def _clear_tmp(directory: Path) -> None:
    """Remove temporary clones a killed daemon left in ``directory``."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.name.startswith(".repo.tmp-"):
            shutil.rmtree(entry, ignore_errors=True)


async def head_of(git: Git, repo: Path, rev: str = "HEAD") -> str:
    """The commit ``rev`` names in ``repo`` (full sha). Raises GitError."""
    return await git.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=repo)


async def ahead(git: Git, repo: Path, base_sha: str, tip: str) -> int:
    """How many commits ``tip`` has that ``base_sha`` has not. Raises GitError."""
    return int(await git.run("rev-list", "--count", f"{base_sha}..{tip}", cwd=repo))


def remove(workspaces: Path, name: str) -> bool:
    """Delete ``workspaces/<name>`` (blocking: run in a thread); False when it was gone."""
    directory = workspaces / name
    if not directory.exists():
        return False
    shutil.rmtree(directory)
    return True
