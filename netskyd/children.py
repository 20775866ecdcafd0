"""Child processes with a deadline and their output read back (pipes, or a log file).

``run_child(argv, timeout_s=..., env=..., cwd=..., output=...)`` starts ``argv`` in a process group
of its own, reads its stdout and stderr (or, with ``output``, appends both to that file), and
returns ``(exit code, stdout, stderr)``. At the deadline, or when the caller is cancelled, the whole
group is SIGKILLed (a check that forked a server, a promote and its selftest), and the deadline
raises ``TimeoutError`` (an OSError: catch it first). Raises OSError when ``argv`` cannot start.
Users: git and the harvest check (netskyd.work), the last-known-good recorder. (A page leg's
children write to temporary files instead, netskyd.escalation.legs.process: a notifier that
forks a daemon keeps pipes open.)
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio


async def run_child(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    output: Path | None = None,
) -> tuple[int, str, str]:
    """Module docstring. ``env`` None inherits this process's environment."""
    out_file = None
    if output is not None:
        path = output
        out_file = await anyio.to_thread.run_sync(lambda: open(path, "ab"))  # noqa: SIM115
    chunks: dict[int, list[bytes]] = {1: [], 2: []}
    try:
        async with await anyio.open_process(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out_file if out_file is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT if out_file is not None else subprocess.PIPE,
            start_new_session=True,
        ) as proc:

            async def drain(stream: Any, key: int) -> None:
                if stream is not None:
                    async for chunk in stream:
                        chunks[key].append(chunk)

            try:
                with anyio.fail_after(timeout_s):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(drain, proc.stdout, 1)
                        tg.start_soon(drain, proc.stderr, 2)
                    await proc.wait()
            except BaseException:  # the deadline, or the caller cancelled: the group goes
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                raise
    finally:
        if out_file is not None:
            out_file.close()
    code = proc.returncode if proc.returncode is not None else -1
    return (
        code,
        b"".join(chunks[1]).decode("utf-8", "replace"),
        b"".join(chunks[2]).decode("utf-8", "replace"),
    )
