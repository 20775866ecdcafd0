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
agent, text the bus would refuse, a duplicate name, a file over ``MAX_BYTES``): the caller
keeps its last good list. ``add``, ``remove`` and ``set_paused`` edit the text the way
``cron add|rm|pause|resume`` do, through tomlkit, so the owner's comments, order and
layout stay as they were. Pure: no file is read or written here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from netsky_shared.ids import is_agent_id
from netsky_shared.maildir import BadText, check_text
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
    try:
        text = check_text(text)
    except BadText as e:
        raise CrontabError(str(e)) from e
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


HEADER = (
    "# netsky's recurring prompts (docs/schedule.md). Edit this file or use\n"
    "# 'netskyctl cron add|rm|pause|resume'; netskyd reads it again when it changes, and\n"
    "# keeps running the last good version while a change does not parse.\n"
)


def _document(text: str) -> tomlkit.TOMLDocument:
    read(text)  # the file as it is must be valid before it is edited
    try:
        return tomlkit.parse(text)
    except TOMLKitError as e:  # pragma: no cover - tomllib accepted it
        raise CrontabError(f"cron.toml does not parse: {e}") from e


def _tables(doc: tomlkit.TOMLDocument) -> Any:
    if "cron" not in doc:
        doc.append("cron", tomlkit.aot())
    return doc["cron"]


def add(text: str, entry: CronEntry) -> str:
    """``text`` with ``entry`` appended as a ``[[cron]]`` table. Raises CrontabError when
    ``text`` is not valid, the entry is not, or its name is taken."""
    doc = _document(text or HEADER)
    check_entry(fields_of(entry))
    tables = _tables(doc)
    if any(t.get("name") == entry.name for t in tables):
        raise CrontabError(f"an entry named {entry.name!r} exists (cron rm it first)")
    table = tomlkit.table()
    for key, value in fields_of(entry).items():
        table.add(key, value)
    tables.append(table)
    out = tomlkit.dumps(doc)
    read(out)
    return out


def remove(text: str, name: str) -> str:
    """``text`` without the entry ``name``. Raises CrontabError (no such entry)."""
    doc = _document(text)
    tables = _tables(doc)
    index = _index(tables, name)
    del tables[index]
    if not tables:
        del doc["cron"]
    return tomlkit.dumps(doc)


def set_paused(text: str, name: str, paused: bool) -> str:
    """``text`` with entry ``name``'s ``paused`` set. Raises CrontabError."""
    doc = _document(text)
    tables = _tables(doc)
    tables[_index(tables, name)]["paused"] = paused
    return tomlkit.dumps(doc)


def _index(tables: Any, name: str) -> int:
    for i, t in enumerate(tables):
        if t.get("name") == name:
            return i
    raise CrontabError(f"no cron entry named {name!r} (netskyctl cron ls)")


def fields_of(e: CronEntry) -> dict[str, Any]:
    """An entry as its ``[[cron]]`` table's keys and values."""
    return {
        "name": e.name,
        "schedule": e.schedule,
        "agent": e.agent,
        "text": e.text,
        "tz": e.tz,
        "catchup": e.catchup,
        "paused": e.paused,
    }
