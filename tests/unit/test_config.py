from __future__ import annotations

from pathlib import Path

import pytest

from netsky_shared.errors import ConfigError
from netskyd.config import Runtime, load_settings


def test_defaults_without_file(tmp_path: Path) -> None:
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.tick_interval_s == 60
    assert s.clones == 0
    assert s.tmux_socket is None
    assert s.runtime is Runtime.CLAUDE


def test_toml_then_environment_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'runtime = "demo"\nclones = 3\ntick_interval_s = 5\n'
        'tmux_socket = "from-file"\nagent_runtimes = { agentinfinity = "shell" }\n'
    )
    env = {
        "NETSKY_HOME": str(tmp_path / "h"),
        "NETSKY_CLONES": "7",
        "NETSKY_TICK_INTERVAL_S": "0.5",
        "NETSKY_RUNTIME": "codex",
    }
    s = load_settings(cfg, env)
    assert (s.clones, s.tick_interval_s, s.runtime) == (7, 0.5, Runtime.CODEX)
    assert s.tmux_socket == "from-file"
    assert s.runtime_for("agentinfinity") is Runtime.SHELL
    assert s.runtime_for("agent2") is Runtime.CODEX
    assert s.home == tmp_path / "h"


def test_home_config_is_found_and_netsky_config_wins(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("clones = 2\n")
    other = tmp_path / "other.toml"
    other.write_text("clones = 4\n")
    assert load_settings(None, {"NETSKY_HOME": str(tmp_path)}).clones == 2
    env = {"NETSKY_HOME": str(tmp_path), "NETSKY_CONFIG": str(other)}
    assert load_settings(None, env).clones == 4


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(None, {"NETSKY_HOME": str(tmp_path)})
    with pytest.raises(ValueError):
        s.clones = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("tick_interval_s = 0\n", {}, "tick_interval_s"),
        ("tick_intervall_s = 5\n", {}, "tick_intervall_s"),
        ('runtime = "gpt"\n', {}, "runtime"),
        ("clones = [\n", {}, "not valid TOML"),
        ("", {"NETSKY_CLONES": "many"}, "NETSKY_CLONES"),
        ("", {"NETSKY_AGENT_RUNTIMES": "{not json"}, "must be JSON"),
        ('agent_runtimes = { agentx = "demo" }\n', {}, "agentx"),
    ],
)
def test_invalid_settings_name_the_culprit(
    tmp_path: Path, text: str, env: dict[str, str], needle: str
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(cfg, {"NETSKY_HOME": str(tmp_path), **env})


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", {})
