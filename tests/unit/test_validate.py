"""The bus's validation step against real files (each failure names its rule)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netsky_shared.errors import EnvelopeRejected
from netsky_shared.maildir import new_envelope
from netskyd.bus.watcher import validate

MAX = 4096


def _write(tmp_path: Path, value: object) -> Path:
    p = tmp_path / "x.json"
    p.write_text(value if isinstance(value, str) else json.dumps(value))
    return p


def _good(**over: object) -> dict[str, object]:
    env = new_envelope("agent1", "agent0", "hi")
    env.pop("_ts_ns")
    env.update(over)
    return env


def test_good_envelope_passes(tmp_path: Path) -> None:
    assert validate(_write(tmp_path, _good()), "agent0", MAX).text == "hi"


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ("{not json", "not-json"),
        ('{"v": 1}', "schema"),
        (None, "wrong-recipient"),
        ("x" * (MAX + 1), "too-large"),
    ],
)
def test_rules(tmp_path: Path, content: str | None, rule: str) -> None:
    p = _write(tmp_path, content if content is not None else _good(to="agent2"))
    with pytest.raises(EnvelopeRejected) as exc:
        validate(p, "agent0", MAX)
    assert exc.value.rule == rule


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_bytes(b'{"text": "\xff\xfe"}')
    with pytest.raises(EnvelopeRejected) as exc:
        validate(p, "agent0", MAX)
    assert exc.value.rule == "not-utf8"


def test_symlink_and_fifo_are_not_read(tmp_path: Path) -> None:
    target = _write(tmp_path, _good())
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for p in (link, fifo):
        with pytest.raises(EnvelopeRejected) as exc:
            validate(p, "agent0", MAX)
        assert exc.value.rule == "not-regular-file"
