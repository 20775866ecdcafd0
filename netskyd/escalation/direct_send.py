"""One page leg in a child process of its own: the sender of ``netskyctl escalate --direct``.

With no daemon to keep a wedged leg in check, each leg of a ``--direct`` round runs in
``python -m netskyd.escalation.legs``, killed at its deadline, so one leg that hangs (an
SMTP server that never answers) cannot hold the others. The daemon sends in-process
(``netskyd.escalation.legs.send``); both are a ``Sender``, what ``send_all`` takes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from netskyd.config.legs import LegContext, LegResult, Page


async def send_in_process_of_its_own(name: str, leg: Any, page: Page, ctx: LegContext) -> LegResult:
    """Run one leg in a child ``python -m netskyd.escalation.legs`` (the ``--direct`` path).

    The child gets the request on stdin and prints one LegResult JSON line; it is killed
    when it has not answered within the leg timeout plus 5 s (then ``failed``).
    """
    request = {
        "name": name,
        "leg": leg.model_dump(mode="json", by_alias=True),
        "page": page.to_json(),
        "timeout_s": ctx.timeout_s,
        "home": str(ctx.home),
        "tmux_socket": ctx.tmux_socket,
    }
    t0 = anyio.current_time()
    argv = [sys.executable, "-m", "netskyd.escalation.legs"]
    try:
        with anyio.fail_after(ctx.timeout_s + 5):
            # run_process reads both pipes at once and kills the child when cancelled.
            proc = await anyio.run_process(
                argv, input=json.dumps(request).encode(), env=ctx.environ, check=False
            )
    except TimeoutError:
        ms = round((anyio.current_time() - t0) * 1000, 1)
        return LegResult(
            name, "failed", f"leg process gave no answer in {ctx.timeout_s + 5:g}s", ms
        )
    out, err, code = proc.stdout, proc.stderr, proc.returncode
    try:
        d = json.loads(out.decode().strip().splitlines()[-1])
        return LegResult(d["leg"], d["status"], d["reason"], d["duration_ms"])
    except (ValueError, IndexError, KeyError):
        ms = round((anyio.current_time() - t0) * 1000, 1)
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return LegResult(name, "failed", f"leg process exited {code}: {tail[0][:200]}", ms)
