"""The daemon's pulse: heartbeat file and sd_notify watchdog pings, from the event loop.

STUB — filled in by the sd_notify work.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from anyio.abc import TaskStatus

from netskyd.context import Context


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: the heartbeat and ``WATCHDOG=1`` every ``heartbeat_s``."""
    task_status.started()
    await anyio.sleep_forever()


def block_loop(seconds: float) -> dict[str, Any]:
    """``debug.block_loop``: block the event loop (time.sleep) for ``seconds``."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point: a wedged event loop
    return {"blocked_s": seconds}
