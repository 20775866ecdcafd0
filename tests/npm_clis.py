"""Agent CLIs from the npm registry for end-to-end tests (Claude Code, Codex CLI).

``find_or_install(spec, bin_name, override_var)``: ``$override_var`` when set, else
``<repo>/.cache/npm/node_modules/.bin/<bin_name>``, else ``npm install`` into
``.cache/npm`` (600 s deadline). No npm: the test is skipped with the reason; a
failed install fails the test with npm's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO

NPM_PREFIX = REPO / ".cache" / "npm"
NPM_TIMEOUT_S = 600


def executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _text(out: bytes | str | None) -> str:
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


def find_or_install(spec: str, bin_name: str, override_var: str) -> Path:
    """Return the CLI's executable, installing ``spec`` from npm when needed."""
    override = os.environ.get(override_var)
    if override:
        path = Path(override).expanduser().absolute()
        if not executable(path):
            pytest.fail(f"{override_var}={override} is not an executable file", pytrace=False)
        return path
    cached = NPM_PREFIX / "node_modules" / ".bin" / bin_name
    if executable(cached):
        return cached
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {spec} from the npm registry")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", spec]
    try:
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        out = _text(e.stdout) + _text(e.stderr)
        pytest.fail(
            f"{' '.join(cmd)} did not finish within {NPM_TIMEOUT_S}s:\n{out}", pytrace=False
        )
    if res.returncode != 0 or not executable(cached):
        pytest.fail(
            f"{' '.join(cmd)} failed (exit {res.returncode}); {cached} "
            f"{'exists' if executable(cached) else 'is missing'}:\n{res.stdout}\n{res.stderr}",
            pytrace=False,
        )
    return cached
