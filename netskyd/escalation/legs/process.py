"""Running a leg's command: ``which`` finds it on the leg's PATH, ``run`` runs it to
completion in a process group of its own (killed when the leg's deadline passes), and
``script_args`` and ``last_line`` shape what goes in and what comes out."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import suppress

import anyio

from netskyd.config.legs import LegContext


def which(command: str, ctx: LegContext) -> str | None:
    """``command``'s path on ``ctx.environ``'s PATH (``os.defpath`` when unset), or None."""
    return shutil.which(command, path=ctx.environ.get("PATH", os.defpath))


async def run(argv: list[str], ctx: LegContext) -> tuple[int, str, str]:
    """Run argv to completion with ``ctx.environ``; return (exit status, stdout, stderr).

    Output goes to temporary files, not pipes, so a grandchild that keeps them open (a
    tmux server, a notification daemon) cannot hold us up. The child leads a process
    group of its own, which is SIGKILLed when we are cancelled (the leg's deadline).
    Raises OSError when argv cannot start.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=ctx.environ,
            start_new_session=True,
        )
        async with proc:
            try:
                await proc.wait()
            except BaseException:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
        out.seek(0)
        err.seek(0)
        code = proc.returncode
        assert code is not None
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def script_args(lines: tuple[str, ...]) -> list[str]:
    """osascript arguments for a script given line by line (``-e`` each)."""
    return [arg for line in lines for arg in ("-e", line)]


def last_line(text: str) -> str:
    """The last line of ``text`` that is not blank, stripped; "" when there is none."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
