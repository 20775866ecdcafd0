"""``netskyctl drill``: real faults in a sandbox, each with a verdict and timings.

A drill builds a sandbox (client.drills.sandbox: its own NETSKY_HOME in a temporary
directory, its own tmux socket ``netsky-drill-<hex>``, demo agents, fast settings),
starts a real daemon of the running install, injects one fault, measures the repair
and tears everything down. The report (docs/keepalive.md, "Drills")::

    {"drill", "verdict": "pass"|"fail", "reason", "timings_ms": {name: ms},
     "counts": {name: int}, "steps": [{"t_ms", "step", "detail"}], "home", "kept",
     "tmux_socket", "daemon_pids", "started_ts", "duration_ms", "deadline_s", "version"}

is saved as ``drills/<ts>-<name>.json`` in the owner's NETSKY_HOME. Stdlib only
(netskyctl imports this lazily, inside the command).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.drills import agents, keepalive
from client.drills.run import DrillFailed, DrillInterrupted, Run, format_step
from client.drills.sandbox import Sandbox
from netsky_shared import __version__
from netsky_shared.ids import rfc3339

#: A drill's whole budget unless ``--deadline`` says otherwise.
DEFAULT_DEADLINE_S = 120.0


@dataclass(frozen=True)
class Drill:
    """One drill: ``fn(run, box)`` injects the fault and checks the repair; ``timings``
    are the ``timings_ms`` keys a pass must have measured."""

    name: str
    summary: str
    fn: Callable[[Run, Sandbox], None]
    timings: tuple[str, ...]


DRILLS: dict[str, Drill] = {
    d.name: d
    for d in (
        Drill(
            "agent0-crash",
            "kill -9 agent0: back in a new session with a synthetic handoff",
            agents.agent0_crash,
            ("noticed_ms", "ready_ms", "handoff_ms"),
        ),
        Drill(
            "daemon-kill",
            "kill -9 netskyd: the shim revives it and it adopts every agent",
            keepalive.daemon_kill,
            ("shim_ms", "revived_ms"),
        ),
        Drill(
            "hang",
            "a clone stops answering with work pending: marked hung and paged",
            agents.hang,
            ("hung_ms", "paged_ms"),
        ),
        Drill(
            "escalate-fail",
            "a page leg fails twice: the spool retries it until it delivers once",
            keepalive.escalate_fail,
            ("first_failure_ms", "delivered_ms"),
        ),
        Drill(
            "gave-up-archive",
            "restarts give up (marker, page); after the fix the marker is archived",
            agents.gave_up_archive,
            ("gave_up_ms", "recovered_ms"),
        ),
    )
}


def judge(
    timings_ms: Mapping[str, float], required: tuple[str, ...], error: str | None
) -> tuple[str, str]:
    """The verdict and its reason: ``("fail", error)`` when the drill raised; ``("fail",
    ...)`` when a required timing is missing or not positive; else ``("pass", "")``."""
    if error:
        return "fail", error
    missing = [k for k in required if not timings_ms.get(k, 0) > 0]
    if missing:
        return "fail", f"not measured: {', '.join(missing)}"
    return "pass", ""


def run_drill(
    drill: Drill,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    keep: bool = False,
    environ: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``drill`` in a fresh sandbox and return its report (module docstring).

    Never raises for the drill's own failures: a failed check, a wait past its
    deadline, an unexpected error, or an interrupt (Ctrl-C, SIGTERM; reason
    ``interrupted``) is a ``fail`` report. The sandbox is torn down in every case.
    """
    run = Run(drill.name, deadline_s, echo=echo, progress=progress)
    box: Sandbox | None = None
    error: str | None = None
    try:
        with _interruptible():
            try:
                box = Sandbox(run, dict(environ) if environ is not None else None)
                run.step("sandbox", f"home {box.home}, tmux socket {box.socket_name}")
                drill.fn(run, box)
            except DrillFailed as e:
                error = str(e)
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (DrillInterrupted)
                error = "interrupted"
            except Exception as e:  # a drill reports, it never dies with a traceback
                error = f"unexpected {type(e).__name__}: {e}"
            if error:
                run.step("failed", error)
    finally:
        with _uninterruptible():
            if box is not None:
                for phrase in box.teardown(keep):
                    run.step("teardown", phrase)
    verdict, reason = judge(run.timings_ms, drill.timings, error)
    return {
        "drill": drill.name,
        "verdict": verdict,
        "reason": reason,
        "timings_ms": dict(run.timings_ms),
        "counts": dict(run.counts),
        "steps": run.steps,
        "home": str(box.home) if box is not None else None,
        "kept": keep,
        "tmux_socket": box.socket_name if box is not None else None,
        "daemon_pids": list(box.daemon_pids) if box is not None else [],
        "started_ts": rfc3339(run.started_wall),
        "duration_ms": round(run.elapsed_ms(), 1),
        "deadline_s": deadline_s,
        "version": __version__,
    }


def save_report(report: Mapping[str, Any], owner_home: str | os.PathLike[str]) -> Path:
    """Write ``report`` to ``<owner_home>/drills/<yyyymmddThhmmssZ>-<name>.json`` and return
    the path. Written to a temporary file, then hard-linked to a name nobody has taken
    (``-2``, ``-3``... after the name): two drills saving at once never overwrite."""
    folder = Path(owner_home) / "drills"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = str(report["started_ts"])[:19].replace("-", "").replace(":", "") + "Z"
    tmp = folder / f".{stamp}-{report['drill']}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    try:
        n = 1
        while True:
            suffix = "" if n == 1 else f"-{n}"
            path = folder / f"{stamp}-{report['drill']}{suffix}.json"
            try:
                os.link(tmp, path)
            except FileExistsError:
                n += 1
                continue
            except OSError:  # no hard links on this file system: rename, best effort
                if path.exists():
                    n += 1
                    continue
                os.replace(tmp, path)
            return path
    finally:
        tmp.unlink(missing_ok=True)


def format_verdict(report: Mapping[str, Any]) -> str:
    """``PASS agent0-crash in 12.3s (noticed 85 ms, ...)`` or ``FAIL name in 9.1s: reason``."""
    took = f"{report['duration_ms'] / 1000:.1f}s"
    if report["verdict"] == "pass":
        measured = ", ".join(
            f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in report["timings_ms"].items()
        )
        counts = ", ".join(f"{k} {v}" for k, v in report.get("counts", {}).items())
        extra = "; ".join(x for x in (measured, counts) if x)
        return f"PASS {report['drill']} in {took}" + (f" ({extra})" if extra else "")
    return f"FAIL {report['drill']} in {took}: {report['reason']}"


def format_report(report: Mapping[str, Any]) -> str:
    """The human report: one line per step, then the verdict line."""
    return "\n".join([*(format_step(s) for s in report["steps"]), format_verdict(report)])


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise DrillInterrupted(f"signal {signum}")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM interrupts the drill like Ctrl-C does, so its sandbox is torn down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off while the sandbox is torn down (it is bounded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
