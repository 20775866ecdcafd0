"""netskyctl imports only the command it runs (issue 15, item 6; bench/status_latency.py P6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from client.netskyctl import main
from client.parser import COMMANDS, _columns

REPO = Path(__file__).resolve().parents[2]
COMMAND_MODULES = sorted({m for m, _ in COMMANDS.values() if m} | {"client.channel"})
#: What a call imports besides the client's own modules: none of these on ``status``.
OFF_THE_STATUS_PATH = ("argparse", "shutil", "socket", "typing", "pathlib", "dataclasses")


def _imports(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    """Run netskyctl ``argv`` in a fresh interpreter; (exit code, modules it imported)."""
    code = (
        "import sys\n"
        "from client.netskyctl import main\n"
        f"sys.argv = ['netskyctl', *{list(argv)!r}]\n"
        "try:\n"
        "    rc = main()\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "modules = sorted(sys.modules)\n"
        "import json\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps([rc, modules]) + '\\n')\n"
    )
    env = {**os.environ, "NETSKY_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("NETSKY_CONFIG", None)
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env,
        cwd=tmp_path, check=False,
    )
    line = res.stderr.rsplit("\nMODULES ", 1)[-1]
    rc, modules = json.loads(line)
    return rc, modules


def test_status_imports_no_other_command_module(tmp_path: Path) -> None:
    rc, modules = _imports(tmp_path, "status", "--json")
    assert rc == 3  # no daemon in an empty NETSKY_HOME
    assert [m for m in COMMAND_MODULES if m in modules] == ["client.incidents"]
    assert "client.parser" not in modules  # a plain line needs no parser
    assert [m for m in OFF_THE_STATUS_PATH if m in modules] == []


def test_a_module_command_imports_its_module_only(tmp_path: Path) -> None:
    rc, modules = _imports(tmp_path, "health", "--once", "--json")
    assert rc == 3
    assert "client.health" in modules
    for other in ("client.doctor", "client.drill", "client.selfrepair", "client.service",
                  "client.escalate", "client.why", "client.restarts", "client.channel"):
        assert other not in modules
    assert "shutil" not in modules


def test_a_usage_error_imports_no_command_module(tmp_path: Path) -> None:
    rc, modules = _imports(tmp_path, "bogus")
    assert rc == 2
    assert [m for m in COMMAND_MODULES if m in modules] == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_top_level_help_is_the_same_with_the_command_loaded(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--help`` lists COMMANDS' help; ``--help CMD`` lists the help CMD's module gives."""
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert main(["--help", command]) == 0
    assert capsys.readouterr().out == listed
    assert f"    {command}" in listed


@pytest.mark.parametrize("columns", ["60", "0", "-3", "wide", None])
def test_help_width_is_shutils(columns: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _columns() == shutil.get_terminal_size().columns
