"""Seeding before asking (netskyd/agents/seeding.py, spawn.seed_runtime): the answers the dialog
policy approves are written into the runtime's own settings before a spawn.

Claude Code's ``customApiKeyResponses`` shape, the 20-character suffix and the
physical-path ``projects`` key were checked against Claude Code 2.1.197 and 2.1.332
(answering "Yes"/"No" on a private tmux server; a trust entry under a symlinked path
still showed the trust dialog).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from netskyd.agents import seeding as seed
from netskyd.agents.spawn import Spawner, seed_runtime
from netskyd.agents.tmux import Tmux
from netskyd.config import Runtime, Settings
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder

pytestmark = pytest.mark.timeout(30)

KEY = "sk-ant-netsky-test-" + "f" * 24 + "0123456789abcdefghij"
SUFFIX = "0123456789abcdefghij"


def policy(dialogs: dict[str, str] | None = None) -> Callable[[str], str]:
    """``Settings.dialog_action``: the catalogue defaults, with ``dialogs`` as in config.toml."""
    s = Settings.model_validate({"home": "/nonexistent-netsky-home", "dialogs": dialogs or {}})
    return s.dialog_action


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def state_of(home: Path) -> dict[str, Any]:
    return dict(json.loads((home / ".claude.json").read_text()))


# ----- Claude Code -------------------------------------------------------------------------


def test_approved_api_key_is_seeded_with_claudes_own_shape(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / ".claude.json").write_text(json.dumps({"theme": "dark", "numStartups": 3}))
    changes = seed.seed(Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY=KEY), work, policy())
    got = state_of(tmp_path)
    assert got["customApiKeyResponses"] == {"approved": [SUFFIX], "rejected": []}
    assert got["hasCompletedOnboarding"] is True
    assert got["projects"][str(work)]["hasTrustDialogAccepted"] is True
    assert got["theme"] == "dark" and got["numStartups"] == 3  # nothing else touched
    assert [(c.key, c.action) for c in changes] == [
        ("hasCompletedOnboarding", "set"),
        (f"projects[{json.dumps(str(work))}].hasTrustDialogAccepted", "set"),
        ("customApiKeyResponses.approved", "set"),
    ]
    # idempotent: nothing to do, the file is not rewritten
    before = (tmp_path / ".claude.json").stat().st_mtime_ns
    assert seed.seed(Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY=KEY), work, policy()) == []
    assert (tmp_path / ".claude.json").stat().st_mtime_ns == before


def test_other_approved_keys_are_kept_and_a_short_key_is_stored_whole(tmp_path: Path) -> None:
    (tmp_path / ".claude.json").write_text(
        json.dumps({"customApiKeyResponses": {"approved": ["x" * 20], "rejected": ["y" * 20]}})
    )
    seed.seed(Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY="sk-short"), tmp_path, policy())
    responses = state_of(tmp_path)["customApiKeyResponses"]
    assert responses == {"approved": ["x" * 20, "sk-short"], "rejected": ["y" * 20]}


def test_a_key_the_owner_rejected_is_left_and_the_record_says_so(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    original = {
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": [], "rejected": [SUFFIX]},
        "projects": {str(work): {"hasTrustDialogAccepted": True}},
    }
    (tmp_path / ".claude.json").write_text(json.dumps(original))
    raw = (tmp_path / ".claude.json").read_bytes()
    changes = seed.seed(Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY=KEY), work, policy())
    assert (tmp_path / ".claude.json").read_bytes() == raw  # not rewritten
    assert [(c.key, c.action) for c in changes] == [("customApiKeyResponses.approved", "left")]
    assert changes[0].note is not None and "rejected" in changes[0].note
    state = tmp_path / "state"
    state.mkdir()
    seed.record(state, "agent0", Runtime.CLAUDE, changes)
    rows = [json.loads(x) for x in (state / "seeded.jsonl").read_text().splitlines()]
    assert [(r["key"], r["action"]) for r in rows] == [("customApiKeyResponses.approved", "left")]
    assert "rejected" in rows[0]["note"]


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        ({}, {"onboarding", "trust", "key"}),
        ({"claude.api-key": "off"}, {"onboarding", "trust"}),
        ({"claude.api-key": "deny"}, {"onboarding", "trust"}),
        ({"claude.folder-trust": "off"}, {"onboarding", "key"}),
        ({"claude.folder-trust": "deny"}, {"onboarding", "key"}),
        ({"claude.onboarding": "off"}, {"trust", "key"}),
        (
            {"claude.onboarding": "off", "claude.folder-trust": "off", "claude.api-key": "off"},
            set(),
        ),
    ],
)
def test_only_what_the_dialog_policy_approves_is_seeded(
    tmp_path: Path, overrides: dict[str, str], want: set[str]
) -> None:
    changes = seed.seed(
        Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY=KEY), tmp_path, policy(overrides)
    )
    kinds = {
        "onboarding"
        if c.key == "hasCompletedOnboarding"
        else "key"
        if "ApiKey" in c.key
        else "trust"
        for c in changes
    }
    assert kinds == want
    assert (tmp_path / ".claude.json").exists() is bool(want)


def test_no_api_key_in_the_environment_seeds_none(tmp_path: Path) -> None:
    for environ in (env(tmp_path), env(tmp_path, ANTHROPIC_API_KEY="")):
        seed.seed(Runtime.CLAUDE, environ, tmp_path, policy())
        assert "customApiKeyResponses" not in state_of(tmp_path)


def test_trust_is_seeded_for_the_physical_cwd_of_a_symlinked_workdir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    seed.seed(Runtime.CLAUDE, env(tmp_path), link, policy())
    assert list(state_of(tmp_path)["projects"]) == [str(real.resolve())]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"customApiKeyResponses": {"approved": SUFFIX, "rejected": []}}),
        json.dumps({"customApiKeyResponses": ["approved"]}),
    ],
    ids=["unparseable", "approved-not-a-list", "responses-not-an-object"],
)
def test_a_file_that_cannot_be_parsed_is_never_rewritten_for_the_key(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / ".claude.json"
    path.write_text(content)
    with pytest.raises(seed.SeedError):
        seed.seed(Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY=KEY), tmp_path, policy())
    assert path.read_text() == content


def test_without_a_policy_seed_keeps_its_old_meaning(tmp_path: Path) -> None:
    """No ``dialog_action``: trust and onboarding, never the key (callers that did not ask)."""
    changes = seed.seed(Runtime.CLAUDE, env(tmp_path, ANTHROPIC_API_KEY=KEY), tmp_path)
    assert {c.key for c in changes} == {
        "hasCompletedOnboarding",
        f"projects[{json.dumps(str(tmp_path.resolve()))}].hasTrustDialogAccepted",
    }


# ----- Codex -------------------------------------------------------------------------------


def test_codex_trust_follows_codex_trust_policy_and_the_physical_cwd(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert seed.seed(Runtime.CODEX, env(tmp_path), link, policy({"codex.trust": "off"})) == []
    assert not (tmp_path / ".codex" / "config.toml").exists()
    changes = seed.seed(Runtime.CODEX, env(tmp_path), link, policy())
    text = (tmp_path / ".codex" / "config.toml").read_text()
    assert f'[projects."{real.resolve()}"]' in text and "link" not in text
    assert [c.value for c in changes] == ["trusted"]


def test_other_runtimes_are_never_seeded(tmp_path: Path) -> None:
    for runtime in (Runtime.DEMO, Runtime.SHELL, Runtime.CUSTOM):
        assert seed.seed(runtime, env(tmp_path, ANTHROPIC_API_KEY=KEY), tmp_path, policy()) == []
    assert not list(tmp_path.iterdir())


# ----- spawn.seed_runtime: records and journal ---------------------------------------------


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Spawner]:
    s = Settings.model_validate(
        {"home": tmp_path / "home", "tmux_socket": "netsky-test-unused", "runtime": "claude"}
    )
    for d in (s.paths.state, s.paths.logs):
        d.mkdir(parents=True, exist_ok=True)
    store = await Store.open(s.paths.db)
    try:
        yield Spawner(
            settings=lambda: s,
            environ={"HOME": str(tmp_path / "user"), "ANTHROPIC_API_KEY": KEY},
            config_path=None,
            tmux=Tmux("netsky-test-unused", 1.0),
            recorder=Recorder(Journal(s.paths.logs), store),
            activity=None,  # type: ignore[arg-type]  # seeding never reads a screen
        )
    finally:
        await store.close()


def _events(ctx: Spawner, name: str) -> list[dict[str, Any]]:
    with sqlite3.connect(ctx.settings().paths.db) as conn:
        rows = conn.execute("SELECT fields FROM events WHERE event = ? ORDER BY id", (name,))
        return [json.loads(f) for (f,) in rows.fetchall()]


def _journal(ctx: Spawner) -> str:
    return "".join(f.read_text() for f in ctx.settings().paths.logs.glob("watchdog-events-*.jsonl"))


async def test_seed_runtime_records_and_journals_every_change_but_never_the_key(
    ctx: Spawner, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    await seed_runtime(ctx, "agent0", Runtime.CLAUDE, work)
    seeded = ctx.settings().paths.state / "seeded.jsonl"
    rows = [json.loads(x) for x in seeded.read_text().splitlines()]
    assert [(r["agent"], r["key"], r["action"]) for r in rows] == [
        ("agent0", "hasCompletedOnboarding", "set"),
        ("agent0", f"projects[{json.dumps(str(work))}].hasTrustDialogAccepted", "set"),
        ("agent0", "customApiKeyResponses.approved", "set"),
    ]
    (event,) = _events(ctx, "runtime.seeded")
    assert [c["key"] for c in event["changes"]] == [r["key"] for r in rows]
    on_disk = (ctx.settings().paths.state / "seeded.jsonl").read_text() + _journal(ctx)
    assert SUFFIX not in on_disk and KEY not in on_disk  # the key is redacted everywhere
    assert state_of(tmp_path / "user")["customApiKeyResponses"]["approved"] == [SUFFIX]


async def test_seed_runtime_reports_a_rejected_key_and_an_unparseable_file(
    ctx: Spawner, tmp_path: Path
) -> None:
    user = tmp_path / "user"
    user.mkdir()
    claude = user / ".claude.json"
    claude.write_text(json.dumps({"customApiKeyResponses": {"approved": [], "rejected": [SUFFIX]}}))
    await seed_runtime(ctx, "agent1", Runtime.CLAUDE, tmp_path)
    (left,) = _events(ctx, "runtime.seed_left")
    assert left["key"] == "customApiKeyResponses.approved" and "rejected" in left["note"]
    assert json.loads(claude.read_text())["customApiKeyResponses"]["rejected"] == [SUFFIX]
    assert json.loads(claude.read_text())["customApiKeyResponses"]["approved"] == []

    claude.write_text("{half a file")
    await seed_runtime(ctx, "agent1", Runtime.CLAUDE, tmp_path)
    assert claude.read_text() == "{half a file"
    (failed,) = _events(ctx, "runtime.seed_failed")
    assert "not readable JSON" in failed["error"]
