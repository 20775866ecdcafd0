"""``netskyctl notes`` (client.notes): one block per call, whole under concurrent appends
from two agents, UTC dates across midnight, ``--since`` windows, and a notes directory
that cannot be written (a clear error, exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from calendar import timegm
from pathlib import Path

import pytest

from client import notes

pytestmark = pytest.mark.timeout(60)


def utc(*args: int) -> float:
    return float(timegm((*args, 0, 0, 0)))  # type: ignore[arg-type]


def ctl(home: Path, *args: str, agent: str = "", input: str | None = None,
        notes_dir: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSKY_", "AGENT_N"))}
    env["NETSKY_HOME"] = str(home)
    if notes_dir is not None:
        env["NETSKY_NOTES_DIR"] = str(notes_dir)
    if agent:
        env["AGENT_N"] = agent
    argv = [sys.executable, "-m", "client", "notes", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, input=input,
                          timeout=30, check=False)  # fmt: skip


def test_dates_are_utc_and_cross_midnight(tmp_path: Path) -> None:
    before = utc(2026, 12, 6, 23, 59, 59)
    after = before + 2
    p1 = notes.append(str(tmp_path), "agent0", "late", when=before)
    p2 = notes.append(str(tmp_path), "agent0", "early", when=after)
    assert p1.endswith("notes/2026/12/06/agent0.md") and p2.endswith("notes/2026/12/07/agent0.md")
    assert Path(p1).read_text() == "\n## 23:59:59Z agent0\n\nlate\n"
    # the window: today only, then today and yesterday
    assert [e["date"] for e in notes.read(str(tmp_path), "agent0", 0, now=after)] == ["2026-12-07"]
    got = notes.read(str(tmp_path), "agent0", notes.parse_since("1d"), now=after)
    assert [e["date"] for e in got] == ["2026-12-06", "2026-12-07"]
    assert notes.parse_since("36h") == 36 * 3600 and notes.parse_since("2") == 2 * 86400
    with pytest.raises(notes.Usage):
        notes.parse_since("yesterday")


def test_two_agents_appending_at_once_leave_whole_blocks(tmp_path: Path) -> None:
    script = (
        "import sys; from client import notes\n"
        "for i in range(40):\n"
        "    notes.append(sys.argv[1], sys.argv[2], f'{sys.argv[2]} note {i}\\n' + 'x' * 3000)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), a])
             for a in ("agent1", "agent1", "agent2")]  # fmt: skip
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0]
    for agent, writers in (("agent1", 2), ("agent2", 1)):
        (entry,) = [e for e in notes.read(str(tmp_path), None, 0) if e["agent"] == agent]
        blocks = entry["text"].split("\n## ")[1:]
        assert len(blocks) == 40 * writers
        for b in blocks:  # each block whole: heading, note, its 3,000 x's
            head, body = b.split("\n\n", 1)
            assert head.endswith(agent) and body.startswith(f"{agent} note ")
            assert body.rstrip("\n").endswith("x" * 3000)


def test_the_cli_appends_shows_and_fails_clearly(tmp_path: Path) -> None:
    home, nd = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    res = ctl(home, "append", "what: fixed the bus\nwhy: it dropped\nhow: tests", agent="2",
              notes_dir=nd)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "notes/" in res.stdout and (nd / "notes").is_dir()
    assert ctl(home, "append", "-", agent="0", input="from stdin", notes_dir=nd).returncode == 0
    shown = json.loads(ctl(home, "show", "--json", notes_dir=nd).stdout)
    assert [e["agent"] for e in shown["entries"]] == ["agent0", "agent2"]
    assert "from stdin" in shown["entries"][0]["text"]
    mine = ctl(home, "show", agent="2", notes_dir=nd).stdout
    assert "fixed the bus" in mine and "from stdin" not in mine
    # no agent, an empty note: usage
    assert ctl(home, "append", "x", notes_dir=nd).returncode == 2
    assert ctl(home, "append", " ", agent="1", notes_dir=nd).returncode == 2
    # a notes dir that cannot be written (a file where the directory should be)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    res = ctl(home, "append", "x", agent="1", notes_dir=blocker)
    assert res.returncode == 1 and "cannot write notes under" in res.stderr
    assert str(blocker) in res.stderr


def test_the_notes_dir_defaults_to_agent0s_repo(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'repo = "{tmp_path / "src"}"\n')
    env = {"NETSKY_HOME": str(tmp_path), "NETSKY_CONFIG": str(cfg)}
    assert notes.notes_dir(env) == str(tmp_path / "src")
    assert notes.notes_dir({**env, "NETSKY_NOTES_DIR": "/x/y"}) == "/x/y"
    bare = tmp_path / "bare-home"
    assert notes.notes_dir({"NETSKY_HOME": str(bare)}) == str(bare)
