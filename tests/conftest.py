from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Netsky


@pytest.fixture
def netsky(tmp_path: Path) -> Iterator[Netsky]:
    """A fresh NETSKY_HOME on a private tmux socket; the daemon is started by the test."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/test installs it)")
    ns = Netsky(tmp_path / "home")
    try:
        yield ns
    finally:
        ns.cleanup()
