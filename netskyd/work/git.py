"""Every git call of the work loop, each with a deadline (``git_timeout_s``).

``Git.run(*args, cwd=...)`` runs ``git`` in its own process group with no terminal
prompts (``GIT_TERMINAL_PROMPT=0``) and C locale output, and returns its stdout;
a non-zero exit raises GitError with git's last lines, and a command that outlives its
deadline is killed (the whole group) and raises GitError too. Nothing else in netsky
runs git, so no git call can wedge the tick.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from netsky_shared.errors import GitError
from netsky_shared.git import without_repo_vars

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
    """Run ``argv`` in its own process group with a deadline; kill the group at the
    deadline. With ``stdout_path`` both streams go to that file (appended) and the
    Result's texts are empty. Raises GitError when it cannot start or times out."""
    out_file = None
    if stdout_path is not None:
        path = stdout_path
        out_file = await anyio.to_thread.run_sync(lambda: open(path, "ab"))  # noqa: SIM115
    try:
        try:
            proc = await anyio.open_process(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out_file if out_file is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT if out_file is not None else subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise GitError(f"{what}: cannot start {argv[0]}: {e}") from e
        chunks: dict[str, list[bytes]] = {"out": [], "err": []}

        async def drain(stream: object, key: str) -> None:
            if stream is None:
                return
            async for chunk in stream:  # type: ignore[attr-defined]
                chunks[key].append(chunk)

        try:
            with anyio.fail_after(timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, proc.stdout, "out")
                    tg.start_soon(drain, proc.stderr, "err")
                    code = await proc.wait()
        except TimeoutError as e:
            _kill_group(proc.pid)
            with anyio.move_on_after(5, shield=True):
                await proc.wait()
            raise GitError(f"{what} did not finish within {timeout_s:g}s (killed)") from e
        finally:
            await proc.aclose()
    finally:
        if out_file is not None:
            out_file.close()
    return Result(
        code,
        b"".join(chunks["out"]).decode("utf-8", "replace"),
        b"".join(chunks["err"]).decode("utf-8", "replace"),
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
