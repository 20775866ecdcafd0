"""The one-home helpers of issue 15: RFC 3339 formatting, atomic writes, the
install-selected reader and the exponential backoff."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netsky_shared.health import read_install_selected
from netsky_shared.ids import rfc3339
from netsky_shared.maildir import atomic_write_bytes
from netskyd.timing import exp_backoff_s

T0 = 1_763_719_200.123456  # 2025-11-21T10:00:00.123456Z


@pytest.mark.parametrize(
    ("when", "digits", "want"),
    [
        (T0, 6, "2025-11-21T10:00:00.123456Z"),
        (T0, 0, "2025-11-21T10:00:00Z"),
        (1_763_719_200, 6, "2025-11-21T10:00:00.000000Z"),
        (1_763_719_200.9999, 0, "2025-11-21T10:00:00Z"),  # seconds truncate
        (datetime(2025, 11, 21, 10, 0, 0, 7, tzinfo=UTC), 6, "2025-11-21T10:00:00.000007Z"),
        (datetime(2025, 11, 21, 10, 0, 0, 7, tzinfo=UTC), 0, "2025-11-21T10:00:00Z"),
    ],
)
def test_rfc3339_writes_utc_with_microseconds_or_seconds(
    when: float | datetime, digits: int, want: str
) -> None:
    assert rfc3339(when, digits=digits) == want


def test_rfc3339_refuses_other_precisions() -> None:
    with pytest.raises(ValueError):
        rfc3339(T0, digits=3)


def test_atomic_write_sets_the_mode_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.txt"
    atomic_write_bytes(path, b"one\n", mode=0o600)
    atomic_write_bytes(path, b"two\n", mode=0o600)
    assert path.read_bytes() == b"two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["file.txt"]


def test_atomic_write_removes_its_tmp_when_the_rename_fails(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    (target / "inner").mkdir(parents=True)  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"x")
    assert sorted(os.listdir(tmp_path)) == ["dir"]


@pytest.mark.parametrize(
    ("content", "want"),
    [(None, "live"), ("lkg\n", "lkg"), ("live\n", "live"), ("", "live"), ("junk\n", "live")],
)
def test_read_install_selected_is_live_unless_it_says_lkg(
    tmp_path: Path, content: str | None, want: str
) -> None:
    if content is not None:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "install-selected").write_text(content)
    assert read_install_selected(str(tmp_path)) == want


def test_exp_backoff_doubles_then_caps_and_jitter_stays_in_bounds() -> None:
    assert [exp_backoff_s(n, 1.0, 20.0) for n in range(0, 8)] == [1, 1, 2, 4, 8, 16, 20, 20]
    for n in range(1, 6):
        got = exp_backoff_s(n, 1.0, 1000.0, jitter=0.25, key="k")
        assert 0.75 * 2 ** (n - 1) <= got <= 1.25 * 2 ** (n - 1)
        assert got == exp_backoff_s(n, 1.0, 1000.0, jitter=0.25, key="k")
