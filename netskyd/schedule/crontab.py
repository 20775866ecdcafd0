"""``cron.toml``: the owner-editable list of recurring prompts (ARCHITECTURE.md, "Scheduling").

Shape::

    [[cron]]
    name = "standup"              # unique; letters, digits, . _ -
    schedule = "0 11 * * 1-5"     # 5-field cron
    agent = "agent0"
    text = "Post the standup summary."
    tz = "Europe/Berlin"          # default "UTC"
    catchup = "one"               # one (default) | all | none
    paused = false

``read(text)`` parses and checks every entry and returns them, or raises CrontabError whose
message names the line (a TOML syntax error, an entry with a bad schedule, zone, policy or
agent, a duplicate name, a file over ``MAX_BYTES``): the caller keeps its last good list.
``render(entries)`` writes the file back (``cron add``/``rm``/``pause``), one table per
entry, strings escaped as TOML basic strings. Pure: no file is read or written here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from typing import Any

from netsky_shared.ids import is_agent_id
from netskyd.runtimes import toml_string
from netskyd.schedule.plan import CATCHUP, ScheduleError, check_schedule, zone

#: A cron.toml larger than this is refused (it is a few entries, not data).
MAX_BYTES = 256 * 1024
#: Longest prompt text of one entry (the bus's envelope cap is larger; this is a schedule).
MAX_TEXT_BYTES = 32 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEYS = {"name", "schedule", "agent", "text", "tz", "catchup", "paused"}


class CrontabError(ValueError):
    """Raised when cron.toml (or one entry) is not valid; the message names the line."""


@dataclass(frozen=True)
class CronEntry:
    """One recurring prompt (module docstring)."""

    name: str
    schedule: str
    agent: str
    text: str
    tz: str = "UTC"
    catchup: str = "one"
    paused: bool = False

    def paused_as(self, paused: bool) -> CronEntry:
        return replace(self, paused=paused)


def check_entry(raw: dict[str, Any]) -> CronEntry:
    """One ``[[cron]]`` table as a CronEntry. Raises CrontabError naming the field."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise CrontabError(f"unknown key(s) {', '.join(unknown)}")
    for key in ("name", "schedule", "agent", "text"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise CrontabError(f"{key} must be a non-empty string")
    name, agent, text = raw["name"], raw["agent"], raw["text"]
    if not _NAME.match(name):
        raise CrontabError(f"name {name!r}: letters, digits, . _ - (at most 64)")
    if not is_agent_id(agent):
        raise CrontabError(f"agent {agent!r} is not an agent id (agent0, agentN, agentinfinity)")
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise CrontabError(f"text is {len(text.encode())} bytes; at most {MAX_TEXT_BYTES}")
    tz = raw.get("tz", "UTC")
    catchup = raw.get("catchup", "one")
    paused = raw.get("paused", False)
    if not isinstance(tz, str) or not isinstance(catchup, str) or not isinstance(paused, bool):
        raise CrontabError("tz and catchup must be strings, paused a boolean")
    if catchup not in CATCHUP:
        raise CrontabError(f"catchup must be one of {', '.join(CATCHUP)}, not {catchup!r}")
    try:
        zone(tz)
        check_schedule(raw["schedule"], tz)
    except ScheduleError as e:
        raise CrontabError(str(e)) from e
    return CronEntry(name, raw["schedule"], agent, text, tz, catchup, paused)


def read(text: str) -> list[CronEntry]:
    """Every entry of a cron.toml's ``text``, in file order. Raises CrontabError with the
    line of the problem (module docstring)."""
    size = len(text.encode())
    if size > MAX_BYTES:
        raise CrontabError(f"cron.toml is {size} bytes; at most {MAX_BYTES}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CrontabError(f"cron.toml does not parse: {e}") from e
    unknown = sorted(set(doc) - {"cron"})
    if unknown:
        raise CrontabError(f"cron.toml: unknown table(s) {', '.join(unknown)} (only [[cron]])")
    tables = doc.get("cron", [])
    if not isinstance(tables, list):
        raise CrontabError("cron.toml: 'cron' must be an array of tables ([[cron]])")
    lines = _table_lines(text)
    entries: list[CronEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(tables):
        where = f"cron.toml line {lines[i]}" if i < len(lines) else f"cron.toml entry {i + 1}"
        try:
            entry = check_entry(raw)
        except CrontabError as e:
            raise CrontabError(f"{where}: {e}") from e
        if entry.name in seen:
            raise CrontabError(f"{where}: a second entry named {entry.name!r}")
        seen.add(entry.name)
        entries.append(entry)
    return entries


def _table_lines(text: str) -> list[int]:
    """1-based line numbers of each ``[[cron]]`` header, in order."""
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[cron]]"]


def render(entries: list[CronEntry]) -> str:
    """cron.toml's text for ``entries`` (a header comment, then one table each)."""
    out = [
        "# netsky's recurring prompts (docs/schedule.md); 'netskyctl cron add|rm|pause|resume'",
        "# rewrite this file, and netskyd reads it again when it changes.",
    ]
    for e in entries:
        out += [
            "",
            "[[cron]]",
            f"name = {toml_string(e.name)}",
            f"schedule = {toml_string(e.schedule)}",
            f"agent = {toml_string(e.agent)}",
            f"text = {toml_string(e.text)}",
            f"tz = {toml_string(e.tz)}",
            f"catchup = {toml_string(e.catchup)}",
            f"paused = {'true' if e.paused else 'false'}",
        ]
    return "\n".join(out) + "\n"
