"""Real git for the tests and benchmarks: an identity that needs no global git config, and
``git(repo, *args)`` with a deadline, failing the caller with git's own message."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

#: The environment test repositories are made and committed in.
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "netsky test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "netsky test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str, timeout_s: float = 600) -> str:
    """``git args`` in ``repo``; its stdout, stripped. Raises AssertionError with git's
    stderr when it fails."""
    res = subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True, timeout=timeout_s
    )
    if res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {repo}: {res.stderr.strip()}")
    return res.stdout.strip()


def new_repo(path: Path, files: dict[str, str], message: str = "start") -> Path:
    """A repository at ``path`` on ``main`` with ``files`` (name -> text) in one commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return path


def snapshot(repo: Path) -> dict[str, str]:
    """The bytes a failed harvest must not change: every branch, HEAD, the index and each
    file of the working tree (sha256 of each)."""
    files = {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    index = hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()
    return {"refs": refs, "HEAD": (repo / ".git" / "HEAD").read_text(), "index": index, **files}
