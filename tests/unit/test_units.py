"""The systemd units, the launchd plists, the shim's syntax, and ``netskyctl service``.

The unit files are checked by systemd's own parser (``systemd-analyze --user verify``),
the plists by plistlib, the shim by ``sh -n`` (and dash, bash --posix). ``netskyctl
service`` runs as a real process against a FAKE ``systemctl``/``launchctl`` on PATH that
records its argv: this machine has no user service manager, and a test must never
change the real one.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client import service as client_service
from client import unit_texts as service
from tests.harness import REPO

pytestmark = pytest.mark.timeout(60)

UNITS = ("netskyd.service", "netsky-shim.service", "netsky-shim.timer")
PLISTS = ("com.netsky.netskyd.plist", "com.netsky.shim.plist")
SHIM = REPO / "launchd" / "netsky-shim"
#: A home that needs every escape: a space, %, $, a quote, XML's & < >.
ODD_HOME = "my netsky home %h $HOME 'q' & <x>"
#: What an executable's name may hold (systemd refuses quotes, backslashes and an
#: unexpanded $ there): the probe below makes the shim's path the executable.
ODD_EXE_HOME = "my netsky home %h & <x>"

FAKE = """#!/bin/sh
# A fake {name}: records its argv, one line per run; FAKE_FAIL makes it fail like a
# machine without a user bus.
printf '%s\\n' "{name} $*" >>"$FAKE_LOG"
if [ -n "${{FAKE_FAIL:-}}" ]; then
    echo "Failed to connect to bus: No such file or directory" >&2
    exit 1
fi
case "$1 $2" in
    "--user is-enabled") echo enabled ;;
    "--user is-active") echo active ;;
    "print "*)
        [ -e "$FAKE_LOG.loaded.${{2##*/}}" ] || {{ echo "Could not find service" >&2; exit 113; }}
        printf 'state = running\\n\\tpid = 4242\\n' ;;
    "bootstrap "*) : >"$FAKE_LOG.loaded.$(basename "$3" .plist)" ;;
    "bootout "*) rm -f "$FAKE_LOG.loaded.${{2##*/}}" ;;
esac
exit 0
"""


# --- systemd ------------------------------------------------------------------------------


def verify(*files: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify`` with a private runtime dir (no user manager)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd units are verified on Linux")
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: install systemd (CI does: apt-get install systemd)"
    runtime = files[0].parent / ".runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        [exe, "--user", "verify", *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def clean(res: subprocess.CompletedProcess[str], *files: Path) -> None:
    """verify exits 0 even for an unknown key or a bad value; it says so on stderr."""
    assert res.returncode == 0, res.stderr
    said = res.stdout + res.stderr
    for f in files:
        assert f.name not in said, said


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    files = [tmp_path / name for name in UNITS]
    for f in files:
        shutil.copy(REPO / "systemd" / f.name, f)
    clean(verify(*files), *files)


def test_systemd_analyze_verify_does_catch_a_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "netskyd.service"
    text = (REPO / "systemd/netskyd.service").read_text()
    bad.write_text(text.replace("KillMode=process", "KillMode=bogus"))
    res = verify(bad)
    assert "kill mode" in (res.stdout + res.stderr).lower()


def test_the_daemon_unit_keeps_netskyd_alive_and_leaves_the_agents_alone() -> None:
    unit = parse_unit((REPO / "systemd/netskyd.service").read_text())
    s = unit["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["WatchdogSec"] == "60"
    assert s["Restart"] == "always" and s["RestartSec"] == "2"
    assert s["KillMode"] == "process"  # control-group would kill the agents' tmux server
    assert s["TimeoutStopSec"] == "30"
    assert s["ExecStart"] == "/bin/sh %h/.netsky/bin/netsky-shim run-daemon"
    assert s["Environment"] == "NETSKY_HOME=%h/.netsky"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Install"]["WantedBy"] == "default.target"


def test_the_shim_runs_every_120_s_as_a_oneshot() -> None:
    svc = parse_unit((REPO / "systemd/netsky-shim.service").read_text())["Service"]
    assert svc["Type"] == "oneshot" and svc["TimeoutStartSec"] == "300"
    assert svc["ExecStart"] == "/bin/sh %h/.netsky/bin/netsky-shim check"
    timer = parse_unit((REPO / "systemd/netsky-shim.timer").read_text())
    assert timer["Timer"]["OnBootSec"] == "120" and timer["Timer"]["OnUnitActiveSec"] == "120"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize("home_name", [ODD_HOME, ODD_EXE_HOME])
def test_units_rendered_for_an_odd_home_verify_and_name_the_real_shim(
    tmp_path: Path, home_name: str
) -> None:
    home = tmp_path / home_name
    environ = {"HOME": str(tmp_path)}
    files = []
    for name in UNITS:
        text = service.render_unit((REPO / "systemd" / name).read_text(), home, environ)
        assert "%h/.netsky" not in "".join(
            x for x in text.splitlines(keepends=True) if not x.startswith("#")
        )
        files.append(tmp_path / name)
        files[-1].write_text(text)
    clean(verify(*files), *files)
    if home_name != ODD_EXE_HOME:
        # In an argument (where the shim's path is) "$$" is systemd's literal "$".
        assert "$$HOME" in files[0].read_text()
        return
    # systemd's parser must read the quoted word back as the exact path: run the shim
    # itself as ExecStart's executable, and verify checks that that file exists.
    shim = home / "bin" / "netsky-shim"
    shim.parent.mkdir(parents=True)
    shutil.copy(SHIM, shim)
    exec_line = next(x for x in files[0].read_text().splitlines() if x.startswith("ExecStart="))
    probe = tmp_path / "probe.service"
    probe.write_text(
        "[Service]\nType=oneshot\n" + exec_line.replace("ExecStart=/bin/sh ", "ExecStart=") + "\n"
    )
    clean(verify(probe), probe)
    shim.unlink()
    res = verify(probe)
    assert "is not executable" in res.stdout + res.stderr


def test_the_default_home_renders_to_the_shipped_file(tmp_path: Path) -> None:
    text = (REPO / "systemd/netskyd.service").read_text()
    environ = {"HOME": str(tmp_path)}
    assert service.render_unit(text, tmp_path / ".netsky", environ) == text


# --- launchd ------------------------------------------------------------------------------


def test_the_shipped_plists_parse_and_keep_netskyd_alive() -> None:
    daemon = plistlib.loads((REPO / "launchd" / PLISTS[0]).read_bytes())
    assert daemon["Label"] == "com.netsky.netskyd"
    assert daemon["ProgramArguments"] == ["/bin/sh", "__NETSKY_HOME__/bin/netsky-shim",
                                          "run-daemon"]  # fmt: skip
    assert daemon["KeepAlive"] is True and daemon["RunAtLoad"] is True
    assert daemon["AbandonProcessGroup"] is True  # else launchd kills the agents' tmux
    assert daemon["StandardOutPath"] == daemon["StandardErrorPath"]
    assert daemon["StandardErrorPath"].endswith("/logs/netskyd.launchd.log")
    assert daemon["EnvironmentVariables"]["NETSKY_HOME"] == "__NETSKY_HOME__"
    shim = plistlib.loads((REPO / "launchd" / PLISTS[1]).read_bytes())
    assert shim["Label"] == "com.netsky.shim"
    assert shim["ProgramArguments"][-1] == "check"
    assert shim["StartInterval"] == 120 and shim["RunAtLoad"] is True
    assert shim["StandardOutPath"] and shim["StandardErrorPath"]


def test_rendered_plists_name_the_exact_home_and_keep_no_tokens(tmp_path: Path) -> None:
    home = tmp_path / ODD_HOME
    for name in PLISTS:
        text = service.render_plist((REPO / "launchd" / name).read_text(), home, "/a&b:/usr/bin")
        assert not any(tok in text for tok in service.PLIST_TOKENS)
        plist = plistlib.loads(text.encode())
        assert plist["ProgramArguments"][1] == f"{home}/bin/netsky-shim"
        assert plist["EnvironmentVariables"] == {"NETSKY_HOME": str(home), "PATH": "/a&b:/usr/bin"}


# --- the shim's syntax ----------------------------------------------------------------------


@pytest.mark.parametrize("shell", [["sh", "-n"], ["dash", "-n"], ["bash", "--posix", "-n"]])
def test_the_shim_is_valid_posix_sh(shell: list[str]) -> None:
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} is not installed")
    res = subprocess.run([*shell, str(SHIM)], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr


def test_the_shim_says_usage_with_exit_2() -> None:
    res = subprocess.run(["sh", str(SHIM), "bogus"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 2 and "unknown command" in res.stderr


# --- netskyctl service --------------------------------------------------------------------


class Box:
    """A temp HOME and NETSKY_HOME, a unit dir, and fake systemctl/launchctl on PATH."""

    def __init__(self, root: Path, home_name: str = "netsky home") -> None:
        self.root = root
        self.home = root / home_name
        self.units = root / "units"
        self.log = root / "fake.log"
        fakes = root / "fakebin"
        fakes.mkdir()
        for name in ("systemctl", "launchctl"):
            path = fakes / name
            path.write_text(FAKE.format(name=name))
            path.chmod(0o755)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("NETSKY_", "XDG_", "FAKE_"))
        }
        self.env.update(
            HOME=str(root / "user"),
            NETSKY_HOME=str(self.home),
            PATH=f"{fakes}{os.pathsep}{os.environ.get('PATH', '')}",
            FAKE_LOG=str(self.log),
        )

    def ctl(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client", "service", *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def files(self) -> set[str]:
        """Every file under the root but the fakes and their log."""
        return {
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and "fakebin" not in p.parts and not p.name.startswith("fake.log")
        }


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_install_writes_the_files_and_enables_the_units(box: Box) -> None:
    res = box.ctl("install", "--manager", "systemd", "--unit-dir", str(box.units))
    assert res.returncode == 0, res.stdout + res.stderr
    assert box.calls() == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now netskyd.service netsky-shim.timer",
    ]
    shim = box.home / "bin" / "netsky-shim"
    assert shim.read_bytes() == SHIM.read_bytes()
    assert stat.S_IMODE(shim.stat().st_mode) == 0o755
    assert (box.home / "state" / "install-selected").read_text() == "live\n"
    unit = (box.units / "netskyd.service").read_text()
    assert f'ExecStart=/bin/sh "{box.home}/bin/netsky-shim" run-daemon' in unit
    assert f'Environment="NETSKY_HOME={box.home}"' in unit
    assert {p.name for p in box.units.iterdir()} == set(UNITS)
    # service.env is sh: what it says, sh reads back.
    env = source(box.home / "service.env")
    assert env["NETSKY_HOME"] == str(box.home)
    assert env["NETSKY_SERVICE_MANAGER"] == "systemd"
    assert env["NETSKY_LIVE_BIN"] == str(Path(sys.executable).parent)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    tmux = shutil.which("tmux")
    if tmux:
        assert os.path.dirname(tmux) in env["PATH"].split(":")
    # One line per step, saying what was done.
    assert f"wrote {box.units / 'netskyd.service'}" in res.stdout
    assert "ran systemctl --user enable --now netskyd.service netsky-shim.timer" in res.stdout


def source(path: Path) -> dict[str, str]:
    names = ("NETSKY_HOME", "NETSKY_LIVE_BIN", "NETSKY_SERVICE_MANAGER", "PATH", "NETSKY_CONFIG")
    script = f". {json.dumps(str(path))}; " + "; ".join(
        f'printf "%s\\0" "${{{n}-}}"' for n in names
    )
    out = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=10, env={}, check=True
    ).stdout
    return dict(zip(names, out.split("\0"), strict=False))


def test_install_without_a_user_bus_fails_with_a_hint_and_keeps_the_files(box: Box) -> None:
    res = box.ctl("install", "--manager", "systemd", "--unit-dir", str(box.units), FAKE_FAIL="1")
    assert res.returncode == 1
    assert "Failed to connect to bus" in res.stdout
    assert "loginctl enable-linger" in res.stdout and "netskyd run" in res.stdout
    assert box.calls() == ["systemctl --user daemon-reload"]  # stops at the first failure
    assert (box.units / "netskyd.service").exists()
    assert (box.home / "bin" / "netsky-shim").exists()
    as_json = json.loads(
        box.ctl("install", "--unit-dir", str(box.units), "--json", FAKE_FAIL="1").stdout
    )
    assert as_json["ok"] is False and "enable-linger" in as_json["hint"]


def test_dry_run_touches_nothing_and_says_what_it_would_do(box: Box) -> None:
    res = box.ctl("install", "--manager", "systemd", "--unit-dir", str(box.units), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert box.files() == set() and box.calls() == []
    assert not box.home.exists()
    assert f"would write {box.units / 'netskyd.service'}" in res.stdout
    assert "would run systemctl --user enable --now" in res.stdout


def test_no_enable_writes_the_files_and_runs_nothing(box: Box) -> None:
    res = box.ctl("install", "--manager", "systemd", "--unit-dir", str(box.units), "--no-enable")
    assert res.returncode == 0, res.stderr
    assert box.calls() == []
    assert {p.name for p in box.units.iterdir()} == set(UNITS)


def test_status_reports_current_then_stale_files_and_the_last_shim_run(box: Box) -> None:
    assert box.ctl("status", "--manager", "systemd").returncode == 1  # nothing installed
    assert box.ctl("install", "--manager", "systemd", "--unit-dir", str(box.units)).returncode == 0
    box.log.unlink()
    line = {"ts": "2026-11-21T10:00:00Z", "pid": 9, "verdict": "healthy", "detail": "fine",
            "daemon_pid": 77, "install": "live", "duration_ms": 12}  # fmt: skip
    (box.home / "logs" / "shim.jsonl").write_text("not json\n" + json.dumps(line) + "\n")
    res = box.ctl("status")  # the manager and unit dir of the install, from service.env
    assert res.returncode == 0, res.stdout + res.stderr
    assert "netskyd.service: enabled, active" in res.stdout
    assert "healthy" in res.stdout and "77" in res.stdout
    assert box.calls() == [
        "systemctl --user is-enabled netskyd.service",
        "systemctl --user is-active netskyd.service",
        "systemctl --user is-enabled netsky-shim.timer",
        "systemctl --user is-active netsky-shim.timer",
    ]
    (box.units / "netsky-shim.timer").write_text("[Timer]\nOnBootSec=1\n")
    st = json.loads(box.ctl("status", "--json").stdout)
    stale = [f["path"] for f in st["files"] if f["current"] is False]
    assert st["ok"] is False and stale == [str(box.units / "netsky-shim.timer")]
    assert st["shim_last"] == line


def test_uninstall_disables_and_removes_only_its_files(box: Box) -> None:
    assert box.ctl("install", "--manager", "systemd", "--unit-dir", str(box.units)).returncode == 0
    (box.home / "config.toml").write_text("clones = 1\n")
    box.log.unlink()
    res = box.ctl("uninstall")
    assert res.returncode == 0, res.stdout + res.stderr
    assert box.calls() == [
        "systemctl --user disable --now netskyd.service netsky-shim.timer",
        "systemctl --user daemon-reload",
    ]
    assert list(box.units.iterdir()) == []
    assert box.files() == {"netsky home/config.toml", "netsky home/state/install-selected"}
    assert "tmux sessions are left running" in res.stdout


def test_launchd_install_bootstraps_both_plists_and_uninstall_boots_them_out(box: Box) -> None:
    res = box.ctl("install", "--manager", "launchd", "--unit-dir", str(box.units))
    assert res.returncode == 0, res.stdout + res.stderr
    uid = os.getuid()
    boot = [c for c in box.calls() if not c.startswith("launchctl print")]
    assert boot == [f"launchctl bootstrap gui/{uid} {box.units / p}" for p in PLISTS]
    for name in PLISTS:
        plist = plistlib.loads((box.units / name).read_bytes())
        assert plist["ProgramArguments"][1] == f"{box.home}/bin/netsky-shim"
        assert plist["EnvironmentVariables"]["PATH"] == source(box.home / "service.env")["PATH"]
    assert box.ctl("status").returncode == 0
    box.log.unlink()
    res = box.ctl("uninstall")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"launchctl bootout gui/{uid}/com.netsky.netskyd" in box.calls()
    assert list(box.units.iterdir()) == []


def test_manager_none_writes_the_shim_and_says_to_run_it_from_cron(box: Box) -> None:
    res = box.ctl("install", "--manager", "none")
    assert res.returncode == 0, res.stderr
    assert box.calls() == [] and "cron" in res.stdout
    assert source(box.home / "service.env")["NETSKY_SERVICE_MANAGER"] == "none"
    assert box.files() == {
        "netsky home/bin/netsky-shim",
        "netsky home/service.env",
        "netsky home/state/install-selected",
    }


def test_the_client_lists_the_same_managers_as_the_service_module() -> None:
    assert client_service.MANAGERS == service.MANAGERS


@pytest.mark.parametrize(
    ("platform", "manager"), [("linux", "systemd"), ("darwin", "launchd"), ("freebsd14", "none")]
)
def test_the_platform_picks_the_manager(platform: str, manager: str) -> None:
    assert service.default_manager(platform) == manager


def test_service_env_keeps_the_owners_own_settings(tmp_path: Path) -> None:
    svc = service.Service("systemd", tmp_path, tmp_path / "u", {"PATH": "/usr/bin"}, tmp_path)
    text = service.render_env(svc, {"NETSKY_SHIM_PROBE_TIMEOUT_S": "5", "NETSKY_HOME": "/old"})
    got: dict[str, Any] = service.parse_env(text)
    assert got["NETSKY_SHIM_PROBE_TIMEOUT_S"] == "5" and got["NETSKY_HOME"] == str(tmp_path)


# --- the shim's own logic (no daemon: fake installs) -----------------------------------------

#: A fake ``netskyd`` that says how it was run: its pid (exec keeps the shim's), its
#: arguments and the environment the shim gave it.
FAKE_NETSKYD = """#!/bin/sh
{
    echo "pid=$$"
    echo "args=$*"
    echo "home=$NETSKY_HOME"
    echo "path=$PATH"
    echo "socket=${NETSKY_TMUX_SOCKET-unset}"
} >"$FAKE_OUT"
"""


def fake_install(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "netskyd").write_text(FAKE_NETSKYD)
    (root / "netskyd").chmod(0o755)
    return root


def shim_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSKY_")}
    env.update(NETSKY_HOME=str(tmp_path / "home"), FAKE_OUT=str(tmp_path / "out"), **extra)
    return env


def run_daemon(tmp_path: Path, *args: str, **extra: str) -> dict[str, str]:
    """Run ``netsky-shim run-daemon ARGS``; what the fake netskyd it exec'd saw."""
    proc = subprocess.Popen(
        ["sh", str(SHIM), "run-daemon", *args],
        env=shim_env(tmp_path, **extra),
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    seen = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    assert seen["pid"] == str(proc.pid)  # exec: the daemon is the unit's main pid
    return seen


def test_run_daemon_execs_the_selected_install_and_consumes_revived_by(tmp_path: Path) -> None:
    live = fake_install(tmp_path / "live")
    lkg = fake_install(tmp_path / "home" / "lkg" / "current" / "bin")
    state = tmp_path / "home" / "state"
    state.mkdir(parents=True)
    (state / "revived-by").write_text("shim\n")
    seen = run_daemon(tmp_path, "--config", "c.toml", NETSKY_LIVE_BIN=str(live))
    assert seen["args"] == "run --config c.toml --revived-by shim"
    assert seen["home"] == str(tmp_path / "home")
    assert not (state / "revived-by").exists()
    assert run_daemon(tmp_path, NETSKY_LIVE_BIN=str(live))["args"] == "run"  # once only
    (state / "install-selected").write_text("lkg\n")
    (tmp_path / "out").unlink()
    run_daemon(tmp_path, NETSKY_LIVE_BIN=str(live))
    assert (tmp_path / "out").exists()
    os.rename(lkg / "netskyd", lkg / "netskyd.moved")  # the selected copy is gone: live runs
    fake = (tmp_path / "live" / "netskyd").read_text().replace('"pid=$$"', '"pid=$$ live"')
    (live / "netskyd").write_text(fake)
    proc = subprocess.run(
        ["sh", str(SHIM), "run-daemon"],
        env=shim_env(tmp_path, NETSKY_LIVE_BIN=str(live)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "live" in (tmp_path / "out").read_text() and "last-known-good" in proc.stderr


def test_settings_come_from_the_environment_then_service_env_then_defaults(
    tmp_path: Path,
) -> None:
    a, b = fake_install(tmp_path / "a"), fake_install(tmp_path / "b")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "service.env").write_text(
        f"NETSKY_LIVE_BIN={service.sh_quote(str(a))}\n"
        "NETSKY_TMUX_SOCKET='netsky-from-file'\n"
        "PATH='/from/service/env'\n"
    )
    seen = run_daemon(tmp_path)
    assert seen["socket"] == "netsky-from-file"
    assert seen["path"].startswith("/from/service/env:")  # then the inherited PATH
    assert os.environ["PATH"] in seen["path"]
    (tmp_path / "out").unlink()
    seen = run_daemon(tmp_path, NETSKY_LIVE_BIN=str(b), NETSKY_TMUX_SOCKET="netsky-env")
    assert seen["socket"] == "netsky-env"
    assert (tmp_path / "out").exists()
    # Neither: netskyd is found on PATH.
    (tmp_path / "home" / "service.env").unlink()
    seen = run_daemon(tmp_path, PATH=f"{b}{os.pathsep}{os.environ['PATH']}")
    assert seen["socket"] == "unset"


def check(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``netsky-shim check`` with installs that do not exist: nothing can start."""
    settings = {"NETSKY_LIVE_BIN": str(tmp_path / "no-live"), "NETSKY_SHIM_PROBE_TIMEOUT_S": "2"}
    env = shim_env(tmp_path, **{**settings, **extra})
    return subprocess.run(
        ["sh", str(SHIM), "check"], env=env, capture_output=True, text=True, timeout=60
    )


def journal(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "home" / "logs" / "shim.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_live_shims_lock_makes_another_run_step_aside(tmp_path: Path) -> None:
    lock = tmp_path / "home" / "state" / "shim.lock.d"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{os.getpid()}\n")
    res = check(tmp_path)
    assert res.returncode == 0
    [line] = journal(tmp_path)
    assert line["verdict"] == "locked" and str(os.getpid()) in line["detail"]
    assert (lock / "pid").read_text().strip() == str(os.getpid())


def test_a_dead_shims_lock_is_taken_over_and_released(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = tmp_path / "home" / "state" / "shim.lock.d"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{gone.pid}\n")
    res = check(tmp_path)
    assert res.returncode == 1  # it ran: nothing can start here
    assert [x["verdict"] for x in journal(tmp_path)] == ["paged"]
    assert not lock.exists()
    assert not list(lock.parent.glob("shim.lock.d.stale.*"))


def test_the_journal_line_is_json_whatever_the_detail_holds(tmp_path: Path) -> None:
    odd = tmp_path / 'a "quoted" \\back\\slash $(x) é\tend'
    res = check(tmp_path, NETSKY_LIVE_BIN=str(odd))
    assert res.returncode == 1
    [line] = journal(tmp_path)
    assert line["verdict"] == "paged" and line["daemon_pid"] is None
    assert f"live: no netskyd in {odd}".replace("\t", " ") in line["detail"]
    assert isinstance(line["duration_ms"], int) and line["pid"] > 0
    page = (tmp_path / "home" / "OWNER-PAGE.txt").read_text()
    assert "[critical] daemon:down" in page
