from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.harness import Netsky
from tests.npm_clis import LATEST_ENV, cli, describe

#: The two tiers of real agent CLIs (tests/npm_clis.py); ``latest`` only with --latest-clis.
TIERS = [pytest.param("pinned"), pytest.param("latest", marks=pytest.mark.latest_clis)]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--latest-clis",
        action="store_true",
        default=False,
        help="also run the real-CLI tests against @latest of Claude Code and Codex from npm "
        f"(installed fresh; or set {LATEST_ENV}=1)",
    )


def latest_clis(config: pytest.Config) -> bool:
    return bool(config.getoption("--latest-clis")) or os.environ.get(LATEST_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --latest-clis the ``latest`` tier is deselected (not skipped: not run at all)."""
    if latest_clis(config):
        return
    keep = [i for i in items if i.get_closest_marker("latest_clis") is None]
    dropped = [i for i in items if i.get_closest_marker("latest_clis") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """A failing test that ran a real CLI says which release it was."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    names = [d for d in (describe(v) for v in funcargs.values()) if d]
    if names:
        report.sections.append(("CLI under test", "\n".join(names)))


@pytest.fixture(scope="session", params=TIERS)
def claude_bin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Claude Code's executable, once per tier (``pinned``, and ``latest`` when enabled)."""
    tier = str(request.param)
    return cli("claude", tier, tmp_path_factory.mktemp(f"claude-{tier}")).path


@pytest.fixture(scope="session", params=TIERS)
def codex_bin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Codex CLI's executable, once per tier (``pinned``, and ``latest`` when enabled)."""
    tier = str(request.param)
    return cli("codex", tier, tmp_path_factory.mktemp(f"codex-{tier}")).path


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
