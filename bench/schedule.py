"""P8: the scheduler under 1,000 cron entries and 1,000 loops: CPU per hour, fire lateness.

Runs netskyd's real ``Scheduler`` (meta.db, cron.toml, inbox files in a temporary
NETSKY_HOME) in this process, on anyio with uvloop where installed, on the real clock:

- **load**: 1,000 cron entries ``* * * * *`` (the worst case: every one due in the same
  second, each minute) and 1,000 loops every 60 s whose grids are spread over the minute
  (the first fires 5 s in), over 10 agents (agent0..agent8, agentinfinity). A separate
  process takes what lands in the inboxes every 0.1 s (what the bus does), so fires do not
  coalesce; its CPU is not the scheduler's.
- **baseline** (the same process, before the load): the scheduler with no entries, for
  ``--idle-s`` seconds.

Figures (stdout, one JSON object): ``cpu_s_per_hour`` of the scheduler's process under
the load and idle (``time.process_time`` over the run, scaled to an hour);
``in_inbox_s`` (the user-facing figure: slot -> envelope in the agent's inbox, from
``fires.sent_at``) p50/p99/max for cron and loops; ``decided_late_s`` (slot -> the pass
that fired it, ``fires.late_s``) as the second column; fires, coalesced, max RSS.

    /tmp/venv/bin/python bench/schedule.py [--minutes 3] [--idle-s 30] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402

from bench.common import logger, machine_facts, p99, stop_on_sigterm  # noqa: E402
from netsky_shared.incidents import parse_rfc3339  # noqa: E402
from netskyd import log as logmod  # noqa: E402
from netskyd.config import Settings  # noqa: E402
from netskyd.schedule.scheduler import Scheduler  # noqa: E402
from netskyd.store.db import Store  # noqa: E402
from netskyd.store.journal import Journal  # noqa: E402
from netskyd.store.recorder import Recorder  # noqa: E402
from netskyd.store.schedule import ScheduleRecords  # noqa: E402
from netskyd.supervision.desired import Desired  # noqa: E402

log = logger("schedule")
AGENTS = [*(f"agent{i}" for i in range(9)), "agentinfinity"]
CRON_ENTRIES = 1000
LOOPS = 1000

#: The consumer: moves every inbox entry to delivered/ every 0.1 s (a separate process).
CONSUMER = r"""
import os, sys, time
root = sys.argv[1]
while True:
    for agent in os.listdir(root):
        inbox = os.path.join(root, agent, "inbox")
        done = os.path.join(root, agent, "delivered")
        try:
            names = os.listdir(inbox)
        except FileNotFoundError:
            continue
        os.makedirs(done, exist_ok=True)
        for n in names:
            try:
                os.rename(os.path.join(inbox, n), os.path.join(done, n))
            except FileNotFoundError:
                pass
    time.sleep(0.1)
"""


class Crew:
    """The AgentView port as the scheduler reads it: who is in the constellation."""

    def __init__(self) -> None:
        self.desired = Desired(up=True, agents=dict.fromkeys(AGENTS))
        self.agents: dict[str, Any] = {}


def crontab(n: int) -> str:
    return "".join(
        f'[[cron]]\nname = "e{i}"\nschedule = "* * * * *"\nagent = "{AGENTS[i % len(AGENTS)]}"\n'
        f'text = "cron entry {i}"\n\n'
        for i in range(n)
    )


async def run_for(sched: Scheduler, seconds: float) -> tuple[float, float]:
    """Run the scheduler's task ``seconds``; returns (CPU s, wall s) of the process."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(sched.run)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def summary(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": round(statistics.median(samples), 3),
        "p99": round(p99(samples), 3),
        "max": round(max(samples), 3),
    }


async def bench(home: Path, minutes: float, idle_s: float) -> dict[str, Any]:
    s = Settings(home=home, cron_watch_s=2.0, inbox_max_pending=100_000)
    for d in (s.paths.state, s.paths.logs, s.paths.channels):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(s.paths.db)
    recorder = Recorder(Journal(s.paths.logs), store)
    records = ScheduleRecords(store)

    def scheduler() -> Scheduler:
        return Scheduler(settings=lambda: s, records=records, recorder=recorder,
                         agents=Crew())  # type: ignore[arg-type]  # fmt: skip

    log(f"baseline: the scheduler with no entries for {idle_s:g}s")
    idle_cpu, idle_wall = await run_for(scheduler(), idle_s)

    log(f"load: {CRON_ENTRIES} cron entries, {LOOPS} loops over {len(AGENTS)} agents")
    s.paths.cron_toml.write_text(crontab(CRON_ENTRIES))
    now = time.time()
    for i in range(LOOPS):
        await records.add_loop({
            "ts": "", "agent": AGENTS[i % len(AGENTS)], "created_by": "bench",
            "interval_s": 60.0, "text": f"loop {i}", "created": now - 55 + i * 60 / LOOPS,
            "count": None, "until": None, "state": "active", "state_ts": "",
        })  # fmt: skip
    for agent in AGENTS:
        s.paths.ensure_channel(agent)
    log(f"running {minutes:g} min")
    cpu, wall = await run_for(scheduler(), minutes * 60)
    rows = await store.rows("SELECT kind, slot, late_s, sent_at, coalesced FROM fires")
    await store.close()
    inbox: dict[str, list[float]] = {"cron": [], "loop": []}
    decided: dict[str, list[float]] = {"cron": [], "loop": []}
    for r in rows:
        decided[r["kind"]].append(r["late_s"])
        sent = parse_rfc3339(r["sent_at"]) if r["sent_at"] else None
        if sent is not None:
            inbox[r["kind"]].append(sent - r["slot"])
    return {
        "bench": "P8 scheduler",
        "load": {"cron_entries": CRON_ENTRIES, "loops": LOOPS, "agents": len(AGENTS),
                 "cron_schedule": "* * * * *", "loop_interval_s": 60,
                 "minutes": minutes},  # fmt: skip
        "cpu_s_per_hour": {
            "load": round(cpu / wall * 3600, 1),
            "idle_baseline": round(idle_cpu / idle_wall * 3600, 2),
        },
        "in_inbox_s": {k: summary(v) for k, v in inbox.items()},
        "decided_late_s": {k: summary(v) for k, v in decided.items()},
        "fires": len(rows),
        "coalesced": sum(int(r["coalesced"]) for r in rows),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine_facts(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="load run (default 3)")
    ap.add_argument("--idle-s", type=float, default=30.0, help="baseline run (default 30)")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    stop_on_sigterm()
    logmod.configure(None, level="warning", console=False)
    backend_options = {"use_uvloop": True}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        backend_options = {}
    with tempfile.TemporaryDirectory(prefix="netsky-bench-schedule-") as d:
        channels = Settings(home=Path(d)).paths.channels
        channels.mkdir(parents=True)
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(channels)])
        try:
            result = anyio.run(bench, Path(d), args.minutes, args.idle_s,
                               backend_options=backend_options)  # fmt: skip
        finally:
            consumer.terminate()
            consumer.wait(timeout=10)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
