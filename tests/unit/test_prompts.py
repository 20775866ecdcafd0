from __future__ import annotations

from pathlib import Path

import pytest

from netsky_shared.errors import PromptRenderError
from netskyd.agents.prompts import render_prompt
from netskyd.config import load_settings

AGENTS = ["agent0", "agent1", "agent2", "agentinfinity"]


@pytest.mark.parametrize("agent", AGENTS)
def test_bundled_prompts_render_for_every_role(tmp_path: Path, agent: str) -> None:
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path)})
    text = render_prompt(s, agent, AGENTS)
    assert agent in text
    assert "{{" not in text and "{%" not in text
    for other in AGENTS:
        assert other in text  # the constellation is listed


def test_layers_come_in_order_and_owner_layer_overrides(tmp_path: Path) -> None:
    (tmp_path / "0.md").write_text("OWNER LAYER for {{ agent }}\n")
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path)})
    text = render_prompt(s, "agent1", AGENTS)
    assert "OWNER LAYER for agent1" in text
    assert text.index("in a netsky constellation") < text.index("OWNER LAYER")


def _custom(tmp_path: Path, base: str) -> Path:
    root = tmp_path / "prompts"
    (root / "roles").mkdir(parents=True)
    (root / "base.md").write_text(base)
    for role in ("orchestrator", "clone", "watchdog"):
        (root / "roles" / f"{role}.md").write_text("role {{ role }}\n")
    (tmp_path / "0.md").write_text("owner\n")
    return root


def test_unknown_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _custom(tmp_path, "hello {{ agent }} from {{ owner_nickname }}\n")
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path), "NETSKY_PROMPTS_DIR": str(root)})
    with pytest.raises(PromptRenderError, match="owner_nickname") as exc:
        render_prompt(s, "agent0", AGENTS)
    assert "base.md" in str(exc.value)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    root = _custom(tmp_path, "line one\n{% if %}\n")
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path), "NETSKY_PROMPTS_DIR": str(root)})
    with pytest.raises(PromptRenderError, match=r"base\.md:2"):
        render_prompt(s, "agent0", AGENTS)
