"""netskyd.keepalive.lkg.snapshot, lkgreqs and lkgtask: requirement walking and markers (pure), the
fingerprint, a real promote into a temporary NETSKY_HOME (a self-contained copy that passes
selftest), pruning and the current/previous links, and the child-process deadline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from netsky_shared.paths import Paths
from netskyd import __version__
from netskyd.keepalive.lkg import install as lkgreqs
from netskyd.keepalive.lkg import snapshot as lkg
from netskyd.keepalive.lkg import task as lkgtask
from netskyd.keepalive.lkg.install import (
    PACKAGES,
    Req,
    fingerprint,
    marker_allows,
    packaging_evaluator,
    parse_requirement,
    walk_requirements,
)
from netskyd.keepalive.lkg.snapshot import LkgError, to_prune
from netskyd.keepalive.lkg.task import unhealthy_reason

REPO = Path(__file__).resolve().parents[2]
EVAL = packaging_evaluator()


@pytest.mark.parametrize(
    ("text", "req"),
    [
        ("anyio>=4.4", Req("anyio")),
        ("Typing_Extensions", Req("typing-extensions")),
        ("uvloop>=0.19; sys_platform != 'win32'", Req("uvloop", (), "sys_platform != 'win32'")),
        ("httpx[http2,Socks] >=0.27", Req("httpx", ("http2", "socks"))),
        ("pytest>=8; extra == 'dev'", Req("pytest", (), "extra == 'dev'")),
        (
            "pkg @ https://example.org/pkg.whl ; python_version >= '3.8'",
            Req("pkg", (), "python_version >= '3.8'"),
        ),
    ],
)
def test_parse_requirement(text: str, req: Req) -> None:
    assert parse_requirement(text) == req


def test_parse_requirement_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_requirement("; extra == 'x'")


@pytest.mark.parametrize("evaluate", [EVAL, None], ids=["packaging", "fallback"])
@pytest.mark.parametrize(
    ("marker", "extras", "installed", "expected"),
    [
        (None, (), False, True),
        ("extra == 'dev'", (), True, False),  # the root's dev requirements are skipped
        ("extra == 'dev'", ("dev",), True, True),
        ('extra == "http2"', ("socks", "http2"), True, True),
        ("python_version >= '3.8' and extra == 'cli'", (), True, False),
    ],
)
def test_marker_allows(
    evaluate: lkgreqs.MarkerEval | None,
    marker: str | None,
    extras: tuple[str, ...],
    installed: bool,
    expected: bool,
) -> None:
    assert marker_allows(marker, extras, installed, evaluate) is expected


def test_marker_allows_platform_markers() -> None:
    # packaging evaluates; without it, an installed distribution is taken.
    if EVAL is not None:
        assert marker_allows("sys_platform == 'win32'", (), True, EVAL) is (sys.platform == "win32")
        assert marker_allows("python_version >= '3.8'", (), False, EVAL) is True
    assert marker_allows("sys_platform == 'win32'", (), True, None) is True
    assert marker_allows("sys_platform == 'win32'", (), False, None) is False


FAKE = {
    "anyio": ["idna>=2.8", "sniffio>=1.1", "trio>=0.26; extra == 'trio'"],
    "idna": [],
    "sniffio": [],
    "trio": ["outcome"],
    "outcome": [],
    "httpx": ["anyio", "h2>=3; extra == 'http2'", "socksio; extra == 'socks'"],
    "h2": ["hpack"],
    "hpack": [],
    "a": ["b"],
    "b": ["a"],  # a cycle
    "pytest": ["pluggy"],
    "pluggy": [],
    "winonly": [],
}


def fake_requires(name: str) -> list[str] | None:
    return FAKE.get(name)


@pytest.mark.parametrize("evaluate", [EVAL, None], ids=["packaging", "fallback"])
def test_walk_requirements(evaluate: lkgreqs.MarkerEval | None) -> None:
    roots = [
        "anyio>=4",
        "httpx[http2]>=0.27",
        "a",
        "netsky",  # its own name is never walked into
        "pytest>=8; extra == 'dev'",
        "missing-dep>=1",
        "absent-dev; extra == 'dev'",
    ]
    names, missing = walk_requirements(roots, fake_requires, evaluate)
    assert names == ["a", "anyio", "b", "h2", "hpack", "httpx", "idna", "sniffio"]
    assert missing == ["missing-dep"]


def test_walk_requirements_extras_asked_later_are_walked() -> None:
    names, _ = walk_requirements(["anyio", "httpx", "anyio[trio]"], fake_requires, EVAL)
    assert "trio" in names and "outcome" in names


@pytest.mark.skipif(EVAL is None, reason="needs packaging")
def test_walk_requirements_platform_marker() -> None:
    names, missing = walk_requirements(["winonly; sys_platform == 'win32'"], fake_requires, EVAL)
    assert (names == ["winonly"]) is (sys.platform == "win32")
    assert missing == []


@pytest.mark.parametrize(
    ("ids", "keep", "expected"),
    [
        (["1", "2", "3"], set(), []),
        (["1", "2", "3", "4"], set(), ["1"]),
        (["4", "1", "3", "2", "5"], {"5"}, ["1", "2"]),
        (["1", "2", "3", "4", "5"], {"1", "5"}, ["2", "3"]),
        (["1", "2", "3", "4"], {"1", "2"}, ["3"]),
    ],
)
def test_to_prune(ids: list[str], keep: set[str], expected: list[str]) -> None:
    assert to_prune(ids, keep, 3) == expected


@pytest.mark.parametrize(
    ("last_tick_at", "markers", "healthy"),
    [
        (None, [], False),
        (100.0, [], True),
        (97.5, [], True),
        (96.0, [], False),  # older than 3 intervals of 1 s
        (100.0, ["gave-up.json"], False),
    ],
)
def test_unhealthy_reason(last_tick_at: float | None, markers: list[str], healthy: bool) -> None:
    assert (unhealthy_reason(100.0, last_tick_at, 1.0, markers) is None) is healthy


def test_open_markers(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.state.mkdir()
    assert lkgtask.open_markers(paths) == []
    (paths.state / "gave-up.json").write_text('{"agents": {}}')
    (paths.state / "crashloop.json").write_text('{"agents": {"agent1": {}}}')
    assert lkgtask.open_markers(paths) == ["crashloop.json"]
    (paths.state / "gave-up.json").write_text("{not json")
    assert lkgtask.open_markers(paths) == ["gave-up.json", "crashloop.json"]
    assert (paths.state / "gave-up.json").exists()  # read only: not moved aside


def _package(root: Path) -> Path:
    pkg = root / "netskyd"
    (pkg / "store").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "store" / "db.py").write_text("y = 2\n")
    return pkg


def test_fingerprint_follows_the_code_and_the_dists(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    dists = [("anyio", "4.4.0")]
    before = fingerprint("1.0", [pkg], dists)
    assert fingerprint("1.0", [pkg], dists) == before
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("ignored")
    (pkg / "README.txt").write_text("not code")
    assert fingerprint("1.0", [pkg], dists) == before
    assert fingerprint("1.1", [pkg], dists) != before
    assert fingerprint("1.0", [pkg], [("anyio", "4.5.0")]) != before
    (pkg / "store" / "db.py").write_text("y = 3\n")
    changed = fingerprint("1.0", [pkg], dists)
    assert changed != before
    copy = _package(tmp_path / "elsewhere")
    (copy / "store" / "db.py").write_text("y = 3\n")
    assert fingerprint("1.0", [copy], dists) == changed  # where it lives does not count


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSKY_", "PYTHON"))}
    env["NETSKY_HOME"] = str(home)
    return env


def _fake_id(n: int) -> str:
    return f"2020010{n}T000000Z-0000000{n}"


@pytest.mark.timeout(300)
def test_promote_builds_a_self_contained_install(tmp_path: Path) -> None:
    home = tmp_path / "home"
    lkg_dir = home / "lkg"
    lkg_dir.mkdir(parents=True)
    for n in range(1, 5):  # older records; the oldest is current
        (lkg_dir / _fake_id(n)).mkdir()
    os.symlink(_fake_id(1), lkg_dir / "current")

    m = lkg.promote(home, reason="test", environ=_clean_env(home))

    install = lkg_dir / m["id"]
    assert Path(m["path"]) == install
    site = next((install / "venv" / "lib").glob("python3.*/site-packages"))
    dists = [tuple(d.split("==")) for d in m["dists"]]
    assert fingerprint(__version__, [site / name for name in PACKAGES], dists) == m["fingerprint"]
    assert m["version"] == __version__ and m["reason"] == "test"
    assert m["files"] > 100 and m["bytes"] > 1_000_000
    assert json.loads((install / "manifest.json").read_text())["id"] == m["id"]
    # links moved: current -> new, previous -> the old current; 3 kept, never those two
    assert os.readlink(lkg_dir / "current") == m["id"]
    assert os.readlink(lkg_dir / "previous") == _fake_id(1)
    kept = sorted(p.name for p in lkg_dir.iterdir() if lkg.ID_RE.match(p.name))
    assert kept == [_fake_id(1), _fake_id(4), m["id"]]
    assert not list(lkg_dir.glob(".tmp-*"))

    # real files, none of them links into the live install or its venv
    live_roots = (str(REPO), sys.prefix, str(Path(sys.prefix).resolve()))
    for dirpath, _dirs, names in os.walk(install):
        for name in names:
            p = Path(dirpath, name)
            if p.is_symlink():
                assert p.parent == install / "venv" / "bin", p  # only the interpreter links
                assert not os.path.realpath(p).startswith(live_roots), p
    assert (site / "netsky_shared" / "_data" / "prompts" / "base.md").is_file()
    assert not list(site.glob("*.pth")) and not list(site.glob("__editable__*"))
    assert "activate" not in os.listdir(install / "venv" / "bin")

    # it runs by itself: from a directory holding nothing, with no PYTHONPATH
    env = _clean_env(home)
    where = subprocess.run(
        [
            install / "venv" / "bin" / "python",
            "-c",
            "import netskyd, client, anyio, pydantic; "
            "print(netskyd.__file__, client.__file__, anyio.__file__, pydantic.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    for file in where.stdout.split():
        assert Path(file).is_relative_to(install), file
    # ...and its wrapper ignores a PYTHONPATH that points at the live code
    test = subprocess.run(
        [lkg_dir / "current" / "bin" / "netskyd", "selftest", "--json"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert json.loads(test.stdout)["executable"].startswith(str(install))
    ctl = subprocess.run(
        [lkg_dir / "current" / "bin" / "netskyctl", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ctl.stdout.strip() == f"netskyctl {__version__}"

    # the copy finds its own dependencies (without packaging) and fingerprints as recorded
    own = subprocess.run(
        [
            install / "venv" / "bin" / "python",
            "-I",
            "-m",
            "netskyd.keepalive.lkg.snapshot",
            "check",
            "--json",
            "--home",
            str(home),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    report = json.loads(own.stdout)
    assert own.returncode == 0 and report["same"], report
    assert report["running"]["from_lkg"] and report["lkg"]["id"] == m["id"]

    # a second record: previous is the first, current the second
    time.sleep(1.1)  # ids are per second
    m2 = lkg.promote(home, reason="again", environ=_clean_env(home))
    assert os.readlink(lkg_dir / "current") == m2["id"]
    assert os.readlink(lkg_dir / "previous") == m["id"]
    kept = sorted(p.name for p in lkg_dir.iterdir() if lkg.ID_RE.match(p.name))
    assert kept == [_fake_id(4), m["id"], m2["id"]]


@pytest.mark.timeout(300)
def test_promote_refuses_a_copy_that_fails_selftest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad.toml"
    bad.write_text("tick_interval_s = -1\n")  # the copy's selftest cannot load settings
    with pytest.raises(LkgError, match="selftest failed: settings"):
        lkg.promote(home, reason="test", environ={**_clean_env(home), "NETSKY_CONFIG": str(bad)})
    assert sorted(os.listdir(home / "lkg")) == [".lock"]  # nothing built, nothing linked


def test_promote_refuses_another_install(tmp_path: Path) -> None:
    with pytest.raises(LkgError, match="changed since"):
        lkg.promote(tmp_path, reason="test", expect_fingerprint="0" * 64)
    assert not (tmp_path / "lkg" / "current").exists()


def test_running_from_lkg(tmp_path: Path) -> None:
    base = tmp_path / "lkg"
    assert lkg.running_from_lkg(base, str(base / "x" / "venv" / "bin" / "python"))
    assert not lkg.running_from_lkg(base, "/usr/bin/python3")


@pytest.mark.timeout(30)
def test_run_child_kills_the_whole_group_at_the_deadline(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"

    async def main() -> None:
        with pytest.raises(LkgError, match="longer than"):
            await lkgtask.run_child(["sh", "-c", script], 1.0, None)

    anyio.run(main)
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"the grandchild {grandchild} outlived the deadline")


def test_run_child_returns_output() -> None:
    async def main() -> tuple[int, str, str]:
        return await lkgtask.run_child(["sh", "-c", "echo out; echo err >&2; exit 3"], 10, None)

    assert anyio.run(main) == (3, "out\n", "err\n")


# --- client/installs.py helpers ---------------------------------------------------


def test_service_env_is_read_like_sh(tmp_path: Path) -> None:
    from client import installs

    (tmp_path / "service.env").write_text(
        "# written by netskyctl service install\n"
        "NETSKY_SERVICE_MANAGER='systemd'\n"
        "NETSKY_LIVE_BIN='/opt/my netsky/bin'\n"
        "NETSKY_QUOTED='it'\\''s'\n"
        "not a line\n"
    )
    values = installs.service_env(str(tmp_path), {})
    assert values["NETSKY_SERVICE_MANAGER"] == "systemd"
    assert values["NETSKY_LIVE_BIN"] == "/opt/my netsky/bin"
    assert values["NETSKY_QUOTED"] == "it's"
    env = {"NETSKY_SERVICE_MANAGER": "none"}  # the environment wins, as in the shim
    assert installs.service_env(str(tmp_path), env)["NETSKY_SERVICE_MANAGER"] == "none"


def test_install_selected_round_trip(tmp_path: Path) -> None:
    from client import installs

    home = str(tmp_path)
    assert installs.read_selected(home) == "live"  # absent = live
    installs.write_selected(home, "lkg")
    assert (tmp_path / "state" / "install-selected").read_text() == "lkg\n"
    assert installs.read_selected(home) == "lkg"
    (tmp_path / "state" / "install-selected").write_text("garbage")
    assert installs.read_selected(home) == "live"
    assert os.listdir(tmp_path / "state") == ["install-selected"]


@pytest.mark.timeout(30)
def test_client_run_kills_the_group_at_the_deadline(tmp_path: Path) -> None:
    from client import installs

    pidfile = tmp_path / "grandchild.pid"
    rc, _out, err = installs.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 1.0)
    assert rc is None and "killed after 1s" in err
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"the grandchild {grandchild} outlived the deadline")


def test_client_run_reports_a_missing_command() -> None:
    from client import installs

    rc, _out, err = installs.run(["/nonexistent/netskyd", "selftest"], 5)
    assert rc == 127 and "cannot run" in err
