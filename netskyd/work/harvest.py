"""Harvest: a clone's commits onto the target branch, behind the check, or not at all.

``harvest(...)`` (docs/work.md, "Harvest"):

1. **refuse** when the target repository has uncommitted changes (staged, unstaged or
   untracked files) or the target branch does not exist: nothing is touched;
2. **fetch** the workspace's branch into a private ref of the target
   (``refs/netsky/harvest/<name>``): objects only, no branch moves;
3. **apply** the range ``base_sha..tip`` (the clone's own commits, merges skipped) by
   cherry-pick in a scratch worktree checked out detached at the target branch's tip
   (``workspaces/.harvest/<id>``); a conflict aborts it there;
4. **check**: ``check_command`` runs in the scratch worktree with a deadline, its output in
   ``logs/harvest/<id>.log``; a non-zero exit or the deadline is red;
5. **land** only on green: the target branch moves to the new tip, by ``merge --ff-only`` in
   the target's own working tree when the branch is checked out there (it is clean, step 1),
   else by ``update-ref`` with the old tip as the expected value (a branch that moved since
   step 3 is not overwritten); then **push** where the branch has an upstream.

The scratch worktree and the private ref are removed whatever happened. Until step 5 the
target's branches, working tree and index are never written, so a conflict, a red check or
a deadline leaves them exactly as they were. Every git call has a deadline (the Git port).
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from netsky_shared.errors import GitError, HarvestRefused
from netskyd.work.git import Git, run_command
from netskyd.work.workspaces import current_branch


@dataclass
class Outcome:
    """What a harvest did. ``outcome``: ``landed``, ``conflict``, ``red`` or ``failed``
    (a refusal raises HarvestRefused instead). Shas are full; ``commits`` is the number of
    commits applied (or that would have been)."""

    outcome: str
    onto: str
    onto_before: str
    onto_after: str | None = None
    source_tip: str | None = None
    commits: int = 0
    check_exit: int | None = None
    check_s: float | None = None
    log_path: str | None = None
    pushed: str | None = None
    reason: str | None = None
    conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """One harvest: from ``workspace_repo``'s ``branch`` (commits after ``base_sha``) onto
    ``target``'s branch ``onto``; ``check`` a shell command or None; ``harvest_id`` names
    the scratch worktree and the log file."""

    harvest_id: str
    name: str
    #: Where the scratch worktree goes (removed after): outside the target's tree.
    scratch: Path
    workspace_repo: Path
    branch: str
    base_sha: str
    target: Path
    onto: str
    check: str | None
    check_timeout_s: float
    log_path: Path
    push: bool


async def dirty(git: Git, target: Path) -> list[str]:
    """The target's uncommitted paths (``git status --porcelain``), [] when clean."""
    # --no-optional-locks: status must not write back its refreshed index (byte-identical).
    out = await git.run(
        "--no-optional-locks", "status", "--porcelain", "--untracked-files=normal", cwd=target
    )
    return [line[3:] for line in out.splitlines() if line.strip()]


async def harvest(git: Git, req: Request) -> Outcome:
    """Carry out ``req`` (module docstring). Returns the Outcome; raises HarvestRefused
    before anything is touched (dirty target, unknown branch, nothing to apply), GitError
    when git fails outside the steps that have an outcome of their own."""
    target = req.target
    changed = await dirty(git, target)
    if changed:
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        raise HarvestRefused(f"{target} has uncommitted changes ({shown}): commit or stash first")
    onto_ref = f"refs/heads/{req.onto}"
    onto_res = await git.probe("rev-parse", "--verify", "--quiet", onto_ref, cwd=target)
    if onto_res.code != 0:
        raise HarvestRefused(f"{target} has no branch {req.onto}")
    onto_before = onto_res.out.strip()
    private = f"refs/netsky/harvest/{req.name}"
    try:
        await git.run(
            "fetch", "--quiet", "--no-tags", str(req.workspace_repo),
            f"+refs/heads/{req.branch}:{private}", cwd=target,
        )  # fmt: skip
        tip = await git.run("rev-parse", "--verify", private, cwd=target)
        commits = (
            await git.run(
                "rev-list", "--reverse", "--no-merges", f"{req.base_sha}..{tip}", cwd=target
            )
        ).split()
        if not commits:
            raise HarvestRefused(
                f"{req.branch} has no commits after {req.base_sha[:12]}: nothing to harvest"
            )
        out = Outcome("failed", req.onto, onto_before, source_tip=tip, commits=len(commits))
        scratch = req.scratch
        scratch.parent.mkdir(parents=True, exist_ok=True)
        await git.run(
            "worktree", "add", "--quiet", "--detach", str(scratch), onto_before, cwd=target
        )  # fmt: skip
        try:
            await _apply_check_land(git, req, scratch, commits, out)
        finally:
            with anyio.CancelScope(shield=True):
                await _remove_scratch(git, target, scratch)
        return out
    finally:
        with anyio.CancelScope(shield=True):
            await git.probe("update-ref", "-d", private, cwd=target)


async def _apply_check_land(
    git: Git, req: Request, scratch: Path, commits: list[str], out: Outcome
) -> None:
    picked = await git.probe("cherry-pick", "--allow-empty", *commits, cwd=scratch)
    if picked.code != 0:
        unmerged = await git.probe("diff", "--name-only", "--diff-filter=U", cwd=scratch)
        out.conflicts = unmerged.out.split()
        await git.probe("cherry-pick", "--abort", cwd=scratch)
        files = ", ".join(out.conflicts[:5]) or "see git's message"
        last = " | ".join((picked.err or picked.out).strip().splitlines()[-2:])
        out.outcome = "conflict"
        out.reason = f"conflict applying onto {req.onto} in {files}: {last}"
        return
    new_tip = await git.run("rev-parse", "HEAD", cwd=scratch)
    if req.check:
        req.log_path.parent.mkdir(parents=True, exist_ok=True)
        out.log_path = str(req.log_path)
        header = f"$ {req.check}\n# in the applied tree {new_tip} ({len(commits)} commits)\n"
        req.log_path.write_text(header, encoding="utf-8")
        t0 = time.monotonic()
        try:
            res = await run_command(
                ["sh", "-c", req.check],
                cwd=scratch,
                env=git.env,
                timeout_s=req.check_timeout_s,
                what=f"check {shlex.quote(req.check)}",
                stdout_path=req.log_path,
            )
            out.check_exit = res.code
        except GitError as e:
            out.check_s = round(time.monotonic() - t0, 3)
            out.outcome, out.reason = "red", str(e)
            return
        out.check_s = round(time.monotonic() - t0, 3)
        if res.code != 0:
            out.outcome = "red"
            out.reason = f"check {req.check!r} exited {res.code} (log: {req.log_path})"
            return
    await _land(git, req, new_tip, out)


async def _land(git: Git, req: Request, new_tip: str, out: Outcome) -> None:
    target = req.target
    if await current_branch(git, target) == req.onto:
        # The branch is checked out in the target's own tree (agent0's): move both,
        # fast-forward only; the tree is clean (checked first) so nothing is lost.
        moved = await git.probe("merge", "--quiet", "--ff-only", new_tip, cwd=target)
        if moved.code != 0:
            out.outcome = "failed"
            out.reason = f"{req.onto} moved while the check ran; nothing was changed"
            return
    else:
        moved = await git.probe(
            "update-ref", f"refs/heads/{req.onto}", new_tip, out.onto_before, cwd=target
        )
        if moved.code != 0:
            out.outcome = "failed"
            out.reason = f"{req.onto} moved while the check ran; nothing was changed"
            return
    out.outcome, out.onto_after = "landed", new_tip
    if req.push:
        upstream = await git.probe(
            "rev-parse", "--abbrev-ref", "--symbolic-full-name", f"{req.onto}@{{upstream}}",
            cwd=target,
        )  # fmt: skip
        if upstream.code == 0 and "/" in upstream.out.strip():
            remote = upstream.out.strip().split("/", 1)[0]
            pushed = await git.probe("push", "--quiet", remote, req.onto, cwd=target)
            out.pushed = upstream.out.strip() if pushed.code == 0 else None
            if pushed.code != 0:
                out.reason = f"landed; push to {remote} failed: {pushed.err.strip()[-200:]}"


async def _remove_scratch(git: Git, target: Path, scratch: Path) -> None:
    res = await git.probe("worktree", "remove", "--force", str(scratch), cwd=target)
    if res.code != 0:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))
    await git.probe("worktree", "prune", cwd=target)
