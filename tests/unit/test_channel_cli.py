"""netskyctl's bus commands on a real NETSKY_HOME, with the daemon down.

``channel send --file``, ``ls``, ``peek``, ``poison``, ``retry`` work on the files
themselves; ``replay`` needs the daemon, so only its argument parsing and the
daemon-down exit are covered here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from client.channel import parse_since, poisoned_names, preview
from client.common import Usage
from client.netskyctl import main

ID_A = "aaaa1111" + "0" * 24
ID_B = "aaaa2222" + "0" * 24
ID_C = "cccc3333" + "0" * 24


def run(home: Path, *argv: str, **env: str) -> int:
    return main(list(argv), environ={"NETSKY_HOME": str(home), **env})


def run_json(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = run(home, *argv, "--json")
    return code, json.loads(capsys.readouterr().out)


def box(home: Path, agent: str, name: str) -> Path:
    d = home / "channels" / "agent" / agent / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def envelope(env_id: str, sender: str = "agent0", to: str = "agent1", text: str = "hi") -> str:
    return json.dumps(
        {
            "v": 1,
            "id": env_id,
            "from": sender,
            "to": to,
            "ts": "2026-11-21T10:00:00.000000Z",
            "kind": "message",
            "text": text,
            "chat_id": sender,
            "in_reply_to": None,
        }
    )


def poison(home: Path, agent: str, name: str, body: str, rule: str | None = "schema") -> None:
    """Put an item in poison/ the way the daemon does: reason file first, then the item."""
    d = box(home, agent, "poison")
    if rule is not None:
        reason = {"rule": rule, "detail": f"{rule} broke", "ts": "2026-11-21T10:00:01Z"}
        (d / f"{name}.reason.json").write_text(json.dumps({**reason, "file": name}))
    (d / name).write_text(body)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """agent1 holds good envelopes and every kind of bad entry; three other agents exist."""
    h = tmp_path / "home"
    inbox, claimed = box(h, "agent1", "inbox"), box(h, "agent1", "claimed")
    (claimed / "200-agent0-c.json").write_text(envelope(ID_C, text="claimed one"))
    (inbox / "100-agent0-a.json").write_text(envelope(ID_A, text="line one\n\tline two " * 20))
    (inbox / "300-agent2-b.json").write_text(envelope(ID_B, sender="agent2"))
    (inbox / "400-notjson.json").write_text("this is {not json")
    (inbox / "500-list.json").write_text("[1, 2]")
    os.mkfifo(inbox / "600-fifo.json")
    (inbox / "700-link.json").symlink_to(inbox / "100-agent0-a.json")
    (inbox / "800-dir.json").mkdir()
    (inbox / ".hidden").write_text("not counted")
    (box(h, "agent1", "delivered") / "50-agent0-d.json").write_text(envelope("d" * 32))
    (box(h, "agent1", "outbox") / "reply.json").write_text("{}")
    poison(h, "agent1", "900-agent3-p.json", envelope("feed1234" + "0" * 24, sender="agent3"))
    poison(h, "agent1", "901-garbage.json", "garbage", rule="json")
    poison(h, "agent1", "902-noreason.json", "x", rule=None)
    for agent in ("agentinfinity", "agent10", "agent2"):
        box(h, agent, "inbox")
    (h / "channels" / "agent" / "notanagent").mkdir()
    return h


# -- send --file -------------------------------------------------------------------------


def test_send_file_reads_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "msg.txt"
    f.write_text("héllo\nwörld ✓\n", encoding="utf-8")
    code, out = run_json(tmp_path, capsys, "channel", "send", "2", "--file", str(f), "--from", "0")
    assert code == 0
    env = json.loads(Path(out["path"]).read_text(encoding="utf-8"))
    assert env["text"] == "héllo\nwörld ✓\n" and env["to"] == "agent2"


@pytest.mark.parametrize("extra", [[], ["hi", "--file", "msg.txt"]])
def test_send_needs_exactly_one_text_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    (tmp_path / "msg.txt").write_text("x")
    argv = ["channel", "send", "agent1", *extra, "--from", "agent0"]
    assert run(tmp_path, *[str(tmp_path / a) if a == "msg.txt" else a for a in argv]) == 2
    assert "exactly one of TEXT" in capsys.readouterr().err
    assert not (tmp_path / "channels/agent/agent1/inbox").exists()


def test_send_file_missing_or_not_utf8_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(tmp_path, "channel", "send", "1", "--file", str(tmp_path / "nope"), "--from", "0") == 1
    )
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert (
        run(tmp_path, "channel", "send", "1", "--file", str(tmp_path / "latin1.txt"), "--from", "0")
        == 1
    )
    assert "not UTF-8" in capsys.readouterr().err


def test_send_file_too_large_exits_75(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "big.txt").write_text("x" * 5000)
    argv = ["channel", "send", "1", "--file", str(tmp_path / "big.txt"), "--from", "0"]
    assert run(tmp_path, *argv, NETSKY_ENVELOPE_MAX_BYTES="2048") == 75
    err = capsys.readouterr().err
    assert "over 2048 bytes" in err and "envelope_max_bytes" in err
    assert not list(box(tmp_path, "agent1", "inbox").iterdir())


def test_full_inbox_says_why_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"NETSKY_INBOX_MAX_PENDING": "1"}
    assert run(tmp_path, "channel", "send", "1", "a", "--from", "0", **env) == 0
    assert run(tmp_path, "channel", "send", "1", "b", "--from", "0", **env) == 75
    err = capsys.readouterr().err
    assert "inbox of agent1 is full" in err and "channel peek" in err


# -- ls ------------------------------------------------------------------------------------


def test_ls_counts_every_box_in_agent_order(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(home, capsys, "channel", "ls")
    assert code == 0
    assert [a["agent"] for a in out["agents"]] == ["agent1", "agent2", "agent10", "agentinfinity"]
    assert out["agents"][0] == {
        "agent": "agent1",
        "pending": 7,  # .hidden is not counted; bad entries are
        "claimed": 1,
        "delivered": 1,
        "poisoned": 3,  # reason files are not items
        "outbox": 1,
        "unconsumed": 0,  # no meta.db here
        "unconsumed_ids": [],
    }
    assert out["agents"][1] == {
        "agent": "agent2",
        "pending": 0,
        "claimed": 0,
        "delivered": 0,
        "poisoned": 0,
        "outbox": 0,
        "unconsumed": 0,
        "unconsumed_ids": [],
    }
    assert run(home, "channel", "ls") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "AGENT", "PENDING", "CLAIMED", "DELIVERED", "POISONED", "OUTBOX", "UNCONSUMED"
    ]
    assert lines[1].split() == ["agent1", "7", "1", "1", "3", "1", "0"]
    assert [ln.split()[0] for ln in lines[2:]] == ["agent2", "agent10", "agentinfinity"]
    assert lines[1].index("7") == lines[0].index("PENDING")  # aligned columns


def test_ls_one_agent_and_empty_home(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_json(home, capsys, "channel", "ls", "1")
    assert code == 0 and [a["agent"] for a in out["agents"]] == ["agent1"]
    code, out = run_json(home, capsys, "channel", "ls", "agent7")
    assert out["agents"] == [
        {"agent": "agent7", "pending": 0, "claimed": 0, "delivered": 0, "poisoned": 0,
         "outbox": 0, "unconsumed": 0, "unconsumed_ids": []}
    ]
    empty = tmp_path / "empty"
    assert run(empty, "channel", "ls") == 0
    assert "no channels" in capsys.readouterr().out
    assert run(home, "channel", "ls", "bob") == 2


# -- peek ----------------------------------------------------------------------------------


def test_peek_lists_claimed_then_inbox_and_flags_bad_entries(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_json(home, capsys, "channel", "peek", "agent1")
    assert code == 0
    assert out["agent"] == "agent1" and out["total"] == 8 and out["shown"] == 8
    envs = out["envelopes"]
    assert [(e["box"], e["file"]) for e in envs] == [
        ("claimed", "200-agent0-c.json"),
        ("inbox", "100-agent0-a.json"),
        ("inbox", "300-agent2-b.json"),
        ("inbox", "400-notjson.json"),
        ("inbox", "500-list.json"),
        ("inbox", "600-fifo.json"),
        ("inbox", "700-link.json"),
        ("inbox", "800-dir.json"),
    ]
    assert envs[0] == {
        "box": "claimed",
        "file": "200-agent0-c.json",
        "id": ID_C,
        "from": "agent0",
        "kind": "message",
        "ts": "2026-11-21T10:00:00.000000Z",
        "preview": "claimed one",
        "error": None,
    }
    long = envs[1]["preview"]
    assert long.startswith("line one line two line one") and len(long) <= 80
    assert "\n" not in long and "\t" not in long and long.endswith("...")
    assert envs[2]["from"] == "agent2" and envs[2]["error"] is None
    errors = {e["file"]: e["error"] for e in envs[3:]}
    assert errors["400-notjson.json"].startswith("not JSON")
    assert errors["500-list.json"].startswith("not a JSON object")
    assert "FIFO" in errors["600-fifo.json"]
    assert "symlink" in errors["700-link.json"]
    assert "directory" in errors["800-dir.json"]
    assert all(e["id"] is None and e["preview"] is None for e in envs[3:])


def test_peek_human_table_and_limit(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "channel", "peek", "1", "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["BOX", "ID", "FROM", "KIND", "TS", "TEXT"]
    assert lines[1].split()[:3] == ["claimed", ID_C[:12], "agent0"]
    assert lines[2].split()[:3] == ["inbox", ID_A[:12], "agent0"]
    assert lines[3] == "... 6 more (--limit 0 shows all)"
    assert run(home, "channel", "peek", "1", "--limit", "0") == 0
    out = capsys.readouterr().out
    assert "! not a regular file (a FIFO): 600-fifo.json" in out
    code, res = run_json(home, capsys, "channel", "peek", "1", "--limit", "3")
    assert res["total"] == 8 and res["shown"] == 3 and len(res["envelopes"]) == 3
    assert run(home, "channel", "peek", "agent2") == 0
    assert "nothing waiting for agent2" in capsys.readouterr().out
    assert run(home, "channel", "peek", "1", "--limit", "-1") == 2
    assert run(home, "channel", "peek") == 2


# -- poison --------------------------------------------------------------------------------


def test_poison_lists_items_with_reasons(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    poison(home, "agent2", "950-agent0-q.json", envelope("0" * 32, to="agent2"), rule="to")
    code, out = run_json(home, capsys, "channel", "poison")
    assert code == 0
    items = out["items"]
    assert [(i["agent"], i["file"]) for i in items] == [
        ("agent1", "900-agent3-p.json"),
        ("agent1", "901-garbage.json"),
        ("agent1", "902-noreason.json"),
        ("agent2", "950-agent0-q.json"),
    ]
    assert items[0] == {
        "agent": "agent1",
        "file": "900-agent3-p.json",
        "id": "feed1234" + "0" * 24,
        "rule": "schema",
        "detail": "schema broke",
        "ts": "2026-11-21T10:00:01Z",
        "reason_file": "900-agent3-p.json.reason.json",
        "reason_error": None,
    }
    assert items[1]["id"] is None and items[1]["rule"] == "json"
    assert items[2]["rule"] is None and items[2]["reason_error"] == "no reason file"
    code, out = run_json(home, capsys, "channel", "poison", "agent2")
    assert [i["file"] for i in out["items"]] == ["950-agent0-q.json"]
    assert run(home, "channel", "poison", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["AGENT", "FILE", "ID", "RULE", "POISONED", "DETAIL"]
    assert lines[1].split()[:4] == ["agent1", "900-agent3-p.json", "feed12340000", "schema"]
    assert "! no reason file" in lines[3]
    assert run(home, "channel", "poison", "10") == 0
    assert "nothing poisoned" in capsys.readouterr().out


def test_poisoned_names_tells_reason_files_from_items() -> None:
    names = ["a.json", "a.json.reason.json", "b.json.reason.json", "c"]
    # b's reason file without b: the daemon died between the two writes; show it
    assert poisoned_names(names) == ["a.json", "b.json.reason.json", "c"]


# -- retry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["feed1234" + "0" * 24, "feed12", "900-agent3-p.json", "900-"])
def test_retry_moves_item_back_and_keeps_the_reason(
    home: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    code, out = run_json(home, capsys, "channel", "retry", key)
    assert code == 0
    inbox = home / "channels/agent/agent1/inbox/900-agent3-p.json"
    pdir = home / "channels/agent/agent1/poison"
    assert out == {
        "agent": "agent1",
        "file": "900-agent3-p.json",
        "id": "feed1234" + "0" * 24,
        "path": str(inbox),
        "reason_path": str(pdir / ".retried/900-agent3-p.json.reason.json"),
    }
    assert json.loads(inbox.read_text())["from"] == "agent3"
    assert not (pdir / "900-agent3-p.json").exists()
    assert not (pdir / "900-agent3-p.json.reason.json").exists()
    reason = json.loads((pdir / ".retried/900-agent3-p.json.reason.json").read_text())
    assert reason["rule"] == "schema"
    _, ls = run_json(home, capsys, "channel", "ls", "1")
    assert ls["agents"][0]["pending"] == 8 and ls["agents"][0]["poisoned"] == 2


def test_retry_twice_keeps_both_reasons(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "channel", "retry", "901") == 0
    # the daemon claims it and poisons it again
    (home / "channels/agent/agent1/inbox/901-garbage.json").unlink()
    poison(home, "agent1", "901-garbage.json", "garbage again", rule="json")
    assert run(home, "channel", "retry", "901-garbage.json") == 0
    retried = sorted(p.name for p in (home / "channels/agent/agent1/poison/.retried").iterdir())
    assert retried == ["901-garbage.json.1.reason.json", "901-garbage.json.reason.json"]
    assert "back in agent1's inbox" in capsys.readouterr().out


def test_retry_ambiguous_lists_candidates(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    poison(home, "agent2", "990-agent0-z.json", envelope("feed9999" + "0" * 24, to="agent2"))
    code, out = run_json(home, capsys, "channel", "retry", "feed")
    assert code == 1 and out["exit_code"] == 1
    assert {(c["agent"], c["file"]) for c in out["candidates"]} == {
        ("agent1", "900-agent3-p.json"),
        ("agent2", "990-agent0-z.json"),
    }
    assert run(home, "channel", "retry", "9") == 1
    err = capsys.readouterr().err
    assert "matches 4 poisoned envelopes" in err
    assert "agent1  900-agent3-p.json" in err and "agent2  990-agent0-z.json" in err
    assert (home / "channels/agent/agent1/poison/900-agent3-p.json").exists()  # nothing moved
    assert run(home, "channel", "retry", "feed", "--agent", "2") == 0
    assert (home / "channels/agent/agent2/inbox/990-agent0-z.json").exists()


def test_retry_not_found(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(home, capsys, "channel", "retry", "beef")
    assert code == 1 and "no poisoned envelope matches 'beef'" in out["error"]
    assert run(home, "channel", "retry", "feed", "--agent", "agent2") == 1
    assert run(tmp_path / "empty", "channel", "retry", "feed") == 1
    assert "nothing is poisoned" in capsys.readouterr().err
    assert run(home, "channel", "retry", "  ") == 2


def test_retry_refuses_a_full_inbox(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # agent1's inbox holds 7 *.json entries, as netskyctl channel send counts them
    assert run(home, "channel", "retry", "feed", NETSKY_INBOX_MAX_PENDING="7") == 75
    err = capsys.readouterr().err
    assert "inbox of agent1 is full" in err and "stays in poison/" in err
    assert (home / "channels/agent/agent1/poison/900-agent3-p.json").exists()
    assert (home / "channels/agent/agent1/poison/900-agent3-p.json.reason.json").exists()
    assert not (home / "channels/agent/agent1/inbox/900-agent3-p.json").exists()
    assert run(home, "channel", "retry", "feed", NETSKY_INBOX_MAX_PENDING="8") == 0


def test_retry_refuses_non_regular_files_and_clobbering(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdir = home / "channels/agent/agent1/poison"
    os.mkfifo(pdir / "960-fifo.json")
    assert run(home, "channel", "retry", "960") == 1
    assert "a FIFO, not a regular file" in capsys.readouterr().err
    assert (pdir / "960-fifo.json").exists()
    (home / "channels/agent/agent1/inbox/902-noreason.json").write_text("other")
    assert run(home, "channel", "retry", "902") == 1
    assert "already exists" in capsys.readouterr().err
    assert (home / "channels/agent/agent1/inbox/902-noreason.json").read_text() == "other"


# -- replay --------------------------------------------------------------------------------

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", "2026-11-21T11:59:30.000000Z"),
        ("10m", "2026-11-21T11:50:00.000000Z"),
        ("2h", "2026-11-21T10:00:00.000000Z"),
        ("1d", "2026-11-20T12:00:00.000000Z"),
        ("1h30m", "2026-11-21T10:30:00.000000Z"),
        ("0s", "2026-11-21T12:00:00.000000Z"),
        ("2026-11-21T10:00:00Z", "2026-11-21T10:00:00.000000Z"),
        ("2026-11-21t10:00:00.5z", "2026-11-21T10:00:00.500000Z"),
        ("2026-11-21T10:00:00.123456789Z", "2026-11-21T10:00:00.123456Z"),
        ("2026-11-21T12:00:00+02:00", "2026-11-21T10:00:00.000000Z"),
        ("2026-11-21 10:00:00-01:30", "2026-11-21T11:30:00.000000Z"),
    ],
)
def test_parse_since(value: str, expected: str) -> None:
    assert parse_since(value, now_s=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "10",
        "2x",
        "-5m",
        "2026-11-21",
        "2026-11-21T10:00:00",
        "2026-13-01T00:00:00Z",
        "99999999999d",
    ],
)
def test_parse_since_rejects(value: str) -> None:
    with pytest.raises(Usage, match="--since"):
        parse_since(value, now_s=NOW)


def test_replay_with_daemon_down_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "channel", "replay", "agent1", "--since", "10m") == 3
    err = capsys.readouterr().err
    assert "not running" in err and "netskyd run" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["channel", "replay", "agent1"],
        ["channel", "replay", "agent1", "--since", "soon"],
        ["channel", "replay", "bob", "--since", "1h"],
    ],
)
def test_replay_usage_errors_before_connecting(tmp_path: Path, argv: list[str]) -> None:
    assert run(tmp_path, *argv) == 2


# -- misc ----------------------------------------------------------------------------------


def test_preview_is_one_bounded_line() -> None:
    assert preview("a\x1b[31mb\r\nc\t d") == "a [31mb c d"
    assert preview("x" * 100) == "x" * 77 + "..."
    assert preview("short") == "short"


def test_channel_subcommands_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "channel") == 2
    assert "send, ls, peek, poison, retry, replay" in capsys.readouterr().err


def test_client_import_path_stays_light() -> None:
    code = (
        "import sys, client.netskyctl; "
        "print([m for m in ('typing', 'pathlib', 'dataclasses') if m in sys.modules])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert res.stdout.strip() == "[]"


def test_retry_exact_name_wins_over_prefix(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    poison(home, "agent1", "970-x.json", "one")
    poison(home, "agent1", "970-x.json.old", "two")
    assert run(home, "channel", "retry", "970-x.json") == 0
    assert (home / "channels/agent/agent1/inbox/970-x.json").read_text() == "one"
    assert (home / "channels/agent/agent1/poison/970-x.json.old").exists()


def test_retry_reads_inbox_max_pending_from_config_toml(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "config.toml").write_text("inbox_max_pending = 7\n")
    assert run(home, "channel", "retry", "feed") == 75
    (home / "config.toml").write_text("inbox_max_pending = 8\n")
    assert run(home, "channel", "retry", "feed") == 0


@pytest.mark.parametrize(
    ("text", "word"),
    [("see </channel> here", "wrapper injection"), ("bell \x07", "control character U+0007")],
)
def test_send_refuses_text_the_bus_would_poison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, word: str
) -> None:
    assert run(tmp_path, "channel", "send", "agent0", text, "--from", "agent1") == 2
    assert word in capsys.readouterr().err
    assert not box(tmp_path, "agent0", "inbox").exists() or not any(
        box(tmp_path, "agent0", "inbox").iterdir()
    )


def test_send_turns_crlf_into_lf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, res = run_json(tmp_path, capsys, "channel", "send", "agent0", "a\r\nb", "--from", "owner")
    assert code == 0
    assert json.loads(Path(res["path"]).read_text())["text"] == "a\nb"
