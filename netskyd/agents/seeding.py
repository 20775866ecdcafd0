"""Seed a runtime's own settings before a spawn, so known first-run screens never show.

Dialogs netsky can answer are still better never shown. Before spawning a
``claude`` or ``codex`` agent (``seed_runtime_settings = true``, the default), for
each setup dialog whose policy is ``approve`` (``Settings.dialog_action``; names in
netskyd/runtimes/catalogue.py), the answer is written where the runtime keeps it:

- Claude Code 2.1 (``$CLAUDE_CONFIG_DIR/.claude.json``, else ``$HOME/.claude.json``):
  ``claude.folder-trust``: ``projects[<cwd>].hasTrustDialogAccepted = true``;
  ``claude.onboarding``: ``hasCompletedOnboarding = true`` (no theme picker);
  ``claude.api-key``: the last 20 characters of the ``ANTHROPIC_API_KEY`` the agent
  gets (the daemon's environment) appended to ``customApiKeyResponses.approved``
  (``{"approved": [...], "rejected": [...]}``), so the "Detected a custom API key"
  question is not asked and the idle screen does not say "Not logged in". A suffix
  in ``rejected`` (the owner said no) is left there and the refusal is recorded.
  Keys and shapes read from the file Claude Code 2.1.197 and 2.1.332 write once
  those screens are answered (tests/screens/claude-code-*/README.md).
- Codex 0.16x-0.17x (``$CODEX_HOME/config.toml``, else ``$HOME/.codex/config.toml``):
  ``codex.trust``: a ``[projects."<cwd>"]`` table with ``trust_level = "trusted"``,
  appended when the directory has no entry. An entry the owner wrote (say
  ``untrusted``) is left alone.

``<cwd>`` is the agent's working directory as the runtime sees it: with symlinks
resolved (``os.path.realpath``), since a process's cwd is the physical path and
Claude Code keys ``projects`` by it (a trust entry under a symlinked path is ignored).

Only missing or false values are set; everything else in the file is kept. The
file is replaced atomically (tmp + rename) and only when something changed. A
file that does not parse, or whose seeded keys have an unexpected shape, is never
rewritten: the seeding is skipped and reported. Each change (and each answer left
alone) is appended to ``state/seeded.jsonl`` (``{"ts", "agent", "runtime",
"file", "key", "value", "previous", "action", "note"}``) and journalled as
``runtime.seeded``. The API key itself is never recorded: its value shows as
``ANTHROPIC_API_KEY[-20:] (...<last 4>)``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsky_shared.maildir import atomic_write_bytes, now_rfc3339
from netskyd.config import Runtime
from netskyd.runtimes import toml_string

SEEDED_LOG = "seeded.jsonl"
#: Claude Code stores this many trailing characters of an approved or rejected key.
API_KEY_SUFFIX_CHARS = 20
APPROVE = "approve"
#: The dialogs each seeding stands in for (netskyd/runtimes/catalogue.py names).
CLAUDE_TRUST = "claude.folder-trust"
CLAUDE_ONBOARDING = "claude.onboarding"
CLAUDE_API_KEY = "claude.api-key"
CODEX_TRUST = "codex.trust"


@dataclass(frozen=True)
class Change:
    """One setting written (``action`` "set"), or one left alone on purpose ("left",
    ``note`` says why): ``key`` is a dotted path into ``file``."""

    file: str
    key: str
    value: Any
    previous: Any
    action: str = "set"
    note: str | None = None


@dataclass(frozen=True)
class Plan:
    """What to seed for one spawn: which answers the policy approves, and the API key
    the agent will have (None: no ``ANTHROPIC_API_KEY``, or ``claude.api-key`` not
    approved)."""

    trust: bool = True
    onboarding: bool = True
    api_key: str | None = None


class SeedError(Exception):
    """The settings file exists but could not be read or parsed; nothing was written."""


def claude_file(environ: Mapping[str, str]) -> Path | None:
    """Claude Code's state file: ``$CLAUDE_CONFIG_DIR/.claude.json``, else ``$HOME/...``."""
    if environ.get("CLAUDE_CONFIG_DIR"):
        return Path(environ["CLAUDE_CONFIG_DIR"]).expanduser() / ".claude.json"
    if environ.get("HOME"):
        return Path(environ["HOME"]) / ".claude.json"
    return None


def codex_file(environ: Mapping[str, str]) -> Path | None:
    """Codex's config: ``$CODEX_HOME/config.toml``, else ``$HOME/.codex/config.toml``."""
    if environ.get("CODEX_HOME"):
        return Path(environ["CODEX_HOME"]).expanduser() / "config.toml"
    if environ.get("HOME"):
        return Path(environ["HOME"]) / ".codex" / "config.toml"
    return None


def plan_for(
    runtime: Runtime, environ: Mapping[str, str], dialog_action: Callable[[str], str]
) -> Plan:
    """The seeding the dialog policy allows for ``runtime``.

    ``dialog_action(name)`` is ``Settings.dialog_action`` ("approve", "deny", "off");
    ``environ`` is the environment the agent is spawned with (its ``ANTHROPIC_API_KEY``).
    """
    if runtime is Runtime.CODEX:
        return Plan(trust=dialog_action(CODEX_TRUST) == APPROVE, onboarding=False)
    if runtime is not Runtime.CLAUDE:
        return Plan(trust=False, onboarding=False)
    key = environ.get("ANTHROPIC_API_KEY") or None
    return Plan(
        trust=dialog_action(CLAUDE_TRUST) == APPROVE,
        onboarding=dialog_action(CLAUDE_ONBOARDING) == APPROVE,
        api_key=key if dialog_action(CLAUDE_API_KEY) == APPROVE else None,
    )


def key_suffix(api_key: str) -> str:
    """What Claude Code stores for a key it asked about: its last 20 characters."""
    return api_key[-API_KEY_SUFFIX_CHARS:]


def _shown(suffix: str) -> str:
    return f"ANTHROPIC_API_KEY[-{API_KEY_SUFFIX_CHARS}:] (...{suffix[-4:]})"


def physical(workdir: Path) -> Path:
    """``workdir`` as the process running in it sees its cwd: symlinks resolved."""
    return Path(os.path.realpath(workdir))


def seed_claude(path: Path, workdir: Path, plan: Plan | None = None) -> list[Change]:
    """Seed Claude Code's state file at ``path`` for an agent running in ``workdir``.

    ``plan`` (default: trust and onboarding, no key) says what the policy approves.
    Returns the changes (``action`` "set" written, "left" recorded only). Raises
    SeedError when the file is not a JSON object or a seeded key has another shape
    (nothing written), OSError when it cannot be written.
    """
    plan = plan or Plan()
    state: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SeedError(f"{path} is not readable JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise SeedError(f"{path} does not hold a JSON object")
        state = loaded
    changes: list[Change] = []
    if plan.onboarding and state.get("hasCompletedOnboarding") is not True:
        changes.append(
            Change(str(path), "hasCompletedOnboarding", True, state.get("hasCompletedOnboarding"))
        )
        state["hasCompletedOnboarding"] = True
    if plan.trust:
        changes += _claude_trust(path, state, str(physical(workdir)))
    if plan.api_key:
        changes += _claude_api_key(path, state, key_suffix(plan.api_key))
    if any(c.action == "set" for c in changes):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(state, indent=2) + "\n").encode())
    return changes


def _claude_trust(path: Path, state: dict[str, Any], cwd: str) -> list[Change]:
    projects = state.setdefault("projects", {})
    if not isinstance(projects, dict):
        raise SeedError(f"{path}: 'projects' is not an object")
    project = projects.setdefault(cwd, {})
    if not isinstance(project, dict):
        raise SeedError(f"{path}: projects[{cwd!r}] is not an object")
    if project.get("hasTrustDialogAccepted") is True:
        return []
    key = f"projects[{json.dumps(cwd)}].hasTrustDialogAccepted"
    previous = project.get("hasTrustDialogAccepted")
    project["hasTrustDialogAccepted"] = True
    return [Change(str(path), key, True, previous)]


def _claude_api_key(path: Path, state: dict[str, Any], suffix: str) -> list[Change]:
    responses = state.get("customApiKeyResponses")
    if responses is None:
        responses = state["customApiKeyResponses"] = {"approved": [], "rejected": []}
    if not isinstance(responses, dict):
        raise SeedError(f"{path}: 'customApiKeyResponses' is not an object")
    for name in ("approved", "rejected"):
        value = responses.setdefault(name, [])
        if not isinstance(value, list):
            raise SeedError(f"{path}: customApiKeyResponses.{name} is not a list")
    approved, rejected = responses["approved"], responses["rejected"]
    key = "customApiKeyResponses.approved"
    if suffix in rejected:
        note = "in customApiKeyResponses.rejected (the owner said no): not approved"
        return [Change(str(path), key, _shown(suffix), None, action="left", note=note)]
    if suffix in approved:
        return []
    approved.append(suffix)
    return [Change(str(path), key, _shown(suffix), None)]


def seed_codex(path: Path, workdir: Path, plan: Plan | None = None) -> list[Change]:
    """Append a trusted ``[projects."<cwd>"]`` table to Codex's config when missing.

    Raises SeedError when the file is not TOML or cannot take the table (nothing
    written), OSError when it cannot be written.
    """
    if plan is not None and not plan.trust:
        return []
    cwd = str(physical(workdir))
    text = ""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            config = tomllib.loads(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SeedError(f"{path} is not readable TOML: {e}") from e
        projects = config.get("projects", {})
        if isinstance(projects, dict) and cwd in projects:
            return []  # the owner's own entry, whatever it says
    table = f'[projects.{toml_string(cwd)}]\ntrust_level = "trusted"\n'
    new = (
        (text if not text or text.endswith("\n") else text + "\n") + ("\n" if text else "") + table
    )
    try:
        tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:  # e.g. an inline ``projects = {...}`` table
        raise SeedError(f"{path}: cannot add a projects table ({e})") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, new.encode())
    key = f"projects.{toml_string(cwd)}.trust_level"
    return [Change(str(path), key, "trusted", None)]


def seed(
    runtime: Runtime,
    environ: Mapping[str, str],
    workdir: Path,
    dialog_action: Callable[[str], str] | None = None,
) -> list[Change]:
    """Seed ``runtime``'s settings for an agent spawned in ``workdir``; return the changes.

    ``environ``: the environment the agent gets (HOME, CLAUDE_CONFIG_DIR, CODEX_HOME,
    ANTHROPIC_API_KEY). ``dialog_action``: ``Settings.dialog_action``; None approves
    trust and onboarding only (no key). Raises SeedError when the settings file cannot
    be parsed (nothing written), OSError when it cannot be written.
    """
    if dialog_action is None:
        plan = Plan(trust=True, onboarding=runtime is Runtime.CLAUDE)
    else:
        plan = plan_for(runtime, environ, dialog_action)
    if not (plan.trust or plan.onboarding or plan.api_key):
        return []
    if runtime is Runtime.CLAUDE:
        path = claude_file(environ)
        return seed_claude(path, workdir, plan) if path else []
    if runtime is Runtime.CODEX:
        path = codex_file(environ)
        return seed_codex(path, workdir, plan) if path else []
    return []


def record(state_dir: Path, agent: str, runtime: Runtime, changes: list[Change]) -> None:
    """Append each change (and each answer left alone) to ``state/seeded.jsonl``, one
    JSON object a line (shape in the module docstring)."""
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
                "action": c.action,
                "note": c.note,
            }
            f.write(json.dumps(row) + "\n")
