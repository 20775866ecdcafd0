"""P7: the work loop: brief -> clone ready with its brief delivered, and a 10-commit harvest.

Makes agent0's repository in a temporary directory: ``--files`` files (1,000) in the first
commit, then commits of a ``--blob-mb`` MB random file until the history holds about
``--history-mb`` MB (50), packed. Starts a real netskyd (demo runtime) on a private tmux
socket with that repository as ``repo``, then:

- **brief**: ``--briefs`` times (5), a ``clone.brief`` into a new workspace, timed from the
  call to the brief envelope's file in the clone's ``delivered/`` (headline: the clone has
  it); the call's own return (the clone is ready) and a plain ``git clone`` of the same
  repository in the same run are the second column;
- **harvest**: a demo clone makes 10 commits (its brief's steps), then ``harvest`` with the
  trivial check ``true``, ``--harvests`` times (3), each from its own workspace.

Prints one JSON object on stdout (progress on stderr).

    .venv/bin/python bench/work_loop.py [--briefs 5] [--harvests 3] [--history-mb 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import logger, machine_facts, stop_on_sigterm  # noqa: E402
from client.rpc import Client  # noqa: E402
from tests.gitrepo import git  # noqa: E402
from tests.harness import Netsky, wait_for  # noqa: E402

log = logger("work_loop")


def make_repo(root: Path, files: int, history_mb: int, blob_mb: int) -> dict[str, Any]:
    """agent0's repository; returns its shape (files, commits, packed size)."""
    src = root / "agent0-repo"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    for i in range(files):
        d = src / f"pkg{i % 20}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i}.py").write_text(f"VALUE_{i} = {i}\n" * 20)
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", f"{files} files")
    commits = 1
    for k in range(max(1, history_mb // blob_mb)):
        (src / "data.bin").write_bytes(os.urandom(blob_mb * 1024 * 1024))
        git(src, "add", "data.bin")
        git(src, "commit", "-q", "-m", f"data {k}")
        commits += 1
    (src / "data.bin").unlink()
    git(src, "commit", "-qam", "drop the data file")
    git(src, "gc", "-q")
    size = sum(p.stat().st_size for p in (src / ".git").rglob("*") if p.is_file())
    return {"files": files, "commits": commits + 1, "git_dir_mb": round(size / 2**20, 1)}


def stats(samples: list[float]) -> dict[str, Any]:
    return {
        "p50_s": round(statistics.median(samples), 3),
        "max_s": round(max(samples), 3),
        "samples_s": [round(x, 3) for x in samples],
    }


def delivered(home: Path, agent: str, envelope_id: str) -> bool:
    box = home / "channels" / "agent" / agent / "delivered"
    return any(envelope_id in p.name for p in box.glob("*.json"))


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    log("making agent0's repository...")
    shape = make_repo(root, args.files, args.history_mb, args.blob_mb)
    log(f"repository: {shape}")
    src = root / "agent0-repo"
    netsky = Netsky(
        root / "home",
        clones=0,
        repo=str(src),
        max_clones=args.briefs + args.harvests + 1,
        ready_timeout_s=60.0,
        tick_interval_s=5.0,
    )
    try:
        netsky.start()
        wait_for(lambda: netsky.all_ready(["agent0", "agentinfinity"]), 60, "agent0 ready")
        sock = str(netsky.home / "netskyd.sock")
        brief_s, ready_s, clone_s = [], [], []
        for i in range(args.briefs):
            t = root / f"plain-clone-{i}"
            t0 = time.perf_counter()
            git(root, "clone", "-q", str(src), str(t))
            clone_s.append(time.perf_counter() - t0)
            shutil.rmtree(t)
            t0 = time.perf_counter()
            with Client(sock, timeout_s=600) as c:
                res = c.call("clone.brief", {"text": "nothing", "workspace": f"b{i}"},
                             timeout_s=600)
            ready_s.append(time.perf_counter() - t0)
            d = res["dispatch"]
            wait_for(lambda d=d: delivered(netsky.home, d["agent"], d["brief_envelope"]), 60,
                     "the brief delivered", step_s=0.005)
            brief_s.append(time.perf_counter() - t0)
            log(f"brief {i}: {brief_s[-1]:.2f}s to delivered ({ready_s[-1]:.2f}s to ready)")
        harvest_s = []
        for i in range(args.harvests):
            steps = "\n".join(f"write h{i}/f{k}.txt {k}\ncommit step {k}" for k in range(10))
            steps += "\ndone"
            with Client(sock, timeout_s=600) as c:
                res = c.call("clone.brief", {"text": steps, "workspace": f"h{i}"}, timeout_s=600)
                agent = res["dispatch"]["agent"]
                wait_for(
                    lambda c=c, a=agent: c.call("clone.status", {"agent": a})["clones"][0]["state"]
                    == "done",
                    120,
                    f"{agent}'s 10 commits",
                )
                t0 = time.perf_counter()
                out = c.call("harvest", {"target": agent, "check": "true"}, timeout_s=600)
                harvest_s.append(time.perf_counter() - t0)
            assert out["outcome"] == "landed" and out["commits"] == 10, out
            log(f"harvest {i}: {harvest_s[-1]:.2f}s for {out['commits']} commits")
        return {
            "repository": shape,
            "brief_to_delivered": stats(brief_s),
            "brief_call_to_ready": stats(ready_s),
            "plain_git_clone": stats(clone_s),
            "harvest_10_commits_trivial_check": stats(harvest_s),
        }
    finally:
        netsky.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--briefs", type=int, default=5)
    ap.add_argument("--harvests", type=int, default=3)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--history-mb", type=int, default=50)
    ap.add_argument("--blob-mb", type=int, default=2)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    stop_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="netsky-bench-work-"))
    try:
        result = {"bench": "work_loop", **run(args, root), **machine_facts()}
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
