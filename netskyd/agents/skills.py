"""Skills: the small verbs that make a TUI a netsky agent (/up, /down, /restart, /spawn;
docs/notes.md).

Templates live in ``prompts/skills/<name>.md`` (beside the prompt layers) and are rendered
with the prompts' strict templating: an unknown variable fails the spawn, naming it.
Variables: agent, role, n, netsky_home. Each role gets its set (``ROLE_SKILLS``): the
orchestrator all four, agentinfinity all but /spawn, a clone /up and /down.

Installed at spawn where each runtime reads them, never in the owner's own places:

- **Claude Code**: a plugin directory of netsky's own, ``state/skills/<agent>/netsky/``
  (``.claude-plugin/plugin.json`` + ``commands/<name>.md``), loaded with
  ``--plugin-dir`` (netskyd.runtimes.claude). Claude Code lists them as ``/netsky:up``
  ... (typing ``/up`` finds them). The directory is replaced whole at each spawn, so a
  re-spawn never duplicates one and a role change drops what the new role lacks.
- **Codex**: skills ``$CODEX_HOME/skills/netsky-<name>/SKILL.md`` (Codex lists them with
  ``$``: ``netsky-up [Skill]``). That directory is the owner's too, and shared by every
  Codex agent (so it holds the union of the roles' sets; netskyd itself refuses a clone's
  brief, harvest and owner verbs): a ``netsky-<name>`` directory netsky did not write (no
  ``.netsky-managed`` file in it) is never overwritten; it is reported instead.

``state/skills/installed.json`` records what was installed where, per agent
(``{agent: {"runtime", "skills": [names], "paths": [...], "skipped": [...], "ts"}}``);
``netskyctl doctor`` reads it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from netsky_shared.errors import PromptRenderError
from netsky_shared.ids import agent_n, role_of
from netsky_shared.maildir import atomic_write_bytes, now_rfc3339
from netsky_shared.paths import Paths
from netskyd import __version__
from netskyd.config import Settings
from netskyd.runtimes.claude import plugin_dir as claude_plugin_dir

#: The skills of each role (netsky_shared.ids.role_of).
ROLE_SKILLS: dict[str, tuple[str, ...]] = {
    "orchestrator": ("up", "down", "restart", "spawn"),
    "watchdog": ("up", "down", "restart"),
    "clone": ("up", "down"),
}
PLUGIN = "netsky"
#: The file that marks a Codex skill directory as netsky's (safe to replace).
MARKER = ".netsky-managed"
MANIFEST = "installed.json"


def render(prompts: Path, agent: str, home: Path) -> dict[str, str]:
    """``{name: markdown}`` of ``agent``'s role's skills. Raises PromptRenderError naming
    the file and the problem (unknown variable, syntax error, missing file)."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    role = role_of(agent)
    variables = {"agent": agent, "role": role, "n": agent_n(agent), "netsky_home": str(home)}
    out: dict[str, str] = {}
    for name in ROLE_SKILLS[role]:
        path = prompts / "skills" / f"{name}.md"
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as e:
            raise PromptRenderError(f"skill {path} cannot be read: {e}") from e
        try:
            out[name] = env.from_string(source).render(**variables).strip() + "\n"
        except jinja2.UndefinedError as e:
            raise PromptRenderError(f"skill {path}: unknown variable: {e.message}") from e
        except jinja2.TemplateSyntaxError as e:
            raise PromptRenderError(f"skill {path}:{e.lineno}: {e.message}") from e
    return out


def install_claude(settings: Settings, agent: str, skills: Mapping[str, str]) -> list[Path]:
    """Write ``agent``'s plugin directory afresh (module docstring); returns the command
    files. Raises OSError."""
    target = claude_plugin_dir(settings, agent)
    staging = target.with_name(f".{PLUGIN}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / ".claude-plugin").mkdir(parents=True)
    manifest = {"name": PLUGIN, "version": __version__,
                "description": f"netsky's verbs for {agent} ({role_of(agent)})"}  # fmt: skip
    (staging / ".claude-plugin" / "plugin.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (staging / "commands").mkdir()
    files = []
    for name, text in skills.items():
        (staging / "commands" / f"{name}.md").write_text(text, encoding="utf-8")
        files.append(target / "commands" / f"{name}.md")
    old = target.with_name(f".{PLUGIN}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return files


def codex_skills(environ: Mapping[str, str]) -> Path | None:
    """Codex's skills directory: ``$CODEX_HOME/skills``, else ``$HOME/.codex/skills``."""
    if environ.get("CODEX_HOME"):
        return Path(environ["CODEX_HOME"]).expanduser() / "skills"
    home = environ.get("HOME")
    return Path(home) / ".codex" / "skills" if home else None


def codex_text(name: str, text: str) -> str:
    """A skill as a Codex ``SKILL.md``: its front matter gains ``name: netsky-<name>``."""
    body = text[4:] if text.startswith("---\n") else f"description: netsky /{name}\n---\n{text}"
    return f"---\nname: netsky-{name}\n{body}"


def install_codex(root: Path, skills: Mapping[str, str]) -> tuple[list[Path], list[str]]:
    """Write ``<root>/netsky-<name>/SKILL.md`` for each skill, beside a ``MARKER`` file
    that says netsky wrote it; a directory of that name without the marker is the
    owner's and is left alone. Returns (files written or already current, directories
    skipped). Raises OSError."""
    root.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for name, text in skills.items():
        folder = root / f"netsky-{name}"
        if folder.exists() and not (folder / MARKER).exists():
            skipped.append(str(folder))
            continue
        folder.mkdir(exist_ok=True)
        (folder / MARKER).write_text("written by netsky at spawn; replaced at the next\n")
        path = folder / "SKILL.md"
        body = codex_text(name, text)
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != body:
            atomic_write_bytes(path, body.encode("utf-8"))
        written.append(path)
    return written, skipped


def record(paths: Paths, agent: str, runtime: str, skills: list[str], where: list[Path],
           skipped: list[str]) -> None:  # fmt: skip
    """Update ``state/skills/installed.json`` for ``agent``. Raises OSError."""
    path = paths.state / "skills" / MANIFEST
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[agent] = {"runtime": runtime, "skills": skills, "paths": [str(p) for p in where],
                   "skipped": skipped, "ts": now_rfc3339()}  # fmt: skip
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
