"""Pure parts of the activity monitor: normalisation, menus, reset times, seeding,
the classifier's rules and the dialog policy in the config."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from netsky_shared.errors import ConfigError
from netskyd.activity.classify import Activity, Observation, classify, read_screen
from netskyd.activity.limits import parse_reset
from netskyd.agents import seeding as seed
from netskyd.config import Runtime, load_settings
from netskyd.runtimes.screen import fingerprint, normalise_line, parse_options

# ----- normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "✻ Pondering… (12s · ↓ 340 tokens · esc to interrupt)",
            "✶ Noodling… (1m 5s · ↑ 1.2k tokens · esc to interrupt)",
        ),
        ("• Working (3s • esc to interrupt)", "• Working (2m 13s • esc to interrupt)"),
        ("⠋ building", "⠹ building"),
        ("last tick 10:04:59", "last tick 10:05:59"),
        ("reset at 3:05 PM", "reset at 4:10 PM"),
    ],
)
def test_animation_does_not_count_as_movement(a: str, b: str) -> None:
    assert a != b and normalise_line(a) == normalise_line(b)
    assert fingerprint(f"output\n{a}\n") == fingerprint(f"output\n{b}\n\n")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("● Wrote 3 lines to a.py", "● Wrote 3 lines to b.py"),
        ("❯ 1. Yes", "  1. Yes\n❯ 2. No"),
        ("done", "done\nnext step"),
    ],
)
def test_output_counts_as_movement(a: str, b: str) -> None:
    assert fingerprint(a) != fingerprint(b)


def test_parse_options_reads_the_menu_nearest_the_bottom() -> None:
    lines = [
        "old transcript: 1. first thing",
        "2. second thing",
        " Do you want to proceed?",
        " ❯ 1. Yes",
        "   2. Yes, and don't ask again for this command",
        "      (wrapped description)",
        "   3. No, and tell Claude what to do differently (esc)",
        "",
        " Esc to cancel",
    ]
    options = parse_options(lines)
    assert [(o.number, o.highlighted) for o in options] == [(1, True), (2, False), (3, False)]
    assert options[2].label.startswith("No, and tell Claude")
    assert parse_options(["│ › 1. Yes, proceed (y) │", "│   2. No (esc) │"])[0].highlighted
    assert parse_options(["2. orphan", "3. no start"]) == ()


# ----- reset times ------------------------------------------------------------------------

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Claude usage limit reached. Your limit will reset at 3pm.", "2026-11-21T15:00"),
        ("5-hour limit reached ∙ resets 3pm (Europe/London)", "2026-11-21T15:00"),
        ("You've hit your limit · resets 9am (America/New_York)", "2026-11-21T14:00"),
        ("limit reached ∙ resets 8am", "2026-11-22T08:00"),  # 8am has passed today
        ("try again at 3:05 PM", "2026-11-21T15:05"),
        ("Weekly limit reached ∙ resets Nov 24, 5pm", "2026-11-24T17:00"),
        ("try again at Dec 3rd, 2026 3:05 PM.", "2026-12-03T15:05"),
        ("try again in 2 hours 5 minutes", "2026-11-21T12:05"),
        ("or try again in 4 days 1 hour.", "2026-11-25T11:00"),
        ("rate limited, retry in 45s", "2026-11-21T10:00"),
    ],
)
def test_parse_reset(text: str, expected: str) -> None:
    got = parse_reset(text, NOW, ZoneInfo("UTC"))
    assert got is not None
    assert datetime.fromtimestamp(got, UTC).strftime("%Y-%m-%dT%H:%M") == expected


def test_no_reset_time() -> None:
    assert parse_reset("usage limit reached", NOW, ZoneInfo("UTC")) is None
    assert parse_reset("meeting at 3 people", NOW, ZoneInfo("UTC")) is None


# ----- seeding ----------------------------------------------------------------------------


def test_seed_claude_keeps_everything_else_and_records_changes(tmp_path: Path) -> None:
    state = tmp_path / ".claude.json"
    state.write_text(json.dumps({"theme": "light", "projects": {"/other": {"x": 1}}}))
    work = tmp_path / "work"
    changes = seed.seed(Runtime.CLAUDE, {"HOME": str(tmp_path)}, work)
    assert {c.key for c in changes} == {
        "hasCompletedOnboarding",
        f'projects["{work}"].hasTrustDialogAccepted',
    }
    data = json.loads(state.read_text())
    assert data["theme"] == "light" and data["projects"]["/other"] == {"x": 1}
    assert data["projects"][str(work)]["hasTrustDialogAccepted"] is True
    assert seed.seed(Runtime.CLAUDE, {"HOME": str(tmp_path)}, work) == []  # idempotent
    seed.record(tmp_path, "agent0", Runtime.CLAUDE, changes)
    rows = [json.loads(x) for x in (tmp_path / "seeded.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [c.key for c in changes] and rows[0]["agent"] == "agent0"


def test_seed_claude_never_rewrites_a_file_it_cannot_parse(tmp_path: Path) -> None:
    state = tmp_path / "cfg" / ".claude.json"
    state.parent.mkdir()
    state.write_text("{not json")
    with pytest.raises(seed.SeedError):
        seed.seed(Runtime.CLAUDE, {"CLAUDE_CONFIG_DIR": str(state.parent)}, tmp_path)
    assert state.read_text() == "{not json"


def test_seed_codex_appends_a_trusted_project_and_respects_the_owners_entry(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / ".codex" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text('model = "x"  # mine\n')
    work = tmp_path / 'we"ird dir'
    changes = seed.seed(Runtime.CODEX, {"HOME": str(tmp_path)}, work)
    assert len(changes) == 1
    text = cfg.read_text()
    assert text.startswith('model = "x"  # mine\n')
    assert tomllib.loads(text)["projects"][str(work)]["trust_level"] == "trusted"
    assert seed.seed(Runtime.CODEX, {"HOME": str(tmp_path)}, work) == []
    other = tmp_path / "other"
    cfg.write_text(f'[projects."{other}"]\ntrust_level = "untrusted"\n')
    assert seed.seed(Runtime.CODEX, {"CODEX_HOME": str(cfg.parent)}, other) == []
    cfg.write_text("projects = { a = 1 }\n")  # an inline table cannot take another entry
    with pytest.raises(seed.SeedError):
        seed.seed(Runtime.CODEX, {"HOME": str(tmp_path)}, work)
    assert cfg.read_text() == "projects = { a = 1 }\n"


# ----- the dialog policy in the config ------------------------------------------------------


def test_dialog_policy_defaults_and_validation(tmp_path: Path) -> None:
    env = {"NETSKY_HOME": str(tmp_path)}
    s = load_settings(None, env)
    assert s.dialog_action("claude.permission") == "off"
    assert s.dialog_action("codex.approval") == "off"
    assert s.dialog_action("claude.folder-trust") == "approve"
    s = load_settings(None, {**env, "NETSKY_DIALOGS": '{"claude.permission": "approve"}'})
    assert s.dialog_action("claude.permission") == "approve"
    for bad, why in [
        ('{"claude.nope": "approve"}', "unknown dialog"),
        ('{"claude.permission": "always"}', "not approve, deny or off"),
        ('{"claude.usage-limit-menu": "deny"}', "no 'deny' option"),
    ]:
        with pytest.raises(ConfigError, match=why):
            load_settings(None, {**env, "NETSKY_DIALOGS": bad})


# ----- classification rules ---------------------------------------------------------------

DEMO_IDLE = "netsky demo agent agent1 ready\nagent1> "
DEMO_HUNG = "agent1> \nagent1: hanging (ignoring input)\n"


def obs(text: str | None, **kw: object) -> Observation:
    base: dict[str, object] = {
        "agent": "agent1",
        "runtime": Runtime.DEMO,
        "now": 10_000.0,
        "alive": True,
        "screen": text,
        "facts": read_screen(Runtime.DEMO, text) if text is not None else None,
        "fp_changed_at": 10_000.0 - 5,
    }
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def test_classes() -> None:
    assert classify(obs(DEMO_IDLE)).activity is Activity.IDLE
    # At its prompt for a day, nothing pending: idle by design.
    assert classify(obs(DEMO_IDLE, fp_changed_at=10_000.0 - 86_400)).activity is Activity.IDLE
    assert classify(obs(DEMO_IDLE, inbox=2)).activity is Activity.BUSY
    assert classify(obs(DEMO_HUNG)).activity is Activity.BUSY
    # Still for hang_after_s with a delivery it never came back from: hung.
    hung = classify(obs(DEMO_HUNG, fp_changed_at=0.0, last_delivery_at=50.0, last_idle_at=40.0))
    assert hung.activity is Activity.HUNG
    assert hung.evidence["pending"]["unanswered_since"] is not None
    # ...but not with nothing pending: a long, quiet job is not a hang.
    assert classify(obs(DEMO_HUNG, fp_changed_at=0.0)).activity is Activity.BUSY
    assert classify(obs(None, alive=False, exit_status=3)).activity is Activity.DEAD
    assert classify(obs(None, alive=False, spawning=True)).activity is Activity.UNKNOWN
    assert classify(obs(None)).activity is Activity.UNKNOWN
    parked = classify(obs(DEMO_HUNG, fp_changed_at=0.0, inbox=3, limited_until=20_000.0))
    assert parked.activity is Activity.LIMITED  # parked: never hung
