"""P2: bus throughput, 10,000 envelopes over 100 inboxes, with loss and duplicate checks.

Starts a real netskyd (demo runtime: agent0, 98 clones and agentinfinity, 100
agents) in a temporary NETSKY_HOME on a private tmux socket, waits until every
agent is ready and has had one warm-up envelope, then runs 10,000 envelopes,
round-robin over the 100 inboxes, twice:

- ``burst``: the envelopes are written to ``tmp/`` and fsynced beforehand
  (untimed); the clock starts at the first of 10,000 renames into ``inbox/``
  (maildir's commit step). The sender is out of the way: this is the daemon's rate.
- ``stream``: ``maildir.send`` (tmp/, fsync, rename, fsync dir) from 4 sender
  threads, as fast as they go; an InboxFull refusal is retried after 10 ms. On a
  small machine the senders' fsyncs pace this run.

Both count meta.db ``messages`` rows every 50 ms until all are recorded.
Figures: ``throughput_per_s`` = envelopes / (first send -> last row recorded);
``send_per_s`` = envelopes / (first send -> last send). From the records:
``lost`` (sent, but neither a row nor a file in delivered/ or poison/) and
``unmarked_duplicates`` (a second ``delivered`` row for one id without
``duplicate = 1``); from the demo agents' receipts
(``state/demo/<agent>.received.jsonl``) what reached the panes: ``pane_missing``
and ``pane_duplicates``. Target: >= 2,000 envelopes/s, judged on ``burst``.
``--profile PATH`` samples the daemon with py-spy during each run (raw collapsed
stacks next to PATH, a per-thread top-functions summary in the JSON; on-CPU
samples, or all with ``--profile-idle``).

Prints one JSON object on stdout (progress goes to stderr). Exit code 0 even when
the target is missed or a fault is found; 1 when the daemon or its agents cannot
be started, or the daemon dies during a run.

    /tmp/venv/bin/python bench/bus_throughput.py [--envelopes 10000] [--agents 100]
        [--mode both|burst|stream] [--quick] [--profile PATH [--profile-idle]]
        [--json-out PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import logger, machine_facts, stop_on_sigterm  # noqa: E402
from netsky_shared.errors import InboxFull  # noqa: E402
from netsky_shared.maildir import fsync_dir, new_envelope, publish, send, stage  # noqa: E402
from netsky_shared.paths import Paths  # noqa: E402
from tests.harness import Netsky, wait_for  # noqa: E402

ENVELOPES, AGENTS = 10_000, 100
QUICK_ENVELOPES, QUICK_AGENTS = 1_000, 10
TARGET_PER_S = 2_000.0
READY_DEADLINE_S = 300.0
STALL_S = 60.0  # give up when no row was recorded for this long
RECEIPTS_DEADLINE_S = 60.0
POLL_S = 0.05
PASTE_SETTLE_MS = 250  # netskyd's default
SENDERS = 4


log = logger("bus_throughput")


def constellation(n: int) -> list[str]:
    """The agents ``up`` runs for ``n >= 2`` agents: agent0, n - 2 clones, agentinfinity."""
    return ["agent0", *(f"agent{i}" for i in range(1, n - 1)), "agentinfinity"]


def file_id(name: str) -> str:
    """Envelope id from a file name ``<ts ns>-<from>-<id>.json``."""
    return name.removesuffix(".json").rsplit("-", 1)[-1]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RowCounter(threading.Thread):
    """Counts ``messages`` rows above ``after_id`` every POLL_S; notes when ``goal`` is hit."""

    def __init__(self, db: Path, after_id: int, goal: int) -> None:
        super().__init__(name="row-counter", daemon=True)
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0,
                                    check_same_thread=False)
        self.after_id = after_id
        self.goal = goal
        self.count = 0
        self.last_change = time.monotonic()
        self.done_at: float | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                (n,) = self.conn.execute("SELECT COUNT(*) FROM messages WHERE id > ?",
                                         (self.after_id,)).fetchone()
            except sqlite3.OperationalError:  # busy: try again next round
                n = self.count
            now = time.monotonic()
            if n != self.count:
                self.count, self.last_change = n, now
            if n >= self.goal and self.done_at is None:
                self.done_at = now
                return
            time.sleep(POLL_S)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)
        self.conn.close()


def bring_up(netsky: Netsky, agents: list[str]) -> None:
    """Wait until every agent in ``agents`` is ready, with progress every 5 s."""
    took = netsky.wait_all_ready(agents, READY_DEADLINE_S, log)
    log(f"{len(agents)} agents ready after {took:.1f}s")


def max_row_id(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0) as conn:
        (n,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
    return int(n)


def warm_up(paths: Paths, agents: list[str]) -> int:
    """One envelope per agent, waited for; return the last ``messages`` row id after it."""
    db = paths.db
    for agent in agents:
        send(paths, new_envelope("owner", agent, "warm-up"))
    wait_for(lambda: db.exists() and max_row_id(db) >= len(agents), 60,
             "the warm-up envelopes to be recorded", step_s=0.2)
    return max_row_id(db)


def stream(paths: Paths, agents: list[str], n: int, prefix: str,
           senders: int) -> tuple[dict[str, str], float, float, int]:
    """``maildir.send`` ``n`` envelopes round-robin from ``senders`` threads.

    Returns ({text: envelope id}, first stamp, last stamp, InboxFull refusals);
    stamps are ``time.monotonic()`` before the first send and after the last one.
    """
    sent: dict[str, str] = {}
    refused = [0] * senders
    done = [0] * senders

    def worker(k: int) -> None:
        for i in range(k, n, senders):
            text = f"{prefix}{i:06d}"
            env = new_envelope(agents[(i + 1) % len(agents)], agents[i % len(agents)], text)
            while True:
                try:
                    send(paths, env)
                    break
                except InboxFull:
                    refused[k] += 1
                    time.sleep(0.01)
            sent[text] = env["id"]
            done[k] += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(senders)]
    t_first = time.monotonic()
    for t in threads:
        t.start()
    last_log = t_first
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        if time.monotonic() - last_log >= 2:
            last_log = time.monotonic()
            log(f"sent {sum(done)}/{n} ({sum(done) / (last_log - t_first):.0f}/s)")
    return sent, t_first, time.monotonic(), sum(refused)


def burst(paths: Paths, agents: list[str], n: int,
          prefix: str) -> tuple[dict[str, str], float, float, int]:
    """Write ``n`` envelopes to ``tmp/`` and fsync them (untimed), then rename them all
    into their inboxes round-robin and fsync each inbox: maildir's commit step, as
    fast as it goes, so the sender's fsyncs do not pace the daemon.

    Returns ({text: envelope id}, first stamp, last stamp, 0), as ``stream`` does.
    """
    sent: dict[str, str] = {}
    staged: list[Path] = []
    for i in range(n):
        text = f"{prefix}{i:06d}"
        env = new_envelope(agents[(i + 1) % len(agents)], agents[i % len(agents)], text)
        staged.append(stage(paths, env))
        sent[text] = env["id"]
        if (i + 1) % 2000 == 0:
            log(f"prepared {i + 1}/{n} in tmp/")
    time.sleep(1.0)  # let the watcher's tmp/ events pass before the clock starts
    t_first = time.monotonic()
    for tmp in staged:
        publish(tmp, sync=False)
    for agent in agents:
        fsync_dir(paths.channel(agent, "inbox"))
    return sent, t_first, time.monotonic(), 0


def receipts(paths: Paths, prefix: str) -> collections.Counter[str]:
    """How often each text starting with ``prefix`` reached a demo agent (receipts JSONL)."""
    seen: collections.Counter[str] = collections.Counter()
    demo = paths.state / "demo"
    for f in demo.glob("*.received.jsonl") if demo.exists() else []:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                text = json.loads(line).get("text", "")
            except json.JSONDecodeError:
                continue
            if text.startswith(prefix):
                seen[text] += 1
    return seen


def check_records(paths: Paths, agents: list[str], after_id: int, sent: dict[str, str],
                  seen: collections.Counter[str]) -> dict[str, Any]:
    """Loss and duplicates from meta.db rows, the channel directories and the receipts."""
    ids = set(sent.values())
    with sqlite3.connect(f"file:{paths.db}?mode=ro", uri=True, timeout=5.0) as conn:
        rows = conn.execute("SELECT envelope_id, file, status, duplicate FROM messages "
                            "WHERE id > ?", (after_id,)).fetchall()
    status = collections.Counter(r[2] for r in rows)
    delivered_rows: collections.Counter[str] = collections.Counter()
    marked: collections.Counter[str] = collections.Counter()
    recorded: set[str] = set()
    for envelope_id, file, st, duplicate in rows:
        eid = envelope_id or file_id(file or "")
        recorded.add(eid)
        if st == "delivered":
            delivered_rows[eid] += 1
            marked[eid] += int(bool(duplicate))
    boxes: dict[str, set[str]] = {}
    for box in ("inbox", "claimed", "delivered", "poison"):
        boxes[box] = {file_id(e.name) for a in agents
                      for e in os.scandir(paths.channel(a, box))
                      if e.name.endswith(".json") and not e.name.endswith(".reason.json")}
    extra_rows = sum(c - 1 for c in delivered_rows.values() if c > 1)
    unmarked = sum(max(0, c - 1 - marked[i]) for i, c in delivered_rows.items() if c > 1)
    pane_repeats = {t: c for t, c in seen.items() if c > 1}
    unmarked_pane = sum(max(0, c - 1 - marked[sent[t]]) for t, c in pane_repeats.items()
                        if t in sent)
    finished = boxes["delivered"] | boxes["poison"]
    return {
        "rows": dict(status),
        "lost": len(ids - recorded - finished),
        "still_queued": len(ids & (boxes["inbox"] | boxes["claimed"])),
        "unrecorded_files": len((ids & finished) - recorded),
        "rows_without_file": len((ids & recorded) - finished - boxes["inbox"] - boxes["claimed"]),
        "poisoned": len(ids & boxes["poison"]),
        "duplicate_rows": extra_rows,
        "unmarked_duplicates": unmarked,
        "pane_missing": sum(1 for t in sent if seen[t] == 0),
        "pane_duplicates": sum(c - 1 for c in pane_repeats.values()),
        "pane_unmarked_duplicates": unmarked_pane,
    }


def batches(paths: Paths, after_id: int) -> int:
    """Pastes, counted as distinct (recipient, delivered_ts) among the delivered rows."""
    with sqlite3.connect(f"file:{paths.db}?mode=ro", uri=True, timeout=5.0) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT recipient, delivered_ts "
                            "FROM messages WHERE id > ? AND status = 'delivered')",
                            (after_id,)).fetchone()
    return int(n)


def start_profiler(pid: int, out: Path, idle: bool) -> subprocess.Popen[bytes] | None:
    """py-spy record (raw collapsed stacks) on ``pid``; None without py-spy.

    On-CPU samples only, unless ``idle``: then blocked threads are sampled too.
    """
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("py-spy not found (pip install py-spy); running without --profile")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
           "--output", str(out), *(["--idle"] if idle else [])]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach before the first send
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return
    if proc.returncode not in (0, -signal.SIGINT):
        log(f"py-spy exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")


def profile_summary(raw: Path, top: int = 10) -> dict[str, Any]:
    """Where each daemon thread spends its time, from py-spy's collapsed stacks.

    Each line of ``raw`` is ``frame;frame;...;leaf count`` with frames like
    ``function (path/file.py:123)``. Per thread (``main`` is the event loop; others
    are named by their run function): samples, and the top functions as the leaf
    (``self_pct``) and anywhere on the stack (``inclusive_pct``, leaving out the
    frames on nearly every stack), in percent of that thread's samples. With idle
    samples, a blocking call in the event loop shows up as its leaf, and
    ``Runner.run`` as the leaf is time inside uvloop (mostly waiting).
    """
    stacks: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        stacks[_thread(frames)].append((frames, int(count)))
    out: dict[str, Any] = {}
    for thread, rows in sorted(stacks.items(), key=lambda kv: -sum(n for _, n in kv[1])):
        total = sum(n for _, n in rows)
        leaf: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        for frames, n in rows:
            leaf[frames[-1]] += n
            for name in set(frames):
                incl[name] += n
        incl = collections.Counter({k: v for k, v in incl.items() if v < 0.99 * total})
        out[thread] = {
            "samples": total,
            "self_pct": [[k, round(100 * v / total, 1)] for k, v in leaf.most_common(top)],
            "inclusive_pct": [[k, round(100 * v / total, 1)] for k, v in incl.most_common(top)],
        }
    return out


def _frame(frame: str) -> str:
    """``function (file.py)`` from ``function (path/file.py:123)``."""
    name, _, loc = frame.partition(" (")
    return f"{name} ({Path(loc.rstrip(')').rsplit(':', 1)[0]).name})" if loc else name


def _thread(frames: list[str]) -> str:
    if frames[0].startswith("_run_module_as_main"):
        return "main"
    for f in frames:
        if not f.startswith(("Thread._bootstrap", "Thread.run ")):
            return f.split(" (")[0]
    return frames[-1]



class DaemonDied(Exception):
    """Raised when netskyd exits in the middle of a run."""


def run_mode(mode: str, netsky: Netsky, paths: Paths, agents: list[str], n_env: int,
             senders: int, profile: Path | None, profile_idle: bool) -> dict[str, Any]:
    """One timed run (``burst`` or ``stream``) of ``n_env`` envelopes; figures and checks."""
    assert netsky.proc is not None
    pid = netsky.proc.pid
    tmux_pid = int(subprocess.run(["tmux", "-L", netsky.socket_name, "display-message", "-p",
                                   "#{pid}"], capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip() or 0)
    after_id = max_row_id(paths.db)
    profiler = start_profiler(pid, profile, profile_idle) if profile is not None else None
    cpu0, tmux_cpu0 = cpu_s(pid), cpu_s(tmux_pid)
    counter = RowCounter(paths.db, after_id, n_env)
    counter.start()
    prefix = f"p2{mode[0]}-"
    try:
        if mode == "burst":
            log(f"{mode}: {n_env} envelopes into tmp/, then renamed into {len(agents)} inboxes")
            sent, t_first, t_last, refused = burst(paths, agents, n_env, prefix)
        else:
            log(f"{mode}: maildir.send of {n_env} envelopes round-robin to {len(agents)} "
                f"inboxes from {senders} sender thread(s)")
            sent, t_first, t_last, refused = stream(paths, agents, n_env, prefix, senders)
        log(f"{mode}: sent {n_env} in {t_last - t_first:.2f}s; {counter.count} recorded so far")
        last_log = time.monotonic()
        while counter.done_at is None:
            if not counter.is_alive() or time.monotonic() - counter.last_change > STALL_S:
                log(f"{mode}: no new row for {STALL_S:.0f}s; giving up at "
                    f"{counter.count}/{n_env}")
                break
            if netsky.proc.poll() is not None:
                raise DaemonDied(f"netskyd exited ({netsky.proc.returncode}) during the run")
            if time.monotonic() - last_log >= 2:
                log(f"{mode}: recorded {counter.count}/{n_env}")
                last_log = time.monotonic()
            time.sleep(POLL_S)
        t_done = counter.done_at or time.monotonic()
        recorded = counter.count
        cpu, tmux_cpu = cpu_s(pid) - cpu0, cpu_s(tmux_pid) - tmux_cpu0
    finally:
        counter.stop()
        if profiler is not None:
            stop_profiler(profiler)
    elapsed = t_done - t_first
    per_s = recorded / elapsed if elapsed > 0 else 0.0
    log(f"{mode}: recorded {recorded}/{n_env} in {elapsed:.2f}s ({per_s:.0f}/s); "
        "waiting for the demo agents' receipts")

    def all_received() -> bool:
        seen = receipts(paths, prefix)
        return all(seen[t] for t in sent)

    try:
        wait_for(all_received, RECEIPTS_DEADLINE_S, "every text in a receipt", step_s=1.0)
    except AssertionError:
        log(f"{mode}: some texts never reached a demo agent")
    row: dict[str, Any] = {
        "recorded": recorded,
        "elapsed_s": round(elapsed, 3),
        "throughput_per_s": round(per_s, 1),
        "send_s": round(t_last - t_first, 3),
        "send_per_s": round(n_env / (t_last - t_first), 1),
        "drain_after_last_send_s": round(t_done - t_last, 3),
        "inbox_full_refusals": refused,
        "pastes": batches(paths, after_id),
        "daemon_cpu_s": round(cpu, 2),
        "tmux_server_cpu_s": round(tmux_cpu, 2),
        **check_records(paths, agents, after_id, sent, receipts(paths, prefix)),
        "complete": recorded >= n_env,
    }
    if mode == "stream":
        row["senders"] = senders
    if profile is not None and profile.exists():
        row["profile"] = {"raw": str(profile), **profile_summary(profile)}
    if row["lost"] or row["unmarked_duplicates"] or row["pane_unmarked_duplicates"]:
        log(f"{mode}: BUS FAULT: lost {row['lost']}, unmarked duplicates "
            f"{row['unmarked_duplicates']} (in panes: {row['pane_unmarked_duplicates']})")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envelopes", type=int, help=f"envelopes per run (default {ENVELOPES}; "
                    f"{QUICK_ENVELOPES} with --quick)")
    ap.add_argument("--agents", type=int, help=f"agents, one inbox each (default {AGENTS}; "
                    f"{QUICK_AGENTS} with --quick)")
    ap.add_argument("--mode", choices=("both", "burst", "stream"), default="both",
                    help="burst: pre-written envelopes renamed in at once (the daemon's rate); "
                    "stream: maildir.send from sender threads; both (default): burst, then stream")
    ap.add_argument("--senders", type=int, default=SENDERS,
                    help=f"sender threads in stream mode (default {SENDERS})")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer agents and envelopes")
    ap.add_argument("--profile", type=Path, help="sample netskyd with py-spy during each run "
                    "(raw stacks in PATH, with the mode before the suffix)")
    ap.add_argument("--profile-idle", action="store_true",
                    help="with --profile: sample blocked threads too (py-spy --idle)")
    ap.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    n_env = args.envelopes or (QUICK_ENVELOPES if args.quick else ENVELOPES)
    n_agents = args.agents or (QUICK_AGENTS if args.quick else AGENTS)
    if n_env < 1 or not 2 <= n_agents <= 1000 or args.senders < 1:
        ap.error("--envelopes and --senders must be >= 1, --agents in 2..1000")
    modes = ("burst", "stream") if args.mode == "both" else (args.mode,)
    if shutil.which("tmux") is None:
        log("tmux is not installed")
        return 1
    stop_on_sigterm()

    agents = constellation(n_agents)
    tmp = Path(tempfile.mkdtemp(prefix="netsky-bench-"))
    netsky: Netsky | None = None
    runs: dict[str, dict[str, Any]] = {}
    try:
        netsky = Netsky(tmp / "home", runtime="demo", clones=n_agents - 2, tick_interval_s=60.0,
                        ready_timeout_s=120.0, paste_settle_ms=PASTE_SETTLE_MS)
        paths = Paths(netsky.home)
        log(f"starting netskyd with {n_agents} agents in {netsky.home} "
            f"(tmux -L {netsky.socket_name})")
        try:
            netsky.start()
            bring_up(netsky, agents)
            warm_up(paths, agents)
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            log(f"could not start netskyd and its agents: {e}")
            log("daemon stderr (tail):\n" + netsky.stderr()[-4000:])
            return 1
        for mode in modes:
            profile = (args.profile.with_name(f"{args.profile.stem}.{mode}{args.profile.suffix}")
                       if args.profile is not None else None)
            try:
                runs[mode] = run_mode(mode, netsky, paths, agents, n_env, args.senders, profile,
                                      args.profile_idle)
            except DaemonDied as e:
                log(str(e))
                log("daemon stderr (tail):\n" + netsky.stderr()[-4000:])
                return 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if netsky is not None:
            netsky.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    judged = runs.get("burst") or runs["stream"]
    meets = judged["complete"] and judged["throughput_per_s"] >= TARGET_PER_S
    faults = any(r["lost"] or r["unmarked_duplicates"] or r["pane_unmarked_duplicates"]
                 for r in runs.values())
    result: dict[str, Any] = {
        "benchmark": "P2 bus throughput",
        "envelopes": n_env,
        "agents": n_agents,
        "paste_settle_ms": PASTE_SETTLE_MS,
        **runs,
        "target_per_s": TARGET_PER_S,
        "judged_on": "burst" if "burst" in runs else "stream",
        "meets_target": meets,
        "bus_faults": faults,
        **machine_facts(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    if not meets:
        log(f"target missed: {judged['throughput_per_s']:.0f} envelopes/s < {TARGET_PER_S:.0f}"
            if judged["complete"] else f"only {judged['recorded']}/{n_env} envelopes recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
