"""Seed a runtime's own settings before a spawn, so known first-run screens never show.

Dialogs netsky can answer are still better never shown. Before spawning a
``claude`` or ``codex`` agent (``seed_runtime_settings = true``, the default):

- Claude Code 2.1 (``$CLAUDE_CONFIG_DIR/.claude.json``, else ``$HOME/.claude.json``):
  ``projects[<workdir>].hasTrustDialogAccepted = true`` (no folder-trust dialog) and
  ``hasCompletedOnboarding = true`` (no theme picker). Keys read from the file
  Claude Code writes once those screens are answered (tests/screens/claude-code-*/README.md).
- Codex 0.16x (``$CODEX_HOME/config.toml``, else ``$HOME/.codex/config.toml``): a
  ``[projects."<workdir>"]`` table with ``trust_level = "trusted"`` (no trust
  screen), appended when the workdir has no entry. An entry the owner wrote (say
  ``untrusted``) is left alone.

Only missing or false values are set; everything else in the file is kept. The
file is replaced atomically (tmp + rename) and only when something changed. A
file that does not parse is never rewritten: the seeding is skipped and reported.
Each change is appended to ``state/seeded.jsonl`` (``{"ts", "agent", "runtime",
"file", "key", "value", "previous"}``) and journalled as ``runtime.seeded``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netskyd.config import Runtime
from netskyd.maildir import atomic_write_bytes, now_rfc3339
from netskyd.runtimes import toml_string

SEEDED_LOG = "seeded.jsonl"


@dataclass(frozen=True)
class Change:
    """One setting written: ``key`` is a dotted path into ``file``."""

    file: str
    key: str
    value: Any
    previous: Any


class SeedError(Exception):
    """The settings file exists but could not be read or parsed; nothing was written."""


def claude_file(environ: Mapping[str, str]) -> Path | None:
    if environ.get("CLAUDE_CONFIG_DIR"):
        return Path(environ["CLAUDE_CONFIG_DIR"]).expanduser() / ".claude.json"
    if environ.get("HOME"):
        return Path(environ["HOME"]) / ".claude.json"
    return None


def codex_file(environ: Mapping[str, str]) -> Path | None:
    if environ.get("CODEX_HOME"):
        return Path(environ["CODEX_HOME"]).expanduser() / "config.toml"
    if environ.get("HOME"):
        return Path(environ["HOME"]) / ".codex" / "config.toml"
    return None


def seed_claude(path: Path, workdir: Path) -> list[Change]:
    """Mark ``workdir`` trusted and onboarding done in Claude Code's state file."""
    state: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SeedError(f"{path} is not readable JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise SeedError(f"{path} does not hold a JSON object")
        state = loaded
    changes = []
    if state.get("hasCompletedOnboarding") is not True:
        changes.append(
            Change(str(path), "hasCompletedOnboarding", True, state.get("hasCompletedOnboarding"))
        )
        state["hasCompletedOnboarding"] = True
    projects = state.setdefault("projects", {})
    if not isinstance(projects, dict):
        raise SeedError(f"{path}: 'projects' is not an object")
    project = projects.setdefault(str(workdir), {})
    if not isinstance(project, dict):
        raise SeedError(f"{path}: projects[{str(workdir)!r}] is not an object")
    if project.get("hasTrustDialogAccepted") is not True:
        key = f"projects[{json.dumps(str(workdir))}].hasTrustDialogAccepted"
        changes.append(Change(str(path), key, True, project.get("hasTrustDialogAccepted")))
        project["hasTrustDialogAccepted"] = True
    if changes:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(state, indent=2) + "\n").encode())
    return changes


def seed_codex(path: Path, workdir: Path) -> list[Change]:
    """Append a trusted ``[projects."<workdir>"]`` table to Codex's config when missing."""
    text = ""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            config = tomllib.loads(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SeedError(f"{path} is not readable TOML: {e}") from e
        projects = config.get("projects", {})
        if isinstance(projects, dict) and str(workdir) in projects:
            return []  # the owner's own entry, whatever it says
    table = f'[projects.{toml_string(str(workdir))}]\ntrust_level = "trusted"\n'
    new = (
        (text if not text or text.endswith("\n") else text + "\n") + ("\n" if text else "") + table
    )
    try:
        tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:  # e.g. an inline ``projects = {...}`` table
        raise SeedError(f"{path}: cannot add a projects table ({e})") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, new.encode())
    key = f"projects.{toml_string(str(workdir))}.trust_level"
    return [Change(str(path), key, "trusted", None)]


def seed(runtime: Runtime, environ: Mapping[str, str], workdir: Path) -> list[Change]:
    """Seed ``runtime``'s settings for ``workdir``; returns the changes made.

    Raises SeedError when the settings file cannot be parsed (nothing written),
    OSError when it cannot be written.
    """
    if runtime is Runtime.CLAUDE:
        path = claude_file(environ)
        return seed_claude(path, workdir) if path else []
    if runtime is Runtime.CODEX:
        path = codex_file(environ)
        return seed_codex(path, workdir) if path else []
    return []


def record(state_dir: Path, agent: str, runtime: Runtime, changes: list[Change]) -> None:
    """Append each change to ``state/seeded.jsonl``."""
    if not changes:
        return
    ts = now_rfc3339()
    with open(state_dir / SEEDED_LOG, "a", encoding="utf-8") as f:
        for c in changes:
            row = {
                "ts": ts,
                "agent": agent,
                "runtime": runtime.value,
                "file": c.file,
                "key": c.key,
                "value": c.value,
                "previous": c.previous,
            }
            f.write(json.dumps(row) + "\n")
