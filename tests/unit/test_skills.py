"""Skills (netskyd.agents.skills): each role's set rendered strictly from prompts/skills/,
installed as netsky's own Claude Code plugin (replaced whole at each spawn) and as Codex
prompts that never overwrite the owner's, and the claude command line that loads them
(with a clone's tool permissions)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from netsky_shared.errors import PromptRenderError
from netskyd.agents import skills
from netskyd.agents.prompts import prompts_dir
from netskyd.config import Settings
from netskyd.runtimes import claude

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.mark.parametrize(
    ("agent", "names"),
    [
        ("agent0", ["up", "down", "restart", "spawn"]),
        ("agentinfinity", ["up", "down", "restart"]),
        ("agent3", ["up", "down"]),
    ],
)
def test_each_role_gets_its_set_with_this_installs_verbs(
    settings: Settings, agent: str, names: list[str]
) -> None:
    got = skills.render(prompts_dir(settings), agent, settings.home)
    assert list(got) == names
    for text in got.values():
        assert text.startswith("---\ndescription: netsky /")
        assert "{{" not in text and "{%" not in text
    assert f"netskyctl notes show --agent {agent} --since 1d" in got["up"]
    assert f"netskyctl notes append --agent {agent} -" in got["down"]
    if "restart" in got:
        assert "netskyctl restart --request --handoff -" in got["restart"]
    if "spawn" in got:
        assert "netskyctl clone brief brief.md --workspace <task>" in got["spawn"]
        assert str(settings.home / "workspaces") in got["spawn"]


def test_an_unknown_variable_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "skills").mkdir()
    for name in ("up", "down"):
        (tmp_path / "skills" / f"{name}.md").write_text("hello {{ agent }}\n")
    (tmp_path / "skills" / "down.md").write_text("hello {{ no_such_thing }}\n")
    with pytest.raises(PromptRenderError, match="down.md: unknown variable.*no_such_thing"):
        skills.render(tmp_path, "agent2", tmp_path)


def test_the_claude_plugin_is_replaced_whole(settings: Settings) -> None:
    got = skills.render(prompts_dir(settings), "agent0", settings.home)
    files = skills.install_claude(settings, "agent0", got)
    root = claude.plugin_dir(settings, "agent0")
    assert sorted(p.name for p in (root / "commands").iterdir()) == sorted(
        f"{n}.md" for n in got
    )
    assert json.loads((root / ".claude-plugin" / "plugin.json").read_text())["name"] == "netsky"
    assert all(f.exists() for f in files)
    # a smaller set replaces the directory: nothing left over, nothing duplicated
    skills.install_claude(settings, "agent0", {"up": "x\n"})
    assert [p.name for p in (root / "commands").iterdir()] == ["up.md"]
    assert not list(root.parent.glob(".netsky.*"))


def test_codex_skills_never_overwrite_the_owners(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "codex" / "skills"
    (root / "netsky-down").mkdir(parents=True)
    (root / "netsky-down" / "SKILL.md").write_text("my own /down, hands off\n")
    (root / "review").mkdir()
    (root / "review" / "SKILL.md").write_text("the owner's review skill\n")
    got = skills.render(prompts_dir(settings), "agent0", settings.home)
    written, skipped = skills.install_codex(root, got)
    assert skipped == [str(root / "netsky-down")]
    assert (root / "netsky-down" / "SKILL.md").read_text() == "my own /down, hands off\n"
    assert (root / "review" / "SKILL.md").read_text() == "the owner's review skill\n"
    up = (root / "netsky-up" / "SKILL.md").read_text()
    assert up.startswith("---\nname: netsky-up\ndescription: netsky /up")
    # again: the same files, current, no duplicates
    again, _ = skills.install_codex(root, got)
    assert again == written
    assert sorted(p.name for p in root.iterdir()) == [
        "netsky-down", "netsky-restart", "netsky-spawn", "netsky-up", "review"
    ]  # fmt: skip
    assert skills.codex_skills({"CODEX_HOME": "/c"}) == Path("/c/skills")
    assert skills.codex_skills({"HOME": "/h"}) == Path("/h/.codex/skills")


def test_the_claude_command_loads_the_plugin_and_limits_clones(settings: Settings) -> None:
    prompt = settings.paths.prompt_file("agent0")
    before = shlex.split(claude.command(settings, "agent0", prompt, settings.home))
    assert "--plugin-dir" not in before  # nothing installed yet
    skills.install_claude(settings, "agent0", {"up": "x\n"})
    argv = shlex.split(claude.command(settings, "agent0", prompt, settings.home))
    assert argv[argv.index("--plugin-dir") + 1] == str(claude.plugin_dir(settings, "agent0"))
    assert "--disallowedTools" not in argv
    clone = shlex.split(claude.command(settings, "agent2", prompt, settings.home))
    i = clone.index("--disallowedTools")
    assert clone[i + 1 : i + 5] == list(claude.CLONE_DISALLOWED)
    assert clone[i + 5] == "--append-system-prompt-file"


def test_the_manifest_records_what_went_where(settings: Settings) -> None:
    settings.paths.state.mkdir(parents=True)
    skills.record(settings.paths, "agent0", "claude", ["up"], [Path("/x/up.md")], [])
    skills.record(settings.paths, "agent2", "codex", ["up"], [], ["/y/netsky-up.md"])
    data = json.loads((settings.paths.state / "skills" / "installed.json").read_text())
    assert data["agent0"]["paths"] == ["/x/up.md"] and data["agent2"]["skipped"] == [
        "/y/netsky-up.md"
    ]
