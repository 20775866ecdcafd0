"""P4: the cost of one tick's tmux work, at 10 and 100 agents.

Each tick needs every session's pane (liveness) and the recent text of every agent's
pane (readiness, hang detection). This starts N real tmux sessions on a private
``netsky-test-*`` socket (agent0, agent1..agent{N-2}, agentinfinity; 200x50 like an
agent's, each printing 200 lines of 80 characters, then sleeping) and times, interleaved run for run
in one process (anyio, uvloop where installed, as the daemon):

- ``snapshot``: ``Tmux.snapshot(names, lines=50)``, one tmux client for
  ``list-panes`` plus every ``capture-pane`` (netskyd's way);
- ``naive`` (the baseline): ``Tmux.list_panes()`` then ``Tmux.capture(name, 50)`` per
  agent, one tmux client each, one after the other.

Both go through netskyd's tmux port (worker-thread clients with deadlines). Before
timing, the two are checked to return the same panes and texts. Target: snapshot
p50 <= 50 ms at 100 agents.

``--daemon`` also measures the whole tick of a real netskyd (``daemon_tick_ms``): demo
runtime, ``tick_interval_s = 1.0``, clones 8 (10 agents), then ``netskyctl up 98``
(100 agents); once all are ready it lets the daemon tick for ``--daemon-s`` seconds
(default 20) and reads ``duration_ms`` of the ticks that started after readiness from
meta.db's ``ticks`` table (read-only), then times ``Tmux.snapshot`` of the same panes
from here (``same_panes_snapshot_ms``: the tick's tmux share; the rest is the liveness
check, the watchdog, leases, pruning and the inbox rescan). Target: p50 <= 50 ms at 100
agents.
``--no-snapshot`` skips the tmux-only rows.

Prints one JSON object on stdout (progress goes to stderr). Exit code 0 even when the
target is missed; 1 when the sessions cannot be started or the two ways disagree.

    /tmp/venv/bin/python bench/tick_cost.py [--counts 10,100] [--runs 50] [--lines 50]
        [--daemon [--daemon-s 20]] [--no-snapshot] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import anyio  # noqa: E402

from bench.common import logger, machine_facts, p99, stop_on_sigterm  # noqa: E402
from netskyd.agents.tmux import Tmux  # noqa: E402
from netskyd.app.cli import backend_options  # noqa: E402
from tests.harness import kill_tmux_server, private_socket  # noqa: E402

WARMUP_RUNS = 3
TARGET_MS = 50.0
TARGET_AGENTS = 100
PANE_LINES = 200
WIDTH, HEIGHT = 200, 50


log = logger("tick_cost")


def agent_names(n: int) -> list[str]:
    """agent0, agent1..agent{n-2}, agentinfinity (n >= 2), as a constellation has."""
    return ["agent0", *(f"agent{i}" for i in range(1, n - 1)), "agentinfinity"]


def summary(samples_ms: list[float]) -> dict[str, float]:
    high = p99(samples_ms)
    return {
        "p50": round(statistics.median(samples_ms), 2),
        "p99": round(high, 2),
        "max": round(max(samples_ms), 2),
        "mean": round(statistics.fmean(samples_ms), 2),
    }


def cpu_ms(pid: int | None) -> float | None:
    """utime + stime of ``pid`` in ms (Linux ``/proc``); None where unavailable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


async def start_sessions(tmux: Tmux, names: list[str], cwd: Path) -> None:
    # Lines about as wide as an agent's output; the last one names PANE_LINES.
    text = "%g: the quick brown fox jumps over the lazy dog while the agent works on its task"
    command = f"seq -f '{text}' 1 {PANE_LINES}; exec sleep 100000"
    for name in names:
        await tmux.new_session(name, command, cwd=cwd, env={}, width=WIDTH, height=HEIGHT)
    deadline = time.monotonic() + 60
    pending = list(names)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} sessions never printed their lines")
        pending = [n for n in pending if str(PANE_LINES) not in await tmux.capture(n)]
        await anyio.sleep(0.05)


async def naive(tmux: Tmux, names: list[str], lines: int) -> tuple[dict[str, Any], dict[str, str]]:
    panes = await tmux.list_panes()
    return panes, {name: await tmux.capture(name, lines) for name in names}


async def measure(n: int, runs: int, lines: int, cwd: Path) -> dict[str, Any]:
    sock = private_socket()
    tmux = Tmux(sock, timeout_s=10.0)
    names = agent_names(n)
    try:
        log(f"{n} agents: starting sessions on tmux -L {sock}")
        await start_sessions(tmux, names, cwd)
        server_pid = await tmux.server_pid()
        snap = await tmux.snapshot(names, lines)
        panes, captures = await naive(tmux, names, lines)
        if snap.panes != panes or snap.captures != captures:
            raise RuntimeError("snapshot and the naive calls disagree")
        samples: dict[str, list[float]] = {"snapshot": [], "naive": []}
        server_cpu: dict[str, float] = {"snapshot": 0.0, "naive": 0.0}
        for i in range(WARMUP_RUNS + runs):
            order = ("snapshot", "naive") if i % 2 == 0 else ("naive", "snapshot")
            for key in order:
                cpu0 = cpu_ms(server_pid)
                t0 = time.perf_counter()
                if key == "snapshot":
                    await tmux.snapshot(names, lines)
                else:
                    await naive(tmux, names, lines)
                elapsed_ms = (time.perf_counter() - t0) * 1000.0
                cpu1 = cpu_ms(server_pid)
                if i >= WARMUP_RUNS:
                    samples[key].append(elapsed_ms)
                    if cpu0 is not None and cpu1 is not None:
                        server_cpu[key] += cpu1 - cpu0
        snap_s, naive_s = summary(samples["snapshot"]), summary(samples["naive"])
        have_cpu = server_pid is not None and cpu_ms(server_pid) is not None
        row = {
            "agents": n,
            "snapshot_ms": snap_s,
            "naive_ms": naive_s,
            "speedup_p50": round(naive_s["p50"] / snap_s["p50"], 1),
            "capture_bytes": sum(len(t.encode()) for t in captures.values()),
            "tmux_server_cpu_ms_per_call": {
                k: round(v / runs, 2) if have_cpu else None for k, v in server_cpu.items()
            },
        }
        log(
            f"{n} agents: snapshot p50 {snap_s['p50']} ms p99 {snap_s['p99']} ms; "
            f"naive p50 {naive_s['p50']} ms p99 {naive_s['p99']} ms"
        )
        return row
    finally:
        kill_tmux_server(sock)


DAEMON_READY_DEADLINE_S = 300.0
#: The daemon's ``pane_capture_lines`` default: what its tick captures per pane
#: (0: the visible screen only, which the activity monitor classifies).
DAEMON_CAPTURE_LINES = 0
DAEMON_SNAPSHOT_RUNS = 20


async def _snapshot_times(socket_name: str, names: list[str], runs: int) -> list[float]:
    """``Tmux.snapshot`` of the daemon's own panes from here, after 3 warm-ups (ms)."""
    tmux = Tmux(socket_name, timeout_s=10.0)
    out = []
    for i in range(WARMUP_RUNS + runs):
        t0 = time.perf_counter()
        await tmux.snapshot(names, DAEMON_CAPTURE_LINES)
        if i >= WARMUP_RUNS:
            out.append((time.perf_counter() - t0) * 1000.0)
        await anyio.sleep(0.05)
    return out


def _utc_stamp() -> str:
    """Now, formatted like meta.db's ``ticks.started_ts`` (so strings compare in order)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ticks_since(db: Path, since: str) -> list[tuple[float, dict[str, Any]]]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT duration_ms, summary FROM ticks WHERE started_ts >= ? ORDER BY id", (since,)
        ).fetchall()
    finally:
        conn.close()
    out = []
    for duration, summary in rows:
        try:
            parsed = json.loads(summary)
        except ValueError:
            parsed = {}
        out.append((float(duration), parsed if isinstance(parsed, dict) else {}))
    return out


def daemon_ticks(counts: list[int], seconds: float, tmp: Path) -> list[dict[str, Any]]:
    """The whole tick of a real netskyd at each agent count (ascending; one daemon).

    Demo runtime, ``tick_interval_s = 1.0``; the first count is the daemon's ``clones``
    (count - 2), each later one a ``netskyctl up count-2``. Once every agent is ready
    the daemon ticks for ``seconds``; the ticks that started after readiness are read
    from meta.db. Raises RuntimeError when the daemon or its agents do not come up.
    """
    from tests.harness import Netsky

    counts = sorted(set(counts))
    netsky = Netsky(
        tmp / "daemon-home",
        runtime="demo",
        clones=counts[0] - 2,
        tick_interval_s=1.0,
        ready_timeout_s=DAEMON_READY_DEADLINE_S,
    )
    rows: list[dict[str, Any]] = []
    try:
        log(f"daemon: starting netskyd in {netsky.home} (tmux -L {netsky.socket_name})")
        try:
            netsky.start()
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            raise RuntimeError(f"netskyd did not start: {e}\n{netsky.stderr()[-2000:]}") from e
        for i, n in enumerate(counts):
            names = agent_names(n)
            if i > 0:
                res = netsky.ctl("up", str(n - 2), "--no-wait")
                if res.returncode != 0:
                    raise RuntimeError(f"netskyctl up {n - 2} failed: {res.stderr.strip()}")
            try:
                took = netsky.wait_all_ready(
                    names, DAEMON_READY_DEADLINE_S, progress=lambda m: log(f"daemon: {m}")
                )
            except AssertionError as e:
                raise RuntimeError(str(e)) from e
            since = _utc_stamp()
            log(f"daemon: {n} agents ready after {took:.1f}s; ticking for {seconds:g}s")
            cpu0 = cpu_ms(netsky.proc.pid if netsky.proc else None)
            time.sleep(seconds)
            cpu1 = cpu_ms(netsky.proc.pid if netsky.proc else None)
            if netsky.proc is None or netsky.proc.poll() is not None:
                raise RuntimeError("netskyd exited during the measurement")
            ticks = _ticks_since(netsky.home / "meta.db", since)
            # The tick's share that is tmux: the same snapshot of the same panes, from here.
            snap = anyio.run(
                _snapshot_times, netsky.socket_name, names, DAEMON_SNAPSHOT_RUNS,
                backend_options=backend_options(),
            )  # fmt: skip
            durations = [d for d, _ in ticks]
            if len(durations) < 2:
                raise RuntimeError(f"only {len(durations)} ticks recorded at {n} agents")
            row: dict[str, Any] = {
                "agents": n,
                "ticks": len(durations),
                "duration_ms": summary(durations),
                "timed_out": sum(1 for _, t in ticks if t.get("timed_out")),
                "errors": sum(1 for _, t in ticks if "error" in t),
                "not_ready_max": max(
                    len((t.get("liveness") or {}).get("not_ready") or []) for _, t in ticks
                ),
                "activity_last_tick": ticks[-1][1].get("activity"),
                "same_panes_snapshot_ms": summary(snap),
                "daemon_cpu_ms_per_s": None
                if cpu0 is None or cpu1 is None
                else round((cpu1 - cpu0) / seconds, 1),
            }
            rows.append(row)
            d = row["duration_ms"]
            log(
                f"daemon: {n} agents: tick p50 {d['p50']} ms p99 {d['p99']} ms "
                f"max {d['max']} ms over {row['ticks']} ticks; the same snapshot from here "
                f"p50 {row['same_panes_snapshot_ms']['p50']} ms"
            )
        return rows
    finally:
        netsky.cleanup()



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="10,100", help="agent counts (default 10,100)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs of each way (default 50)")
    ap.add_argument("--lines", type=int, default=50, help="history lines captured (default 50)")
    ap.add_argument(
        "--daemon",
        action="store_true",
        help="also time the whole tick of a real netskyd (daemon_tick_ms)",
    )
    ap.add_argument(
        "--daemon-s",
        type=float,
        default=20.0,
        help="seconds the daemon ticks at each count (default 20)",
    )
    ap.add_argument(
        "--no-snapshot",
        action="store_true",
        help="skip the tmux-only snapshot/naive rows (with --daemon)",
    )
    ap.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    if args.no_snapshot and not args.daemon:
        ap.error("--no-snapshot needs --daemon")
    try:
        counts = [int(c) for c in args.counts.split(",") if c.strip()]
    except ValueError:
        ap.error("--counts must be comma-separated integers")
    if args.runs < 2 or any(c < 2 for c in counts):
        ap.error("--runs and every count must be at least 2")
    if shutil.which("tmux") is None:
        log("tmux is not installed")
        return 1
    stop_on_sigterm()
    tmux_version = subprocess.run(
        ["tmux", "-V"], capture_output=True, text=True, check=False
    ).stdout.strip()

    rows: list[dict[str, Any]] = []
    daemon_rows: list[dict[str, Any]] | None = None
    try:
        for n in counts if not args.no_snapshot else []:
            rows.append(
                anyio.run(
                    measure, n, args.runs, args.lines, Path("/tmp"),
                    backend_options=backend_options(),
                )
            )  # fmt: skip
        if args.daemon:
            import tempfile

            tmp = Path(tempfile.mkdtemp(prefix="netsky-bench-"))
            try:
                daemon_rows = daemon_ticks(counts, args.daemon_s, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    except (RuntimeError, OSError) as e:
        log(f"failed: {e}")
        return 1

    judged = next((r for r in rows if r["agents"] == TARGET_AGENTS), None)
    result: dict[str, Any] = {
        "benchmark": "P4 tick tmux cost",
        "runs": args.runs,
        "lines": args.lines,
        "rows": rows,
        "target": f"snapshot p50 <= {TARGET_MS:g} ms at {TARGET_AGENTS} agents",
        "meets_target": None if judged is None else judged["snapshot_ms"]["p50"] <= TARGET_MS,
        **(
            {}
            if daemon_rows is None
            else {
                "daemon_tick_ms": daemon_rows,
                "daemon_settings": {
                    "runtime": "demo",
                    "tick_interval_s": 1.0,
                    "seconds_per_count": args.daemon_s,
                },
                "daemon_target": f"tick duration p50 <= {TARGET_MS:g} ms at {TARGET_AGENTS} agents",
                "daemon_meets_target": next(
                    (
                        r["duration_ms"]["p50"] <= TARGET_MS
                        for r in daemon_rows
                        if r["agents"] == TARGET_AGENTS
                    ),
                    None,
                ),
            }
        ),
        "tmux": tmux_version,
        **machine_facts(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    if result["meets_target"] is False:
        log(f"target missed: {result['target']}")
    if result.get("daemon_meets_target") is False:
        log(f"target missed: {result['daemon_target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
