"""What every benchmark script shares: its log line, SIGTERM as Ctrl-C, the machine facts
printed with each result, and the p99 of a sample.

Imported as ``bench.common`` (each script puts the repository on ``sys.path`` first).
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import sys
from collections.abc import Callable, Sequence


def logger(name: str) -> Callable[[str], None]:
    """``log(msg)``: one ``[name] msg`` line on stderr (stdout carries the JSON result)."""

    def log(msg: str) -> None:
        sys.stderr.write(f"[{name}] {msg}\n")
        sys.stderr.flush()

    return log


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """Make SIGTERM act as Ctrl-C, so a killed benchmark still runs its cleanup (the
    daemon, tmux servers and temporary homes it started)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def compile_bytecode() -> bool:
    """Byte-compile netsky's own packages (``compileall``) so a timed start-up does not
    compile them: with ``PYTHONDONTWRITEBYTECODE`` set (some environments do) no ``.pyc``
    is ever written and every run pays the compiler, which is not what a user's second
    run costs. Returns True when every module compiled."""
    import compileall
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    packages = ("netskyd", "netsky_shared", "client")
    return all(compileall.compile_dir(root / pkg, quiet=1) for pkg in packages)


def machine_facts() -> dict[str, object]:
    """``{"cpus", "python", "platform"}``: where the figures were measured."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile (inclusive method; the only sample when there is one)."""
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=100, method="inclusive")[98]
