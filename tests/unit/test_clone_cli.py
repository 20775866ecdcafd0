"""netskyctl's work-loop commands: ``clone brief|report|status|ls|wait|kill`` and ``harvest``.

The daemon is a small fake JSON-RPC server on a real Unix socket (it answers ``hello``
and what each test scripts, and records the params it got), so what is checked is the
client's side: the arguments it sends, the text it prints, the exit codes it maps.
The doctor's two work-loop checks run against real git repositories and a real meta.db
made with netskyd's own migrations.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import doctor as cd
from client.clone import brief_timeout_s
from client.harvest import harvest_timeout_s
from client.netskyctl import main
from netsky_shared import protocol
from tests.gitrepo import git

pytestmark = pytest.mark.timeout(60)

#: What a scripted method answers: a result, or ``Err`` (a JSON-RPC error).
Answer = Callable[[dict[str, Any]], Any]


class Err(Exception):
    """A scripted JSON-RPC error answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class FakeDaemon:
    """A JSON-RPC 2.0 server on ``home/netskyd.sock`` (one thread per connection):
    ``hello`` as netskyd answers it; any other method from ``answers``; ``calls`` holds
    ``(method, params)`` in arrival order."""

    def __init__(self, home: Path) -> None:
        self.path = str(home / "netskyd.sock")
        self.answers: dict[str, Answer] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def params(self, method: str) -> dict[str, Any]:
        """The params of the last call of ``method``."""
        return [p for m, p in self.calls if m == method][-1]

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                req = json.loads(line)
                method, params = req["method"], req.get("params") or {}
                if method == protocol.HELLO:
                    value = {"api_version": protocol.API_VERSION, "version": "0", "pid": 1}
                    resp = protocol.result(req["id"], value)
                else:
                    self.calls.append((method, params))
                    try:
                        resp = protocol.result(req["id"], self.answers[method](params))
                    except Err as e:
                        resp = protocol.error(req["id"], e.code, str(e))
                f.write((json.dumps(resp) + "\n").encode())
                f.flush()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def home() -> Iterator[Path]:
    """A short NETSKY_HOME: a socket path must fit in 108 bytes."""
    d = Path(tempfile.mkdtemp(prefix="nsc-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(home: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(home)
    try:
        yield fake
    finally:
        fake.close()


def run(home: Path, *argv: str, **env: str) -> int:
    return main(list(argv), environ={"NETSKY_HOME": str(home), **env})


def run_json(home: Path, capsys: pytest.CaptureFixture[str], *argv: str, **env: str) -> Any:
    capsys.readouterr()
    code = run(home, *argv, "--json", **env)
    return code, json.loads(capsys.readouterr().out)


def dispatch(**over: Any) -> dict[str, Any]:
    """A DispatchRow as netskyd answers it."""
    row = {
        "id": 7,
        "ts": "2026-11-21T10:00:00.000000Z",
        "agent": "agent3",
        "workspace": "fix-transport",
        "source_repo": "/src/app",
        "repo": "/home/me/.netsky/workspaces/fix-transport/repo",
        "branch": "netsky/fix-transport",
        "base": "main",
        "base_sha": "a" * 40,
        "runtime": "codex",
        "brief_envelope": "e" * 32,
        "brief_bytes": 42,
        "state": "briefed",
        "state_ts": "2026-11-21T10:00:00.000000Z",
        "head_sha": None,
        "ahead": None,
        "report": None,
        "reported_ts": None,
        "harvested_sha": None,
        "error": None,
        "alive": True,
        "ready": True,
    }
    return {**row, **over}


def brief_file(tmp: Path, text: str = "fix the transport\n") -> str:
    path = tmp / "brief.md"
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- clone brief ------------------------------------------------------------------------------


def test_brief_sends_the_file_and_says_what_next(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers[protocol.CLONE_BRIEF] = lambda p: {
        "dispatch": dispatch(),
        "ready": True,
        "delivered": None,
    }
    path = brief_file(home, "fix the transport ✓\n")
    assert run(home, "clone", "brief", path, "--workspace", "fix transport", "--agent", "3") == 0
    text = capsys.readouterr().out
    params = daemon.params(protocol.CLONE_BRIEF)
    assert params == {"text": "fix the transport ✓\n", "workspace": "fix transport", "agent": 3}
    assert "briefed agent3 (codex) into workspace fix-transport" in text
    assert "/home/me/.netsky/workspaces/fix-transport/repo" in text
    assert "netsky/fix-transport from main at aaaaaaaaaaaa" in text
    assert "agent3: ready" in text
    assert "netskyctl clone wait 3" in text and "netskyctl harvest 3" in text


def test_brief_passes_the_workspace_name_through_unchanged(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """netskyd normalises the name (netskyd.work.names); the client must not."""
    daemon.answers[protocol.CLONE_BRIEF] = lambda p: {
        "dispatch": dispatch(workspace="etc-passwd"),
        "ready": False,
        "delivered": False,
    }
    code, res = run_json(
        home,
        capsys,
        "clone",
        "brief",
        brief_file(home),
        "--workspace",
        "../etc/passwd!",
        "--wait",
        "5",
    )
    assert code == 0 and res["dispatch"]["workspace"] == "etc-passwd"
    params = daemon.params(protocol.CLONE_BRIEF)
    assert params["workspace"] == "../etc/passwd!" and params["wait_s"] == 5.0
    # A name like an option is a value too (argparse alone says "expected one argument").
    assert run(home, "clone", "brief", brief_file(home), "--workspace", "-rf") == 0
    assert daemon.params(protocol.CLONE_BRIEF)["workspace"] == "-rf"


def test_brief_resolves_repo_and_reads_stdin(
    home: Path,
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon.answers[protocol.CLONE_BRIEF] = lambda p: {
        "dispatch": dispatch(),
        "ready": False,
        "delivered": None,
    }
    monkeypatch.chdir(home)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("fröm stdin\n".encode())))
    argv = ["clone", "brief", "-", "--workspace", "w", "--repo", "src/app", "--base", "dev"]
    assert run(home, *argv, "--runtime", "demo") == 0
    params = daemon.params(protocol.CLONE_BRIEF)
    assert params["text"] == "fröm stdin\n"
    assert params["repo"] == str(home / "src" / "app") and os.path.isabs(params["repo"])
    assert params["base"] == "dev" and params["runtime"] == "demo"
    assert "not ready yet" in capsys.readouterr().out


def test_brief_file_missing_or_not_utf8_is_usage(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 naming the file, before any connection (there is no daemon here)."""
    missing = str(home / "nope.md")
    assert run(home, "clone", "brief", missing, "--workspace", "w") == 2
    assert f"cannot read the brief file {missing}" in capsys.readouterr().err
    bad = home / "latin1.md"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    assert run(home, "clone", "brief", str(bad), "--workspace", "w") == 2
    assert f"the brief in {bad} is not UTF-8" in capsys.readouterr().err
    empty = home / "empty.md"
    empty.write_text("  \n")
    assert run(home, "clone", "brief", str(empty), "--workspace", "w") == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["clone"],
        ["clone", "brief", "x.md"],  # no --workspace
        ["clone", "brief", "x.md", "--workspace", "w", "--wait", "soon"],
        ["clone", "wait", "3"],  # no --timeout
        ["clone", "wait", "0", "--timeout", "5"],
        ["clone", "wait", "3", "--timeout", "0"],
        ["clone", "status", "infinity"],
        ["clone", "kill", "3", "--force"],  # --force without --rm
        ["clone", "kill", "agentx"],
        ["harvest"],
    ],
)
def test_usage_errors_exit_2_without_a_daemon(home: Path, argv: list[str]) -> None:
    assert run(home, *argv) == 2


def test_brief_agent_must_be_a_clone(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["clone", "brief", brief_file(home), "--workspace", "w", "--agent"]
    assert run(home, *argv, "0") == 2
    assert "agent0 is not a clone" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (protocol.TEMPORARY_FAILURE, 75),
        (protocol.INVALID_PARAMS, 2),
        (protocol.NETSKY_ERROR, 1),
        (protocol.SPAWN_FAILED, 1),
    ],
)
def test_brief_errors_map_to_exit_codes(
    home: Path,
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    code: int,
    exit_code: int,
) -> None:
    message = "no clone can take the brief: all 2 clone slots are busy (held by agent1, agent2)"

    def refuse(params: dict[str, Any]) -> Any:
        raise Err(code, message)

    daemon.answers[protocol.CLONE_BRIEF] = refuse
    assert run(home, "clone", "brief", brief_file(home), "--workspace", "w") == exit_code
    assert message in capsys.readouterr().err
    code_, res = run_json(home, capsys, "clone", "brief", brief_file(home), "--workspace", "w")
    assert code_ == exit_code and res == {"error": message, "exit_code": exit_code}


def test_brief_deadline_covers_clone_readiness_and_wait() -> None:
    env = {"NETSKY_GIT_TIMEOUT_S": "100", "NETSKY_READY_TIMEOUT_S": "20"}
    assert brief_timeout_s(env, 5.0) >= 2 * 100 + 20 + 5
    assert brief_timeout_s({}, 0.0) >= 300 + 60
    assert harvest_timeout_s({"NETSKY_CHECK_TIMEOUT_S": "900"}) >= 900 + 300


# -- clone report -----------------------------------------------------------------------------


def test_report_is_for_clones(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "clone", "report", "did it") == 2
    assert "clone report is for clones" in capsys.readouterr().err
    assert run(home, "clone", "report", "did it", AGENT_N="0") == 2
    assert "clone report is for clones" in capsys.readouterr().err
    assert run(home, "clone", "report", "did it", AGENT_N="infinity") == 2


def test_report_from_agent_n(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    row = dispatch(state="done", head_sha="b" * 40, ahead=2)
    daemon.answers[protocol.CLONE_REPORT] = lambda p: {"dispatch": row, "envelope": "f" * 32}
    assert run(home, "clone", "report", "fixed it", "--done", "--sha", "b" * 7, AGENT_N="3") == 0
    assert daemon.params(protocol.CLONE_REPORT) == {
        "agent": "agent3",
        "text": "fixed it",
        "done": True,
        "sha": "bbbbbbb",
    }
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "agent3 done: head bbbbbbbbbbbb, 2 commits ahead of main; report ffffffff sent to agent0"
    )
    assert run(home, "clone", "report", "-x", "--agent", "agent5", AGENT_N="3") == 0
    assert daemon.params(protocol.CLONE_REPORT)["agent"] == "agent5"
    assert daemon.params(protocol.CLONE_REPORT)["text"] == "-x"


def test_report_without_a_brief_is_exit_2(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def unknown(params: dict[str, Any]) -> Any:
        raise Err(protocol.UNKNOWN_AGENT, "agent4 holds no brief (netskyctl clone ls)")

    daemon.answers[protocol.CLONE_REPORT] = unknown
    assert run(home, "clone", "report", "done", AGENT_N="4") == 2
    assert "agent4 holds no brief" in capsys.readouterr().err


# -- clone status, ls, kill -------------------------------------------------------------------


def test_status_and_ls(home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        dispatch(state="reported", head_sha="c" * 40, ahead=3, report="half of it\nmore"),
        dispatch(agent="agent1", workspace="docs", state="briefed", alive=False),
    ]
    daemon.answers[protocol.CLONE_STATUS] = lambda p: {
        "clones": rows[:1] if p.get("agent") else rows
    }
    assert run(home, "clone", "status", "3") == 0
    assert daemon.params(protocol.CLONE_STATUS) == {"agent": "agent3"}
    text = capsys.readouterr().out
    assert text.startswith("agent3: reported")
    assert "cccccccccccc, 3 commits ahead of main" in text
    assert "half of it more" in text and "next:      netskyctl harvest 3" in text

    assert run(home, "clone", "ls", "--all") == 0
    assert daemon.params(protocol.CLONE_STATUS) == {"all": True}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["AGENT", "WORKSPACE", "STATE", "AHEAD", "HEAD", "ALIVE", "AGE"]
    assert lines[1].split()[:6] == ["agent3", "fix-transport", "reported", "3", "c" * 12, "yes"]
    assert lines[2].split()[:6] == ["agent1", "docs", "briefed", "-", "-", "no"]

    code, res = run_json(home, capsys, "clone", "ls")
    assert code == 0 and res == {"clones": rows}
    assert daemon.params(protocol.CLONE_STATUS) == {"all": False}


def test_status_of_a_clone_never_briefed_is_exit_2(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def unknown(params: dict[str, Any]) -> Any:
        raise Err(protocol.UNKNOWN_AGENT, "agent9 was never briefed")

    daemon.answers[protocol.CLONE_STATUS] = unknown
    assert run(home, "clone", "status", "9") == 2
    assert "agent9 was never briefed" in capsys.readouterr().err


def test_kill_keeps_or_removes_and_refusal_is_exit_1(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def kill(params: dict[str, Any]) -> Any:
        if params["rm"] and not params["force"]:
            raise Err(
                protocol.NETSKY_ERROR,
                "workspace fix-transport has 2 commit(s) never harvested: netskyctl harvest 3, "
                "or --force to remove them",
            )
        d = dispatch(state="killed")
        return {"agent": "agent3", "killed": True, "dispatch": d, "removed": params["rm"]}

    daemon.answers[protocol.CLONE_KILL] = kill
    assert run(home, "clone", "kill", "3") == 0
    text = capsys.readouterr().out
    assert "agent3 killed" in text and "netskyctl clone kill 3 --rm" in text
    assert run(home, "clone", "kill", "3", "--rm") == 1
    assert "--force" in capsys.readouterr().err
    assert run(home, "clone", "kill", "agent3", "--rm", "--force") == 0
    assert "workspace fix-transport removed" in capsys.readouterr().out
    assert daemon.params(protocol.CLONE_KILL) == {"agent": "agent3", "rm": True, "force": True}


# -- clone wait -------------------------------------------------------------------------------


def states(*sequence: str, **last: Any) -> Answer:
    """A ``clone.status`` answer that walks through ``sequence`` and then stays at the end."""
    seen: list[str] = []

    def answer(params: dict[str, Any]) -> Any:
        state = sequence[min(len(seen), len(sequence) - 1)]
        seen.append(state)
        extra = last if len(seen) >= len(sequence) else {}
        return {"clones": [dispatch(state=state, **extra)]}

    return answer


@pytest.mark.parametrize(
    ("sequence", "exit_code", "said"),
    [
        (("briefed", "briefed", "reported"), 0, "agent3 reported after"),
        (("briefed", "done"), 0, "next: netskyctl harvest 3"),
        (("harvested",), 0, "agent3 harvested"),
        (("briefed", "failed"), 1, "agent3's brief failed"),
        (("killed",), 1, "agent3's brief killed"),
    ],
)
def test_wait_until_reported_or_ended(
    home: Path,
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    sequence: tuple[str, ...],
    exit_code: int,
    said: str,
) -> None:
    daemon.answers[protocol.CLONE_STATUS] = states(*sequence, head_sha="d" * 40, ahead=1)
    assert run(home, "clone", "wait", "3", "--timeout", "30") == exit_code
    assert said in capsys.readouterr().out
    assert len(daemon.calls) == len(sequence)
    assert all(p == {"agent": "agent3"} for _, p in daemon.calls)


def test_wait_deadline_is_124_and_json_is_the_row(
    home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers[protocol.CLONE_STATUS] = states("briefed")
    code, row = run_json(home, capsys, "clone", "wait", "3", "--timeout", "1.2")
    assert code == 124 and row["state"] == "briefed" and row["agent"] == "agent3"
    assert 2 <= len(daemon.calls) <= 5  # every 0.5 s
    assert run(home, "clone", "wait", "3", "--timeout", "0.6") == 124
    captured = capsys.readouterr()
    assert "agent3 still briefed after 0.6s" in captured.out


def test_wait_for_a_clone_never_briefed_is_exit_2(home: Path, daemon: FakeDaemon) -> None:
    def unknown(params: dict[str, Any]) -> Any:
        raise Err(protocol.UNKNOWN_AGENT, "agent3 was never briefed")

    daemon.answers[protocol.CLONE_STATUS] = unknown
    assert run(home, "clone", "wait", "3", "--timeout", "5") == 2


def test_wait_without_a_daemon_is_exit_3(home: Path) -> None:
    assert run(home, "clone", "wait", "3", "--timeout", "5") == 3


# -- harvest ----------------------------------------------------------------------------------


def harvest_result(outcome: str, **over: Any) -> dict[str, Any]:
    landed = outcome == "landed"
    res = {
        "harvest": 4,
        "outcome": outcome,
        "agent": "agent3",
        "workspace": "fix-transport",
        "onto": "main",
        "onto_before": "1" * 40,
        "onto_after": "2" * 40 if landed else None,
        "commits": 2,
        "check": "make test",
        "check_exit": 0 if landed else 1,
        "log": "/home/me/.netsky/logs/harvest/4.log",
        "pushed": "origin/main" if landed else None,
        "reason": None if landed else "check 'make test' exited 1 (log: ...)",
        "conflicts": [],
        "remove_with": "netskyctl clone kill 3 --rm",
    }
    return {**res, **over}


def test_harvest_landed(home: Path, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers[protocol.HARVEST] = lambda p: harvest_result("landed")
    assert run(home, "harvest", "3", "--onto", "release") == 0
    assert daemon.params(protocol.HARVEST) == {"target": "3", "push": True, "onto": "release"}
    text = capsys.readouterr().out
    assert text.startswith("landed: 2 commits of fix-transport (agent3) on main")
    assert "111111111111 -> 222222222222" in text
    assert "/home/me/.netsky/logs/harvest/4.log" in text and "origin/main" in text
    assert text.rstrip().endswith("remove the workspace: netskyctl clone kill 3 --rm")


@pytest.mark.parametrize(
    ("outcome", "over"),
    [
        ("conflict", {"conflicts": ["shared.txt"], "reason": "conflict applying onto main"}),
        ("red", {}),
        ("failed", {"reason": "main moved while the check ran; nothing was changed"}),
    ],
)
def test_harvest_not_landed_is_exit_1_and_onto_unchanged(
    home: Path,
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    outcome: str,
    over: dict[str, Any],
) -> None:
    res = harvest_result(outcome, **over)
    daemon.answers[protocol.HARVEST] = lambda p: res
    assert run(home, "harvest", "fix-transport", "--check", "", "--no-push") == 1
    assert daemon.params(protocol.HARVEST) == {
        "target": "fix-transport",
        "push": False,
        "check": "",
    }
    text = capsys.readouterr().out
    assert text.startswith(f"{outcome}: 2 commits of fix-transport (agent3) not harvested")
    assert "main is unchanged (at 111111111111)" in text
    assert str(res["reason"]) in text
    if over.get("conflicts"):
        assert "conflicts: shared.txt" in text
    code, got = run_json(home, capsys, "harvest", "3")
    assert code == 1 and got == res


@pytest.mark.parametrize(
    ("code", "exit_code", "message"),
    [
        (protocol.UNKNOWN_AGENT, 2, "'nope' is neither a briefed clone nor a workspace"),
        (protocol.NETSKY_ERROR, 1, "/src/app has uncommitted changes (a.txt): commit or stash"),
    ],
)
def test_harvest_refusals(
    home: Path,
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    code: int,
    exit_code: int,
    message: str,
) -> None:
    def refuse(params: dict[str, Any]) -> Any:
        raise Err(code, message)

    daemon.answers[protocol.HARVEST] = refuse
    assert run(home, "harvest", "nope") == exit_code
    assert message in capsys.readouterr().err


# -- doctor: workspaces and head-stability, with real git and a real meta.db ------------------



def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{name}: {text.strip()}")
    return git(repo, "rev-parse", "HEAD")


def meta_db(home: Path) -> sqlite3.Connection:
    """meta.db at this install's schema, made by netskyd's migrations."""
    from netskyd.store.migrations import MIGRATIONS

    db = sqlite3.connect(home / "meta.db")
    for version, sql in MIGRATIONS:
        db.executescript(sql)
        db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    return db


def add_dispatch(db: sqlite3.Connection, **row: Any) -> None:
    base = {
        "ts": "2026-11-21T10:00:00.000000Z",
        "runtime": "demo",
        "brief_bytes": 10,
        "state": "briefed",
        "state_ts": "2026-11-21T10:00:00.000000Z",
        "source_repo": "/src",
    }
    row = {**base, **row}
    cols = ", ".join(row)
    db.execute(
        f"INSERT INTO clone_dispatches ({cols}) VALUES ({', '.join('?' for _ in row)})",
        list(row.values()),
    )
    db.commit()


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, str]:
    """(source repository on main, a workspace clone of it on netsky/fix, base sha)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    base = commit(src, "README", "hello\n")
    ws = tmp_path / "workspaces" / "fix" / "repo"
    ws.parent.mkdir(parents=True)
    git(tmp_path, "clone", "-q", str(src), str(ws))
    git(ws, "checkout", "-q", "-b", "netsky/fix", base)
    return src, ws, base


def test_workspaces_check_names_unharvested_commits(
    tmp_path: Path, repos: tuple[Path, Path, str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert cd.check_workspaces(str(home), os.environ)["status"] == "ok"  # no meta.db
    src, ws, base = repos
    db = meta_db(home)
    assert cd.check_workspaces(str(home), os.environ)["detail"] == "no open briefs"
    row = {"workspace": "fix", "repo": str(ws), "branch": "netsky/fix", "base": "main"}
    add_dispatch(db, agent="agent3", base_sha=base, **row)
    got = cd.check_workspaces(str(home), os.environ)
    assert got == cd.check("workspaces", "ok", "1 open, no commits waiting for a harvest")

    commit(ws, "a.txt", "one\n")
    tip = commit(ws, "b.txt", "two\n")
    git(ws, "checkout", "-q", base)  # the branch counts, not what is checked out
    got = cd.check_workspaces(str(home), os.environ)
    assert got["status"] == "warn"
    assert "fix (agent3, briefed): 2 commits" in got["detail"]
    assert "netskyctl harvest N" in got["hint"]

    db.execute("UPDATE clone_dispatches SET harvested_sha = ?, state = 'done'", (tip,))
    db.commit()
    assert cd.check_workspaces(str(home), os.environ)["status"] == "ok"
    commit(ws, "c.txt", "three\n")  # on the detached HEAD: not on the branch
    assert cd.check_workspaces(str(home), os.environ)["status"] == "ok"

    db.execute("UPDATE clone_dispatches SET state = 'harvested'")  # closed: not looked at
    broken = tmp_path / "broken"
    broken.mkdir()
    add_dispatch(db, agent="agent4", workspace="broken", repo=str(broken), branch="netsky/b",
                 base="main", base_sha=base)  # fmt: skip
    add_dispatch(db, agent="agent5", workspace="gone", repo=str(tmp_path / "gone"),
                 branch="netsky/g", base="main", base_sha=base)  # fmt: skip
    got = cd.check_workspaces(str(home), os.environ)
    assert got["status"] == "warn" and "fix (agent3" not in got["detail"]
    assert "broken (agent4, briefed):" in got["detail"]
    assert f"gone (agent5, briefed): {tmp_path / 'gone'} is gone" in got["detail"]


def test_head_stability_check(tmp_path: Path, repos: tuple[Path, Path, str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    src, _, base = repos
    db = meta_db(home)
    assert cd.check_head_stability(str(home), os.environ) == cd.check(
        "head-stability", "ok", "no harvest has landed yet"
    )
    landed = commit(src, "x.txt", "landed\n")

    def harvest_row(outcome: str, onto_after: str | None, onto: str = "main") -> None:
        db.execute(
            "INSERT INTO harvests (ts, finished_ts, workspace, target_repo, onto, onto_after, "
            "outcome) VALUES (?, ?, 'fix', ?, ?, ?, ?)",
            ("2026-11-21T10:00:00Z", "2026-11-21T10:00:05Z", str(src), onto, onto_after, outcome),
        )
        db.commit()

    harvest_row("landed", base)
    harvest_row("landed", landed)  # the newest landing counts
    harvest_row("conflict", None)  # not a landing
    got = cd.check_head_stability(str(home), os.environ)
    assert got["status"] == "ok" and f"main at {landed[:12]}" in got["detail"]

    later = commit(src, "y.txt", "outside\n")
    got = cd.check_head_stability(str(home), os.environ)
    assert got["status"] == "warn"
    assert f"at {later[:12]}, the last harvest left it at {landed[:12]}" in got["detail"]
    assert "moved on" in got["detail"]

    git(src, "reset", "-q", "--hard", base)
    rewritten = commit(src, "z.txt", "rewrite\n")
    got = cd.check_head_stability(str(home), os.environ)
    assert f"at {rewritten[:12]}" in got["detail"] and "rewritten" in got["detail"]

    harvest_row("landed", landed, onto="release")  # a branch that is not there
    got = cd.check_head_stability(str(home), os.environ)
    assert got["status"] == "warn" and "release in" in got["detail"]
    assert "cannot read it" in got["detail"]


def test_work_checks_skip_an_old_schema_and_survive_a_broken_db(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "meta.db")
    db.execute("PRAGMA user_version = 5")
    db.close()
    for fn, name in ((cd.check_workspaces, "workspaces"), (cd.check_head_stability,
                                                            "head-stability")):  # fmt: skip
        got = fn(str(tmp_path), os.environ)
        assert got["status"] == "ok" and got["name"] == name and "no" in got["detail"]
    (tmp_path / "meta.db").write_bytes(b"not a database" * 100)
    assert cd.check_workspaces(str(tmp_path), os.environ)["status"] == "warn"
    assert cd.check_head_stability(str(tmp_path), os.environ)["status"] == "warn"


def test_doctor_git_has_a_deadline(tmp_path: Path) -> None:
    """A git that hangs is cut at the deadline and named, never raised."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    code, why = cd.git({"PATH": f"{bin_dir}:/usr/bin:/bin"}, str(tmp_path), "rev-parse",
                       timeout_s=0.5)  # fmt: skip
    assert code == -1 and "did not answer within 0.5s" in why
    code, why = cd.git({"PATH": str(tmp_path / "none")}, str(tmp_path), "rev-parse")
    assert code == -1 and "git cannot run" in why
