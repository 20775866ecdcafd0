"""Last-known-good installs: a self-contained copy of a netsky install that ran healthy.

STUB — filled in by the last-known-good work.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from netskyd.context import Context


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: after ``lkg_after_s`` healthy, record the running install."""
    task_status.started()
    await anyio.sleep_forever()
