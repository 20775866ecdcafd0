"""Agent CLIs from the npm registry for end-to-end tests (Claude Code, Codex CLI), in two tiers.

- ``pinned``: the versions the recordings in ``tests/screens/`` were first made with
  (``PINNED``), installed once into ``<repo>/.cache/npm`` and reused while the cached
  version is the pinned one. ``$NETSKY_TEST_CLAUDE`` / ``$NETSKY_TEST_CODEX`` may name
  an executable instead.
- ``latest``: ``@latest`` from the registry, installed fresh into a new directory at
  every test session (never a cached copy: both CLIs ship several releases a week).
  Runs only with ``pytest --latest-clis`` (``scripts/test --latest-clis``, ``.ci/run``)
  or ``NETSKY_TEST_LATEST_CLIS=1``.

``cli(name, tier, root)`` returns a ``Cli`` (executable, version, tier). No npm: the
test is skipped with the reason; a failed install fails it with npm's output. Every
install and ``--version`` run has a deadline. ``describe(path)`` names the version of
an executable handed out here, so a failure can say which release it was (conftest).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import REPO

NPM_PREFIX = REPO / ".cache" / "npm"
NPM_TIMEOUT_S = 600
VERSION_TIMEOUT_S = 60

#: name -> (npm package, executable, override variable, version pinned for the ``pinned`` tier)
CLIS = {
    "claude": ("@anthropic-ai/claude-code", "claude", "NETSKY_TEST_CLAUDE", "2.1.197"),
    "codex": ("@openai/codex", "codex", "NETSKY_TEST_CODEX", "0.169.0"),
}
TIERS = ("pinned", "latest")
LATEST_ENV = "NETSKY_TEST_LATEST_CLIS"

#: Every executable handed out, with what it is (``describe``).
_SEEN: dict[Path, str] = {}


@dataclass(frozen=True)
class Cli:
    """One installed CLI: ``path`` to run, ``version`` as it reports it, ``tier``."""

    name: str
    path: Path
    version: str
    tier: str

    def __str__(self) -> str:
        return f"{CLIS[self.name][0]} {self.version} ({self.tier})"


def executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _text(out: bytes | str | None) -> str:
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


def version_of(path: Path, home: Path) -> str | None:
    """``x.y.z`` from ``<path> --version`` (run with ``home`` as HOME), or None."""
    env = {
        **os.environ,
        "HOME": str(home),
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    try:
        res = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\b(\d+\.\d+\.\d+)\b", res.stdout)
    return m.group(1) if res.returncode == 0 and m else None


def npm_install(spec: str, prefix: Path) -> None:
    """``npm install --prefix <prefix> <spec>`` with a deadline; fails the test on error."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {spec} from the npm registry")
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", spec]
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
    if res.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}",
            pytrace=False,
        )


def cli(name: str, tier: str, root: Path) -> Cli:
    """The ``name`` CLI of ``tier``; ``root`` is a fresh directory for the ``latest`` install."""
    package, bin_name, override_var, pinned = CLIS[name]
    home = root / "version-home"
    home.mkdir(parents=True, exist_ok=True)
    override = os.environ.get(override_var)
    if tier == "pinned" and override:
        path = Path(override).expanduser().absolute()
        if not executable(path):
            pytest.fail(f"{override_var}={override} is not an executable file", pytrace=False)
    elif tier == "pinned":
        path = NPM_PREFIX / "node_modules" / ".bin" / bin_name
        if not executable(path) or version_of(path, home) != pinned:
            npm_install(f"{package}@{pinned}", NPM_PREFIX)
    else:
        prefix = root / "npm-latest"
        npm_install(f"{package}@latest", prefix)
        path = prefix / "node_modules" / ".bin" / bin_name
    if not executable(path):
        pytest.fail(f"{package} ({tier}) installed no executable at {path}", pytrace=False)
    version = version_of(path, home)
    if version is None:
        pytest.fail(f"{path} --version failed ({package}, {tier})", pytrace=False)
    found = Cli(name, path, version, tier)
    _SEEN[path] = str(found)
    return found


def describe(path: object) -> str | None:
    """What an executable handed out by ``cli`` is (``@pkg 1.2.3 (tier)``), else None."""
    return _SEEN.get(path) if isinstance(path, Path) else None


def find_or_install(spec: str, bin_name: str, override_var: str) -> Path:
    """The pinned tier's executable for ``bin_name`` (older call sites; ``spec`` ignored)."""
    name = next(n for n, c in CLIS.items() if c[1] == bin_name)
    root = REPO / ".cache" / "npm-version-home"
    return cli(name, "pinned", root).path
