"""P6: ``netskyctl status`` latency against a running daemon with 10 agents.

Starts a real netskyd (demo runtime, 8 clones: agent0, agent1..agent8 and
agentinfinity) in a temporary NETSKY_HOME on a private tmux socket, waits until
all ten agents are ready, then times ``netskyctl status`` and a bare
``python -c pass`` interleaved, run for run, so machine noise hits both alike.
Target: median ``netskyctl status`` <= 2.5x the median bare interpreter (issue 15).

Prints one JSON object on stdout (progress goes to stderr). Exit code 0 even when
the target is missed; 1 when the daemon cannot be started or a status run fails.

    /tmp/venv/bin/python bench/status_latency.py [--runs 40] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import compile_bytecode, logger, p99, stop_on_sigterm  # noqa: E402
from tests.harness import Netsky, wait_for  # noqa: E402

CLONES = 8
AGENTS = ["agent0", *(f"agent{i}" for i in range(1, CLONES + 1)), "agentinfinity"]
READY_DEADLINE_S = 120.0
WARMUP_RUNS = 3
TARGET_RATIO = 2.5
TOP_IMPORTS = 5


log = logger("status_latency")


def netskyctl_cmd() -> list[str]:
    script = Path(sys.executable).parent / "netskyctl"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "client"]


def timed_run(cmd: list[str],
              env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run ``cmd`` once; return (wall milliseconds, result)."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=60, check=False)
    return (time.perf_counter() - t0) * 1000.0, res


def check_ok(res: subprocess.CompletedProcess[bytes], what: str) -> None:
    assert res.returncode == 0, (
        f"{what} exited {res.returncode}: {res.stderr.decode(errors='replace').strip()}")


def summary(samples_ms: list[float]) -> dict[str, float]:
    high = p99(samples_ms)
    return {"p50": round(statistics.median(samples_ms), 2), "p99": round(high, 2),
            "mean": round(statistics.fmean(samples_ms), 2)}


def client_imports(env: dict[str, str], top: int = TOP_IMPORTS) -> list[list[Any]]:
    """Top ``top`` cumulative import costs (us) of one ``netskyctl status`` (lazy imports too)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "client", "status"],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=60, check=False)
    if res.returncode != 0:
        log(f"importtime run failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        return []
    rows: list[tuple[str, int]] = []
    for line in res.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        try:
            cumulative = int(parts[1].strip())
        except ValueError:  # the header line
            continue
        rows.append((parts[2].strip(), cumulative))
    rows.sort(key=lambda r: r[1], reverse=True)
    return [[name, us] for name, us in rows[:top]]


def measure(runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    bare = [sys.executable, "-c", "pass"]
    ctl = [*netskyctl_cmd(), "status"]
    log(f"client command: {' '.join(ctl)}")
    samples: dict[str, list[float]] = {"bare": [], "ctl": []}
    total = WARMUP_RUNS + runs
    for i in range(total):
        warm = i < WARMUP_RUNS
        # Alternate which goes first so neither always follows the other.
        order = (("bare", bare), ("ctl", ctl)) if i % 2 == 0 else (("ctl", ctl), ("bare", bare))
        for key, cmd in order:
            ms, res = timed_run(cmd, env)
            check_ok(res, "netskyctl status" if key == "ctl" else "python -c pass")
            if not warm:
                samples[key].append(ms)
        if not warm and (i - WARMUP_RUNS + 1) % 10 == 0:
            log(f"{i - WARMUP_RUNS + 1}/{runs} runs")
    return samples



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="timed runs of each command (default 40)")
    ap.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    if args.runs < 2:
        ap.error("--runs must be at least 2")
    if shutil.which("tmux") is None:
        log("tmux is not installed")
        return 1
    stop_on_sigterm()
    compiled = compile_bytecode()
    log(f"netsky's modules byte-compiled: {compiled}")

    tmp = Path(tempfile.mkdtemp(prefix="netsky-bench-"))
    netsky: Netsky | None = None
    try:
        netsky = Netsky(tmp / "home", runtime="demo", clones=CLONES)
        env = netsky.env
        log(f"starting netskyd in {netsky.home} (tmux -L {netsky.socket_name})")
        try:
            netsky.start()
            t0 = time.monotonic()
            wait_for(lambda: netsky.all_ready(AGENTS), READY_DEADLINE_S,
                     f"all {len(AGENTS)} agents ready", step_s=0.5)
            log(f"all {len(AGENTS)} agents ready after {time.monotonic() - t0:.1f}s")
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            log(f"could not start netskyd: {e}")
            log("daemon stderr (tail):\n" + netsky.stderr()[-2000:])
            return 1

        imports = client_imports(env)
        log(f"warm-up {WARMUP_RUNS}, then {args.runs} interleaved runs each")
        try:
            samples = measure(args.runs, env)
        except (AssertionError, subprocess.TimeoutExpired) as e:
            log(f"a run failed: {e}")
            return 1
        if netsky.proc is not None and netsky.proc.poll() is not None:
            log("netskyd exited during the benchmark")
            return 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if netsky is not None:
            netsky.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    bare_s, ctl_s = summary(samples["bare"]), summary(samples["ctl"])
    ratio = statistics.median(samples["ctl"]) / statistics.median(samples["bare"])
    result: dict[str, Any] = {
        "benchmark": "P6 netskyctl status",
        "agents": len(AGENTS),
        "runs": args.runs,
        "python_pass_ms": bare_s,
        "netskyctl_status_ms": ctl_s,
        "ratio_p50": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        # The status path's modules were byte-compiled first (bench.common.compile_bytecode).
        "bytecode_compiled": compiled,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "client_imports_us": imports,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    if not result["meets_target"]:
        log(f"target missed: ratio {ratio:.2f} > {TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
