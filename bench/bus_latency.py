"""P1: bus latency, from the rename into ``inbox/`` to the agent *having* the envelope.

Starts a real netskyd (demo runtime) in a temporary NETSKY_HOME on a private tmux
socket and measures, for constellations of 1, 10 and 100 agents, per envelope, from
the moment the sender renames it into the target's ``inbox/``:

- **submitted**: to the Enter sent after the paste (netskyd's ``messages.submitted_at``);
- **consumed**: to the daemon confirming on the agent's screen that it took it
  (``messages.consumed_at``; netskyd/bus/confirm.py);
- text in pane (secondary): to the pasted text showing in the pane's output.

Then it stops the daemon (the agents' tmux sessions outlive it) and measures the same
path with a 250 ms polling deliverer running in this process, with the fixed 250 ms
settle before Enter that netskyd had before: the baseline. Its "consumed" uses the same
screen check. Targets: submitted p50 <= 15 ms and p99 <= 50 ms at 100 agents. Last,
``--real`` (on by default) measures the same for one real Claude Code agent and one
real Codex agent, offline (a fake API on 127.0.0.1, tests/fake_anthropic.py and
tests/fake_openai.py); target submitted p50 <= 60 ms. A CLI that is not installed is
skipped with a line saying so.

Clocks: the sender stamps ``time.time_ns()`` and ``time.perf_counter_ns()`` right
after its ``os.rename``; netskyd's records are wall clock (microseconds), the pane tap
and the baseline use ``perf_counter_ns``.

How "text in pane" is observed: every measured pane gets ``tmux pipe-pane -O`` into a
FIFO that a reader thread here watches with epoll, stamping the first appearance of
each envelope's unique token. The demo agent turns tty echo off and prints ``← from:
text`` only once it has read the whole block (after the Enter); so that the pasted text
itself shows, the bench turns echo back on for each measured demo pane (``termios`` on
``#{pane_tty}``): the kernel then echoes the pasted bytes the moment tmux writes them,
as a TUI draws a paste. ``agent_line_ms`` is the demo agent's own line.

Prints one JSON object on stdout (progress goes to stderr). Exit code 0 even when
a target is missed; 1 when the daemon or the agents cannot be started.

    /tmp/venv/bin/python bench/bus_latency.py [--samples 200] [--counts 1,10,100]
        [--min-gap-ms 65] [--settle-ms 250] [--quick] [--no-real] [--real-samples 20]
        [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import anyio  # noqa: E402
import anyio.from_thread  # noqa: E402

from bench.common import logger, machine_facts, p99, stop_on_sigterm  # noqa: E402
from netsky_shared.errors import EnvelopeRejected, TmuxError  # noqa: E402
from netsky_shared.maildir import (  # noqa: E402
    DEFAULT_ENVELOPE_MAX_BYTES,
    fsync_dir,
    new_envelope,
    publish,
    stage,
)
from netsky_shared.paths import Paths  # noqa: E402
from netskyd.agents.tmux import Tmux  # noqa: E402
from netskyd.app.cli import backend_options  # noqa: E402
from netskyd.bus import confirm as consume  # noqa: E402
from netskyd.bus.envelope import Envelope, render_channel  # noqa: E402
from netskyd.bus.validate import validate  # noqa: E402
from netskyd.config import Runtime  # noqa: E402
from tests.harness import Netsky, wait_for  # noqa: E402

COUNTS = (1, 10, 100)
QUICK_COUNTS = (1, 10)
SAMPLES = 200
QUICK_SAMPLES = 30
PASTE_SETTLE_MS = 250  # netskyd's default
#: One agent gets its next envelope no sooner than settle + this: both deliverers drain
#: each agent serially (paste, settle, Enter, ack), and the baseline finds an envelope
#: up to one poll interval late, so a closer send would queue behind the last one.
PER_AGENT_MARGIN_MS = 400
#: Shortest pause between two sends (to different agents): at most about 13 envelopes/s
#: (one every 65-91 ms) for every agent count, so that 10 and 100 agents see the same
#: load and differ only in the number of agents. ``--min-gap-ms`` changes it.
MIN_GAP_MS = 65
POLL_INTERVAL_S = 0.25
READY_DEADLINE_S = 300.0
SEEN_DEADLINE_S = 20.0
TARGET_P50_MS, TARGET_P99_MS, TARGET_AGENTS = 15.0, 50.0, 100
#: Real Claude Code / Codex: submitted p50 target, envelopes per CLI, pause between two.
REAL_TARGET_P50_MS = 60.0
REAL_SAMPLES = 20
REAL_GAP_S = 1.5
#: The baseline reads the pane this often while confirming (netskyd: CONSUME_POLL_S).
CONFIRM_POLL_S = 0.004
CONFIRM_DEADLINE_S = 10.0
TOKEN = re.compile(rb"nsbl[0-9a-f]{16}")
TAIL_BYTES = 128


log = logger("bus_latency")


def constellation(n: int) -> list[str]:
    """The agents ``up`` runs for ``n >= 2`` agents: agent0, n - 2 clones, agentinfinity."""
    return ["agent0", *(f"agent{i}" for i in range(1, n - 1)), "agentinfinity"]


def summary(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    high = p99(samples_ms)
    return {"p50_ms": round(statistics.median(samples_ms), 2), "p99_ms": round(high, 2),
            "max_ms": round(max(samples_ms), 2)}


class PaneTap:
    """Pane output of the measured agents, read through FIFOs; first sighting of each token.

    ``visible[token]`` is when the token first appeared anywhere but right after
    ``": "`` (the paste, echoed); ``shown[token]`` when it appeared in the demo
    agent's ``← from: text`` line. Both in ``time.perf_counter_ns``.
    """

    def __init__(self, socket_name: str, fifo_dir: Path) -> None:
        self.socket_name = socket_name
        self.fifo_dir = fifo_dir
        self.visible: dict[bytes, int] = {}
        self.shown: dict[bytes, int] = {}
        self.tapped: set[str] = set()
        self._fds: dict[int, str] = {}
        self._pending: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="pane-tap", daemon=True)
        self._thread.start()

    def tmux(self, *args: str) -> str:
        res = subprocess.run(["tmux", "-L", self.socket_name, *args], capture_output=True,
                             text=True, timeout=10, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {res.stderr.strip()}")
        return res.stdout

    def add(self, agent: str, echo: bool = True) -> None:
        """Echo on (``echo``: demo agents only; a TUI's raw mode must stay as it is),
        then pipe the pane's output into a FIFO this tap reads."""
        if agent in self.tapped:
            return
        fifo = self.fifo_dir / f"{agent}.fifo"
        os.mkfifo(fifo)
        # O_RDWR: the FIFO never reports EOF, whatever the writer (cat) does.
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self._fds[fd] = agent
        self._pending.append(fd)
        if echo:
            tty = self.tmux("display-message", "-p", "-t", f"={agent}:", "#{pane_tty}").strip()
            tfd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
            try:
                attrs = termios.tcgetattr(tfd)
                attrs[3] |= termios.ECHO
                termios.tcsetattr(tfd, termios.TCSANOW, attrs)
            finally:
                os.close(tfd)
        self.tmux("pipe-pane", "-O", "-t", f"={agent}:", f"exec cat > {shlex.quote(str(fifo))}")
        self.tapped.add(agent)

    def _read(self) -> None:
        sel = selectors.DefaultSelector()
        tails: dict[int, bytes] = {}
        while not self._stop.is_set():
            while self._pending:
                fd = self._pending.pop()
                sel.register(fd, selectors.EVENT_READ)
                tails[fd] = b""
            for key, _ in sel.select(timeout=0.05):
                fd = int(key.fd)
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                now = time.perf_counter_ns()
                buf = tails[fd] + chunk
                for m in TOKEN.finditer(buf):
                    seen = self.shown if buf[max(0, m.start() - 2):m.start()] == b": " else \
                        self.visible
                    seen.setdefault(m.group(0), now)
                tails[fd] = buf[-TAIL_BYTES:]
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)


class Sent(NamedTuple):
    """One envelope on its way: ``perf_counter_ns`` and ``time_ns`` right after the
    rename into inbox/ (or the paste call, for the floor), and its id (None: no
    envelope, the floor)."""

    perf_ns: int
    wall_ns: int
    envelope_id: str | None


def send_stamped(paths: Paths, envelope: dict[str, Any]) -> Sent:
    """``maildir.send``, stamped right after the rename into inbox/ (before the directory
    fsync)."""
    final = publish(stage(paths, envelope), sync=False)
    sent = Sent(time.perf_counter_ns(), time.time_ns(), str(envelope["id"]))
    fsync_dir(final.parent)
    return sent


class PollingDeliverer(threading.Thread):
    """The baseline: scan every inbox each 250 ms; claim, validate, paste, Enter, ack.

    The same steps and tmux port as netskyd's bus, minus the journal and meta.db rows
    (which netskyd writes after the Enter, so they do not delay what is measured).
    One drain at a time per agent, like the daemon. Enter goes a fixed ``settle_ms``
    after the paste (netskyd before the adaptive settle); then the pane is read every
    CONFIRM_POLL_S until netskyd's own check (``netskyd.bus.confirm.consumed``) says the
    agent took it. ``submitted``/``consumed``: ``perf_counter_ns`` per envelope id.
    """

    def __init__(self, paths: Paths, socket_name: str, settle_ms: int) -> None:
        super().__init__(name="poll-deliverer", daemon=True)
        self.paths = paths
        self.tmux = Tmux(socket_name, timeout_s=5.0)
        self.settle_s = settle_ms / 1000
        self.agents: list[str] = []
        self.delivered = 0
        self.submitted: dict[str, int] = {}
        self.consumed: dict[str, int] = {}
        self.errors: list[str] = []
        self._draining: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        anyio.run(self._main, backend_options=backend_options())

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    async def _main(self) -> None:
        async with anyio.create_task_group() as tg:
            start = time.monotonic()
            while not self._halt.is_set():
                for agent in list(self.agents):
                    if agent not in self._draining and self._pending(agent):
                        self._draining.add(agent)
                        tg.start_soon(self._drain, agent)
                now = time.monotonic()
                await anyio.sleep(POLL_INTERVAL_S - (now - start) % POLL_INTERVAL_S)

    def _pending(self, agent: str) -> bool:
        with os.scandir(self.paths.channel(agent, "inbox")) as it:
            return any(e.name.endswith(".json") for e in it)

    async def _drain(self, agent: str) -> None:
        p = self.paths
        try:
            inbox, claimed = p.channel(agent, "inbox"), p.channel(agent, "claimed")
            for name in sorted(e.name for e in os.scandir(inbox) if e.name.endswith(".json")):
                os.rename(inbox / name, claimed / name)
            batch = []
            for f in sorted(claimed.glob("*.json")):
                try:  # netskyd's own validation
                    batch.append((f, validate(f, agent, DEFAULT_ENVELOPE_MAX_BYTES)))
                except EnvelopeRejected as e:
                    self.errors.append(f"{agent}: {f.name} rejected: {e.rule}: {e.detail}")
                    os.rename(f, p.channel(agent, "poison") / f.name)
            if batch:
                text = render_channel([env for _, env in batch])
                buffer = f"bench-{agent}-{uuid.uuid4().hex[:8]}"
                target = f"={agent}:"
                before = await self.tmux.run(
                    "capture-pane", "-p", "-J", "-t", target, ";",
                    "load-buffer", "-b", buffer, "-", ";",
                    "paste-buffer", "-p", "-d", "-b", buffer, "-t", target,
                    input=text.encode())
                await anyio.sleep(self.settle_s)
                await self.tmux.send_keys(agent, "Enter")
                now = time.perf_counter_ns()
                for _, env in batch:
                    self.submitted[env.id] = now
                for f, _ in batch:
                    os.rename(f, p.channel(agent, "delivered") / f.name)
                self.delivered += len(batch)
                marks = consume.marks_for(text, [env.text for _, env in batch])
                deadline = time.monotonic() + CONFIRM_DEADLINE_S
                while time.monotonic() < deadline:
                    screen = await self.tmux.capture(agent)
                    if consume.consumed(Runtime.DEMO, before, screen, marks):
                        now = time.perf_counter_ns()
                        for _, env in batch:
                            self.consumed[env.id] = now
                        break
                    await anyio.sleep(CONFIRM_POLL_S)
        except (OSError, TmuxError) as e:
            self.errors.append(f"{agent}: {e}")
        finally:
            self._draining.discard(agent)


def inbox_sender(paths: Paths) -> Callable[[str, str], Sent]:
    """``send(agent, token)``: drop an envelope with text ``token`` into the agent's inbox."""

    def send(agent: str, token: str) -> Sent:
        return send_stamped(paths, new_envelope("owner", agent, token))

    return send


class DirectPaster:
    """The floor: paste a rendered envelope straight through netskyd's tmux port.

    No inbox, watcher, claim or validation; ``send`` stamps right before
    ``Tmux.paste`` and presses Enter ``settle_ms`` later in the background.
    """

    def __init__(self, socket_name: str, settle_ms: int) -> None:
        self.tmux = Tmux(socket_name, timeout_s=5.0)
        self.settle_s = settle_ms / 1000
        self._cm = anyio.from_thread.start_blocking_portal(backend_options=backend_options())
        self.portal = self._cm.__enter__()

    async def _paste(self, agent: str, token: str) -> Sent:
        body = {k: v for k, v in new_envelope("owner", agent, token).items()
                if not k.startswith("_")}
        text = render_channel([Envelope.model_validate(body)])
        stamp = Sent(time.perf_counter_ns(), time.time_ns(), None)
        await self.tmux.paste(agent, text, buffer=f"bench-{agent}-{uuid.uuid4().hex[:8]}")
        return stamp

    async def _enter(self, agent: str) -> None:
        await anyio.sleep(self.settle_s)
        await self.tmux.send_keys(agent, "Enter")

    def send(self, agent: str, token: str) -> Sent:
        stamp = self.portal.call(self._paste, agent, token)
        self.portal.start_task_soon(self._enter, agent)
        return stamp

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


#: ``timings(sent) -> {envelope id: (submitted_ms, consumed_ms)}`` (None: not seen).
Timings = Callable[[list[Sent]], dict[str, tuple[float | None, float | None]]]


def _ns(ts: str | None) -> int | None:
    """An RFC 3339 UTC string (microseconds) as ns since the epoch."""
    if not ts:
        return None
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def daemon_timings(db_path: Path) -> Timings:
    """netskyd's own records: ``submitted_at`` / ``consumed_at`` of each envelope, waiting
    (up to SEEN_DEADLINE_S) until none is still ``pending``; read-only connection."""

    def timings(sent: list[Sent]) -> dict[str, tuple[float | None, float | None]]:
        ids = [s.envelope_id for s in sent if s.envelope_id]
        rows: dict[str, tuple[str | None, str | None, str | None]] = {}
        deadline = time.monotonic() + SEEN_DEADLINE_S
        while True:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    q = ("SELECT envelope_id, submitted_at, consumed_at, consumption "
                         f"FROM messages WHERE status = 'delivered' AND envelope_id IN ({marks})")
                    for i, sub, con, state in db.execute(q, chunk):
                        rows[i] = (sub, con, state)
            finally:
                db.close()
            pending = [i for i in ids if i not in rows or rows[i][2] == "pending"]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        out: dict[str, tuple[float | None, float | None]] = {}
        for s in sent:
            if s.envelope_id is None or s.envelope_id not in rows:
                continue
            sub_ns, con_ns = _ns(rows[s.envelope_id][0]), _ns(rows[s.envelope_id][1])
            out[s.envelope_id] = (None if sub_ns is None else (sub_ns - s.wall_ns) / 1e6,
                                  None if con_ns is None else (con_ns - s.wall_ns) / 1e6)
        return out

    return timings


def poller_timings(poller: PollingDeliverer) -> Timings:
    """The baseline deliverer's own stamps (``perf_counter_ns``)."""

    def timings(sent: list[Sent]) -> dict[str, tuple[float | None, float | None]]:
        wait_for(lambda: all(s.envelope_id in poller.consumed for s in sent), 5,
                 "baseline confirmations", step_s=0.1) if sent else None
        out: dict[str, tuple[float | None, float | None]] = {}
        for s in sent:
            if s.envelope_id is None:
                continue
            sub, con = poller.submitted.get(s.envelope_id), poller.consumed.get(s.envelope_id)
            out[s.envelope_id] = (None if sub is None else (sub - s.perf_ns) / 1e6,
                                  None if con is None else (con - s.perf_ns) / 1e6)
        return out

    return timings


def measured(tap: PaneTap | None, sent: list[tuple[bytes, Sent]], timings: Timings | None,
             wait_lines: bool) -> dict[str, Any]:
    """One row's figures: ``submitted_ms``, ``consumed_ms``, ``text_in_pane_ms``,
    ``agent_line_ms`` (each p50/p99/max and samples), ``unconfirmed``, ``missing``."""
    if tap is not None:
        def all_seen() -> bool:
            return all(t in tap.visible and (not wait_lines or t in tap.shown) for t, _ in sent)

        try:
            wait_for(all_seen, SEEN_DEADLINE_S, "every token in its pane", step_s=0.1)
        except AssertionError:
            log("some envelopes never showed up in their pane")
    found = timings([s for _, s in sent]) if timings is not None else {}
    submitted = [v[0] for v in found.values() if v[0] is not None]
    consumed = [v[1] for v in found.values() if v[1] is not None]
    row: dict[str, Any] = {}
    if timings is not None:
        row["submitted_ms"] = {**summary(submitted), "samples": len(submitted)}
        row["consumed_ms"] = {**summary(consumed), "samples": len(consumed)}
        row["unconfirmed"] = len(sent) - len(consumed)
    if tap is not None:
        visible = [(tap.visible[t] - s.perf_ns) / 1e6 for t, s in sent if t in tap.visible]
        shown = [(tap.shown[t] - s.perf_ns) / 1e6 for t, s in sent if t in tap.shown]
        row["text_in_pane_ms"] = {**summary(visible), "samples": len(visible)}
        if wait_lines:
            row["agent_line_ms"] = {**summary(shown), "samples": len(shown)}
        row["missing"] = len(sent) - len(visible)
    return row


def run_phase(label: str, targets: list[str], samples: int, settle_ms: int, tap: PaneTap,
              send: Callable[[str, str], Sent], min_gap_ms: float,
              timings: Timings | None) -> dict[str, Any]:
    """Send ``samples`` envelopes round-robin to ``targets`` and time each.

    ``send(agent, token)`` puts one envelope with text ``token`` on its way and
    returns its stamps. Sends are spaced ``gap`` apart (x1.0-1.4 jitter), at least
    ``min_gap_ms``, so that one agent never gets two envelopes within
    ``paste_settle_ms + PER_AGENT_MARGIN_MS``. Each target first gets one untimed
    warm-up envelope (three for a single target).
    """
    gap_s = max(min_gap_ms, (settle_ms + PER_AGENT_MARGIN_MS) / len(targets)) / 1000
    warmup = max(3, len(targets))
    rng = random.Random(len(targets))
    sent: list[tuple[bytes, Sent]] = []
    log(f"{label}: {warmup} warm-up + {samples} timed envelopes to {len(targets)} agent(s), "
        f"one every {gap_s * 1000:.0f}-{gap_s * 1400:.0f} ms")
    next_t = time.monotonic()
    for i in range(warmup + samples):
        agent = targets[i % len(targets)]
        token = f"nsbl{uuid.uuid4().hex[:16]}"
        stamp = send(agent, token)
        if i >= warmup:
            sent.append((token.encode(), stamp))
        done = i + 1 - warmup
        if done > 0 and done % 100 == 0:
            log(f"{label}: {done}/{samples} sent")
        next_t += gap_s * rng.uniform(1.0, 1.4)
        time.sleep(max(0.0, next_t - time.monotonic()))
    row: dict[str, Any] = {"n": len(targets), "gap_ms": round(gap_s * 1000, 1),
                           **measured(tap, sent, timings, wait_lines=True)}
    sub, con, vis = (row.get(k, {}) for k in ("submitted_ms", "consumed_ms", "text_in_pane_ms"))
    log(f"{label}: submitted p50 {sub.get('p50_ms')} / p99 {sub.get('p99_ms')} ms; consumed "
        f"p50 {con.get('p50_ms')} / p99 {con.get('p99_ms')} ms; text in pane p50 "
        f"{vis.get('p50_ms')} ms")
    return row


def bring_up(netsky: Netsky, n: int) -> list[str]:
    """``up`` a constellation of ``n`` agents and wait until all are ready."""
    agents = constellation(max(n, 2))
    clones = len(agents) - 2
    res = netsky.ctl("up", str(clones), "--no-wait", "--json")
    if res.returncode != 0:
        raise AssertionError(f"netskyctl up {clones} failed: {res.stderr.strip()}")
    took = netsky.wait_all_ready(agents, READY_DEADLINE_S, log)
    log(f"{len(agents)} agents ready after {took:.1f}s")
    return agents


REAL_BINS = {"claude": "NETSKY_BENCH_CLAUDE", "codex": "NETSKY_BENCH_CODEX"}


def real_binary(kind: str) -> Path | None:
    """The CLI to run: ``$NETSKY_BENCH_<KIND>``, else /tmp/clis/latest's, else the
    tests' npm cache (.cache/npm); None when none is an executable file."""
    override = os.environ.get(REAL_BINS[kind])
    candidates = [Path(override)] if override else [
        Path("/tmp/clis/latest/node_modules/.bin") / kind,
        REPO / ".cache" / "npm" / "node_modules" / ".bin" / kind,
    ]
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def real_phase(kind: str, binary: Path, samples: int, tmp: Path) -> dict[str, Any]:
    """One real Claude Code or Codex agent (agent0; agentinfinity stays demo), offline
    against a fake API on 127.0.0.1, set up as tests/e2e/test_claude.py and test_codex.py
    do. ``samples`` envelopes (after 2 warm-ups), one at a time: each is sent once the
    previous one is recorded consumed (or not) and REAL_GAP_S has passed, so the agent
    is back at its prompt. Raises AssertionError when the agent does not come up."""
    from tests.e2e.test_claude import CLAUDE_ENV_PREFIXES, FAKE_API_KEY, seed_home
    from tests.fake_anthropic import FakeAnthropic
    from tests.fake_openai import FakeOpenAI
    from tests.harness import EnvNetsky

    user, work = tmp / f"{kind}-user", (tmp / f"{kind}-work").absolute()
    work.mkdir(parents=True)
    api: FakeAnthropic | FakeOpenAI = FakeAnthropic() if kind == "claude" else FakeOpenAI()
    base = Netsky(tmp / f"{kind}-home", runtime=kind, clones=0, tick_interval_s=60.0,
                  agent_runtimes={"agentinfinity": "demo"}, ready_timeout_s=90.0,
                  paste_settle_ms=PASTE_SETTLE_MS, workdir=str(work))
    with api:
        if kind == "claude":
            seed_home(user, work, FAKE_API_KEY)
            base.configure(claude_command=str(binary))
            ns = EnvNetsky(base, {
                "HOME": str(user), "ANTHROPIC_API_KEY": FAKE_API_KEY,
                "ANTHROPIC_BASE_URL": api.url, "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1"}, strip_prefixes=CLAUDE_ENV_PREFIXES)
        else:
            key = "sk-netsky-test-" + "y" * 32
            (user / ".codex").mkdir(parents=True)
            (user / ".codex" / "auth.json").write_text(
                json.dumps({"OPENAI_API_KEY": key, "auth_mode": "apikey"}))
            (user / ".codex" / "config.toml").write_text(
                f'check_for_update_on_startup = false\n[projects."{work}"]\n'
                'trust_level = "trusted"\n')
            base.configure(codex_command=str(binary),
                           codex_args=["--no-daemon", "-c", f'openai_base_url="{api.url}"'])
            ns = EnvNetsky(base, {"HOME": str(user), "OPENAI_API_KEY": key},
                           strip_prefixes=("OPENAI_", "CODEX_"))
        tap: PaneTap | None = None
        try:
            ns.start()
            wait_for(lambda: ns.all_ready(["agent0"]), 120, f"{kind} agent0 ready", step_s=0.5)
            log(f"{kind}: agent0 ready ({binary})")
            fifo_dir = tmp / f"{kind}-fifos"
            fifo_dir.mkdir()
            tap = PaneTap(ns.socket_name, fifo_dir)
            tap.add("agent0", echo=False)
            send = inbox_sender(Paths(ns.home))
            timings = daemon_timings(ns.home / "meta.db")
            sent: list[tuple[bytes, Sent]] = []
            for i in range(2 + samples):
                token = f"nsbl{uuid.uuid4().hex[:16]}"
                stamp = send("agent0", token)
                timings([stamp])  # until it is no longer pending
                if i >= 2:
                    sent.append((token.encode(), stamp))
                time.sleep(REAL_GAP_S)
            row = {"runtime": kind, "binary": str(binary),
                   **measured(tap, sent, timings, wait_lines=False)}
            sub, con = row["submitted_ms"], row["consumed_ms"]
            log(f"{kind}: submitted p50 {sub['p50_ms']} / p99 {sub['p99_ms']} ms; consumed "
                f"p50 {con['p50_ms']} / p99 {con['p99_ms']} ms; unconfirmed "
                f"{row['unconfirmed']}")
            return row
        except AssertionError:
            log(f"{kind}: daemon stderr (tail):\n" + ns.stderr()[-2000:])
            log(f"{kind}: agent0 pane:\n" + ns.pane_text("agent0"))
            raise
        finally:
            if tap is not None:
                tap.close()
            ns.cleanup()



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, help=f"timed envelopes per agent count "
                    f"(default {SAMPLES}; {QUICK_SAMPLES} with --quick)")
    ap.add_argument("--counts", help="comma-separated agent counts (default 1,10,100; "
                    "1,10 with --quick)")
    ap.add_argument("--settle-ms", type=int, default=PASTE_SETTLE_MS,
                    help="paste_settle_ms of netskyd and the baseline "
                    f"(default {PASTE_SETTLE_MS})")
    ap.add_argument("--min-gap-ms", type=float, default=MIN_GAP_MS,
                    help=f"shortest pause between two sends (default {MIN_GAP_MS}; "
                    "lower it to load the bus more)")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer agents and samples")
    ap.add_argument("--no-real", action="store_true",
                    help="skip the real Claude Code and Codex agents")
    ap.add_argument("--real-samples", type=int, default=REAL_SAMPLES,
                    help=f"envelopes per real CLI (default {REAL_SAMPLES})")
    ap.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    samples = args.samples or (QUICK_SAMPLES if args.quick else SAMPLES)
    counts = (tuple(int(c) for c in args.counts.split(",")) if args.counts
              else QUICK_COUNTS if args.quick else COUNTS)
    if samples < 2 or any(c < 1 or c > 1000 for c in counts):
        ap.error("--samples must be >= 2 and every count in 1..1000")
    counts = tuple(sorted(set(counts)))
    if shutil.which("tmux") is None:
        log("tmux is not installed")
        return 1
    stop_on_sigterm()
    sys.setswitchinterval(0.0005)  # the tap thread must not wait 5 ms for the GIL

    tmp = Path(tempfile.mkdtemp(prefix="netsky-bench-"))
    netsky: Netsky | None = None
    tap: PaneTap | None = None
    poller: PollingDeliverer | None = None
    daemon_rows: list[dict[str, Any]] = []
    baseline_rows: list[dict[str, Any]] = []
    targets: dict[int, list[str]] = {}
    floor: dict[str, Any] = {}
    real_rows: list[dict[str, Any]] = []
    try:
        netsky = Netsky(tmp / "home", runtime="demo", clones=0, tick_interval_s=60.0,
                        ready_timeout_s=120.0, paste_settle_ms=args.settle_ms)
        paths = Paths(netsky.home)
        log(f"starting netskyd in {netsky.home} (tmux -L {netsky.socket_name})")
        try:
            netsky.start()
            wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 120,
                     "agent0 and agentinfinity ready", step_s=0.5)
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            log(f"could not start netskyd: {e}")
            log("daemon stderr (tail):\n" + netsky.stderr()[-2000:])
            return 1
        tap = PaneTap(netsky.socket_name, tmp)
        for n in counts:
            try:
                agents = bring_up(netsky, n)
            except (AssertionError, subprocess.SubprocessError) as e:
                log(f"could not bring up {n} agents: {e}")
                log("daemon stderr (tail):\n" + netsky.stderr()[-2000:])
                return 1
            targets[n] = ["agent0"] if n == 1 else agents
            for agent in targets[n]:
                tap.add(agent)
            row = run_phase(f"netskyd, {n} agents", targets[n], samples, args.settle_ms,
                            tap, inbox_sender(paths), args.min_gap_ms,
                            daemon_timings(netsky.home / "meta.db"))
            daemon_rows.append({**row, "agents_up": len(agents)})
        if netsky.proc is not None and netsky.proc.poll() is not None:
            log("netskyd exited during the benchmark")
            return 1

        log("stopping netskyd (its agents keep running) for the polling baseline")
        netsky.stop()
        poller = PollingDeliverer(paths, netsky.socket_name, args.settle_ms)
        poller.start()
        for n in counts:
            poller.agents = targets[n]
            row = run_phase(f"baseline poll 250 ms, {n} agents", targets[n], samples,
                            args.settle_ms, tap, inbox_sender(paths), args.min_gap_ms,
                            poller_timings(poller))
            baseline_rows.append({**row, "agents_up": len(targets[max(counts)])})
        poller.stop()
        if poller.errors:
            log(f"baseline deliverer errors ({len(poller.errors)}): {poller.errors[:5]}")
        direct = DirectPaster(netsky.socket_name, args.settle_ms)
        try:
            n = max(counts)
            floor = run_phase(f"floor: direct tmux paste, {n} agents", targets[n], samples,
                              args.settle_ms, tap, direct.send, args.min_gap_ms, None)
        finally:
            direct.close()
        tap.close()
        tap = None
        netsky.cleanup()
        netsky = None
        for kind in () if args.no_real else ("claude", "codex"):
            binary = real_binary(kind)
            if binary is None:
                log(f"{kind}: skipped: no {kind} CLI (set {REAL_BINS[kind]} or install it "
                    "into /tmp/clis/latest)")
                real_rows.append({"runtime": kind, "skipped": "CLI not found"})
                continue
            try:
                real_rows.append(real_phase(kind, binary, args.real_samples, tmp))
            except (AssertionError, OSError, subprocess.SubprocessError) as e:
                log(f"{kind}: failed: {e}")
                real_rows.append({"runtime": kind, "failed": str(e)[:500]})
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        try:
            if poller is not None and poller.is_alive():
                poller.stop()
            if tap is not None:
                tap.close()
        finally:  # the tmux server and the daemon go whatever happened above
            if netsky is not None:
                netsky.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)

    at_target = next((r for r in daemon_rows if r["n"] == TARGET_AGENTS), None)
    meets = (None if at_target is None else
             at_target["submitted_ms"]["p50_ms"] <= TARGET_P50_MS
             and at_target["submitted_ms"]["p99_ms"] <= TARGET_P99_MS)
    real_meets = {r["runtime"]: r["submitted_ms"]["p50_ms"] <= REAL_TARGET_P50_MS
                  for r in real_rows if "submitted_ms" in r}
    result: dict[str, Any] = {
        "benchmark": "P1 bus latency",
        "measured": "os.rename into inbox/ -> submitted (Enter sent; messages.submitted_at) "
                    "and -> consumed (confirmed on the agent's screen; messages.consumed_at); "
                    "text_in_pane_ms: the pasted text in the pane's output (tty echo turned "
                    "back on for demo panes); agent_line_ms: the demo agent's own line",
        "paste_settle_ms": args.settle_ms,
        "min_gap_ms": args.min_gap_ms,
        "netskyd": daemon_rows,
        "baseline_poll_250ms": baseline_rows,
        "floor_direct_paste": floor,
        "real_agents": real_rows,
        "target": {"submitted_p50_ms": TARGET_P50_MS, "submitted_p99_ms": TARGET_P99_MS,
                   "agents": TARGET_AGENTS, "real_submitted_p50_ms": REAL_TARGET_P50_MS},
        "meets_target": meets,
        "real_meets_target": real_meets,
        **machine_facts(),
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    if meets is False and at_target is not None:
        sub = at_target["submitted_ms"]
        log(f"target missed at {TARGET_AGENTS} agents: submitted p50 {sub['p50_ms']} ms, "
            f"p99 {sub['p99_ms']} ms")
    elif meets is None:
        log(f"target not judged: no run with {TARGET_AGENTS} agents")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
