"""Drills of faults around the daemon: netskyd killed (the shim revives it and it adopts
the agents), a page leg that fails (the spool retries it) (stdlib only).

Same shape as client.drills.agents: ``fn(run, box)`` raises DrillFailed with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from client.drills.agents import THREE, delivered_legs
from client.drills.run import DrillFailed, Run
from client.drills.sandbox import Sandbox
from netsky_shared import protocol
from netsky_shared.bundled import bundled

SHIM = "launchd/netsky-shim"
ESCALATE_KEY = "drill:escalate-fail"
#: POSTs the drill's webhook fails (HTTP 500) before it answers 200.
FAIL_FIRST = 2


def live_bin(box: Sandbox) -> Path:
    """A bin directory with ``netskyd`` and ``netskyctl`` of the running install: the one
    beside ``sys.executable`` when it has both, else sh wrappers in the sandbox."""
    here = Path(sys.executable).parent
    if all(os.access(here / n, os.X_OK) for n in ("netskyd", "netskyctl")):
        return here
    wrappers = box.home / "live-bin"
    wrappers.mkdir(exist_ok=True)
    for name, module in (("netskyd", "netskyd"), ("netskyctl", "client")):
        path = wrappers / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        path.chmod(0o755)
    return wrappers


def run_shim(run: Run, box: Sandbox, shim: Path) -> int:
    """One ``sh netsky-shim check`` against the sandbox (manager ``none``, fast
    timeouts), as the timer runs it; its output goes to ``logs/drill-shim.out``.
    Returns its exit code; raises DrillFailed when it outlives the deadline."""
    env = {
        **box.env,
        "NETSKY_SERVICE_MANAGER": "none",
        "NETSKY_LIVE_BIN": str(live_bin(box)),
        "NETSKY_SHIM_PROBE_TIMEOUT_S": "5",
        "NETSKY_SHIM_START_TIMEOUT_S": "30",
        "NETSKY_SHIM_HEARTBEAT_MAX_S": "120",
    }
    # A file, not a pipe: the daemon the shim leaves behind must not hold our pipe open.
    with open(box.paths.logs / "drill-shim.out", "ab") as out:
        try:
            res = subprocess.run(
                ["sh", str(shim), "check"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=box.home,
                timeout=run.budget_s(60.0),
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DrillFailed(f"the shim did not finish within {e.timeout:g}s") from e
    return res.returncode


def daemon_kill(run: Run, box: Sandbox) -> None:
    """kill -9 netskyd; one shim run must start a new daemon that adopts every agent
    session (same tmux session, same pane pid) and pages ``daemon:revived``."""
    shim = bundled(SHIM)
    if not shim.is_file():
        raise DrillFailed(f"this install has no shim ({shim} is missing)")
    box.configure(clones=1)
    old = box.start_daemon()
    box.wait_ready(THREE)
    before = box.panes()
    if not set(THREE) <= set(before):
        raise DrillFailed(f"tmux shows sessions {sorted(before)}, not {THREE}")
    run.step("sessions", ", ".join(f"{a} {before[a][0]} pane pid {before[a][1]}" for a in THREE))
    since = run.clock()
    box.kill_daemon(old)
    run.step("fault", f"kill -9 netskyd (pid {old})")

    code = run_shim(run, box, shim)
    ms = run.timing("shim_ms", since)
    journal = box.shim_journal()
    last = journal[-1] if journal else {}
    if code != 0:
        raise DrillFailed(
            f"the shim exited {code} ({last.get('verdict')}: {last.get('detail')}); "
            f"daemon log: {box.log_tail()}"
        )
    run.step("shim", f"exit 0 after {ms:.0f} ms: {last.get('verdict')} {last.get('detail') or ''}")
    pid = run.wait(box.ping_pid, "the revived netskyd to answer ping", timeout_s=30)
    box.adopt_daemon(pid)
    ms = run.timing("revived_ms", since)
    if pid == old:
        raise DrillFailed(f"the daemon answering is the killed one (pid {pid})")
    run.step("revived", f"netskyd pid {pid} answers {ms:.0f} ms after the kill")

    # Adoption is decided at start-up and confirmed by the first tick; wait for one.
    run.wait(
        lambda: box.call(protocol.STATUS)["daemon"]["ticks"] >= 1, "the new daemon's first tick"
    )
    box.wait_ready(THREE, timeout_s=30)
    after = box.panes()
    moved = [f"{a} {before[a]} -> {after.get(a)}" for a in THREE if after.get(a) != before[a]]
    if moved:
        raise DrillFailed(f"agents were respawned, not adopted: {'; '.join(moved)}")
    run.step("adopted", "every agent kept its tmux session and pane pid")

    def opened() -> dict[str, Any] | None:
        found = box.incidents("daemon:revived")
        return found[-1] if found else None

    incident = run.wait(opened, "the incident daemon:revived", timeout_s=30)
    run.step("paged", f"incident {incident['id']}: {incident.get('subject')}")


class FlakyHook:
    """An HTTP server on 127.0.0.1 (stdlib, a thread of its own) that answers 500 to the
    first ``fail_first`` POSTs and 200 after. ``posts``: ``(monotonic s, status)`` per
    POST, in order. A context manager: on exit the server is shut down and joined."""

    def __init__(self, fail_first: int, clock: Any) -> None:
        self.fail_first = fail_first
        self.clock = clock
        self.posts: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with hook._lock:
                    status = 500 if len(hook.posts) < hook.fail_first else 200
                    hook.posts.append((hook.clock(), status))
                body = b"drill: failing on purpose\n" if status == 500 else b"ok\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a drill prints its own steps, not an access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def snapshot(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self.posts)

    def __enter__(self) -> FlakyHook:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def escalate_fail(run: Run, box: Sandbox) -> None:
    """A webhook leg that answers 500 twice: the page fails, the spool retries it, and it
    is delivered on the third try, exactly once."""
    with FlakyHook(FAIL_FIRST, run.clock) as hook:
        box.configure(
            clones=0,
            legs={
                "webhook": {"url": f"{hook.url}/page", "format": "json"},
                "desktop": {"enabled": False},
                "tmux": {"enabled": False},
            },
        )
        box.start_daemon()
        since = run.clock()
        res = box.ctl_json(
            "escalate",
            "drill: escalate-fail",
            "a page to a webhook that fails twice, then recovers",
            "--key",
            ESCALATE_KEY,
            ok=(0, 1),
        )
        first = next((r for r in res.get("results", []) if r.get("leg") == "webhook"), None)
        if first is None or first.get("status") != "failed":
            raise DrillFailed(f"the webhook's first try did not fail as injected: {first}")
        incident = res["incident"]["id"]
        run.step("escalate", f"incident {incident}: webhook failed: {first.get('reason')}")
        posts = hook.snapshot()
        run.timing("first_failure_ms", since, posts[0][0] if posts else None)

        def rows() -> list[dict[str, Any]]:
            return [
                r
                for r in box.owner_pages(ESCALATE_KEY)
                if r.get("incident") == incident and r.get("leg") == "webhook"
            ]

        run.wait(
            lambda: any(r.get("status") == "delivered" for r in rows()),
            "the spool to deliver the webhook leg",
            timeout_s=30,
            note=lambda: f"{len(hook.snapshot())} POSTs so far",
        )
        ok = [t for t, status in hook.snapshot() if status == 200]
        run.timing("delivered_ms", since, ok[0] if ok else None)
        # Two spool periods more: a delivered leg must not be posted again.
        run.pause(2 * float(box.settings["escalation_spool_s"]) + 1.0)
        audit = rows()
        statuses = [str(r.get("status")) for r in audit]
        posts = hook.snapshot()
        run.counts.update(tries=len(audit), posts=len(posts))
        if statuses != ["failed"] * FAIL_FIRST + ["delivered"]:
            raise DrillFailed(f"owner-pages.jsonl shows {statuses} for the webhook leg")
        if [s for _, s in posts].count(200) != 1 or len(posts) != FAIL_FIRST + 1:
            raise DrillFailed(f"the webhook got {[s for _, s in posts]} (want 500, 500, 200)")
        run.step(
            "delivered",
            f"on try {len(audit)} after {run.timings_ms['delivered_ms']:.0f} ms "
            f"({', '.join(statuses)}); one 200 POST, nothing after",
        )
        inc = next(i for i in box.incidents(ESCALATE_KEY) if i["id"] == incident)
        if "webhook" not in delivered_legs(inc):
            raise DrillFailed(f"incident {incident} does not show the webhook delivered")
