"""Every git call of the work loop, each with a deadline (``git_timeout_s``).

``Git.run(*args, cwd=...)`` runs ``git`` in its own process group with no terminal
prompts (``GIT_TERMINAL_PROMPT=0``) and C locale output, and returns its stdout;
a non-zero exit raises GitError with git's last lines, and a command that outlives its
deadline is killed (the whole group) and raises GitError too. Nothing else in netsky
runs git, so no git call can wedge the tick.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from netsky_shared.errors import GitError
from netsky_shared.git import without_repo_vars
from netskyd.children import run_child

#: The identity commits made by netsky itself fall back to (a cherry-pick needs a
#: committer; a machine with no git identity must still harvest).
FALLBACK_NAME = "netsky"
FALLBACK_EMAIL = "netsky@localhost"


@dataclass(frozen=True)
class Result:
    """A finished git command: exit code, stdout and stderr (text)."""

    code: int
    out: str
    err: str


def git_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment every git call runs with: ``environ`` without the variables that
    redirect git, no prompts, C locale, and a fallback committer identity."""
    env = without_repo_vars(dict(environ))
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_EDITOR="true", GIT_PAGER="cat")
    env.setdefault("GIT_COMMITTER_NAME", FALLBACK_NAME)
    env.setdefault("GIT_COMMITTER_EMAIL", FALLBACK_EMAIL)
    return env


class Git:
    """The git port: ``run`` and ``probe`` with one deadline per call (seconds)."""

    def __init__(self, timeout_s: float, environ: Mapping[str, str] | None = None) -> None:
        self.timeout_s = timeout_s
        self.env = git_env(os.environ if environ is None else environ)

    async def probe(
        self,
        *args: str,
        cwd: Path,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run ``git args`` in ``cwd``; the Result whatever the exit code. Raises GitError
        only when git cannot start or misses its deadline."""
        return await run_command(
            ["git", *args],
            cwd=cwd,
            env={**self.env, **(env or {})},
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            what=f"git {' '.join(args[:2])}",
        )

    async def run(
        self,
        *args: str,
        cwd: Path,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Run ``git args`` in ``cwd`` and return its stdout, stripped of the last newline.
        Raises GitError (exit status and git's last lines) when it fails."""
        res = await self.probe(*args, cwd=cwd, timeout_s=timeout_s, env=env)
        if res.code != 0:
            tail = " | ".join((res.err or res.out).strip().splitlines()[-3:])
            raise GitError(f"git {' '.join(args)} failed in {cwd} (exit {res.code}): {tail}")
        return res.out.rstrip("\n")


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    what: str,
    stdout_path: Path | None = None,
) -> Result:
    """Run ``argv`` in its own process group with a deadline (netskyd.children); the group
    is killed at it. With ``stdout_path`` both streams go to that file (appended) and the
    Result's texts are empty. Raises GitError when it cannot start or times out."""
    try:
        code, out, err = await run_child(
            argv, timeout_s=timeout_s, env=env, cwd=cwd, output=stdout_path
        )
    except TimeoutError as e:  # an OSError too: first
        raise GitError(f"{what} did not finish within {timeout_s:g}s (killed)") from e
    except OSError as e:
        raise GitError(f"{what}: cannot start {argv[0]}: {e}") from e
    return Result(code, out, err)
