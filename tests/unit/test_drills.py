"""The drills' own logic, without a daemon: the verdict, the deadline of every wait,
reports that survive any failure (and always tear the sandbox down), report files,
the sandbox's config, and netskyctl's drill command staying off the import path."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from client import drills
from client.drills.agents import GAVE_UP_MARKER
from client.drills.run import DrillFailed, Run
from client.drills.sandbox import FAST, Sandbox, merge, toml_key, toml_value
from client.netskyctl import main
from netsky_shared.errors import DaemonNotRunning
from netskyd.supervision.restart.markers import MARKERS


@pytest.mark.parametrize(
    ("timings", "error", "want"),
    [
        ({"a_ms": 1.0, "b_ms": 2.0}, None, ("pass", "")),
        ({"a_ms": 1.0, "b_ms": 2.0, "extra_ms": 0.0}, None, ("pass", "")),
        ({"a_ms": 1.0}, None, ("fail", "not measured: b_ms")),
        ({"a_ms": 0.0, "b_ms": 2.0}, None, ("fail", "not measured: a_ms")),
        ({}, None, ("fail", "not measured: a_ms, b_ms")),
        (
            {"a_ms": 1.0, "b_ms": 2.0},
            "timed out waiting for x",
            ("fail", "timed out waiting for x"),
        ),
    ],
)
def test_judge(timings: dict[str, float], error: str | None, want: tuple[str, str]) -> None:
    assert drills.judge(timings, ("a_ms", "b_ms"), error) == want


def test_every_drill_names_the_timings_it_must_measure() -> None:
    assert list(drills.DRILLS) == [
        "agent0-crash",
        "daemon-kill",
        "hang",
        "escalate-fail",
        "gave-up-archive",
    ]
    assert all(
        d.timings and all(t.endswith("_ms") for t in d.timings) for d in drills.DRILLS.values()
    )


def test_the_gave_up_marker_name_is_the_daemons() -> None:
    assert MARKERS["gave-up"] == GAVE_UP_MARKER


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_ends_at_the_drills_deadline_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("time.sleep", lambda s: setattr(clock, "now", clock.now + s))
    run = Run("x", 5.0, clock=clock)
    calls = []

    def never() -> None:
        calls.append(clock.now)
        raise DaemonNotRunning("no socket")

    with pytest.raises(DrillFailed) as e:
        run.wait(never, "the thing", timeout_s=60, note=lambda: "2/3 ready")
    assert "the drill's deadline" in str(e.value) and "waiting for the thing" in str(e.value)
    assert "2/3 ready" in str(e.value) and "DaemonNotRunning: no socket" in str(e.value)
    assert clock.now == pytest.approx(105.0) and len(calls) > 10
    with pytest.raises(DrillFailed, match="deadline of 5s passed"):
        run.budget_s(1.0)


def test_a_wait_returns_the_value_and_a_verdict_from_the_check_ends_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("time.sleep", lambda s: setattr(clock, "now", clock.now + s))
    run = Run("x", 60.0, clock=clock)
    values = iter([None, {}, {"ok": 1}])
    assert run.wait(lambda: next(values), "a value") == {"ok": 1}

    def fails() -> None:
        raise DrillFailed("netskyd exited with status 1")

    start = clock.now
    with pytest.raises(DrillFailed, match="exited with status 1"):
        run.wait(fails, "never")
    assert clock.now == start  # no polling after a verdict


def test_steps_and_timings_are_recorded_and_echoed() -> None:
    clock = FakeClock()
    echoed: list[str] = []
    run = Run("x", 60.0, echo=echoed.append, clock=clock)
    since = clock.now
    clock.now += 1.2345
    run.step("fault", "kill -9 pid 7")
    assert run.timing("noticed_ms", since) == 1234.5
    assert run.steps == [{"t_ms": 1234.5, "step": "fault", "detail": "kill -9 pid 7"}]
    assert echoed == ["    1.2s  fault  kill -9 pid 7"]


def _fake(fn: Any, timings: tuple[str, ...] = ("a_ms",)) -> drills.Drill:
    return drills.Drill("fake", "a drill of nothing", fn, timings)


def test_a_drill_that_times_out_reports_fail_and_removes_its_sandbox() -> None:
    def drill(run: Run, box: Sandbox) -> None:
        box.configure(clones=3)
        run.wait(lambda: None, "a repair that never comes", poll_s=0.05)

    report = drills.run_drill(_fake(drill), deadline_s=0.3, environ={"NETSKY_HOME": "/nowhere"})
    assert report["verdict"] == "fail"
    assert "timed out" in report["reason"] and "a repair that never comes" in report["reason"]
    assert report["tmux_socket"].startswith("netsky-drill-")
    assert not Path(report["home"]).exists()
    steps = [s["step"] for s in report["steps"]]
    assert steps[0] == "sandbox" and "failed" in steps and steps[-1] == "teardown"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("boom"), "unexpected RuntimeError: boom"),
        (DrillFailed("agent0 never came back"), "agent0 never came back"),
        (KeyboardInterrupt(), "interrupted"),
    ],
)
def test_any_failure_is_a_fail_report_not_an_exception(error: BaseException, reason: str) -> None:
    def drill(run: Run, box: Sandbox) -> None:
        raise error

    report = drills.run_drill(_fake(drill), deadline_s=10)
    assert (report["verdict"], report["reason"]) == ("fail", reason)
    assert not Path(report["home"]).exists()


def test_a_drill_that_measures_everything_passes_and_keep_keeps_the_home() -> None:
    def drill(run: Run, box: Sandbox) -> None:
        run.timings_ms["a_ms"] = 12.5
        run.counts["tries"] = 3

    report = drills.run_drill(_fake(drill), deadline_s=10, keep=True)
    try:
        assert (report["verdict"], report["reason"]) == ("pass", "")
        assert Path(report["home"], "config.toml").exists() and report["kept"] is True
        assert drills.format_verdict(report).startswith("PASS fake in ")
        assert drills.format_verdict(report).endswith("(a 12 ms; tries 3)")
    finally:
        import shutil

        shutil.rmtree(report["home"], ignore_errors=True)


def test_reports_are_saved_under_drills_without_overwriting(tmp_path: Path) -> None:
    report = {"drill": "hang", "started_ts": "2026-11-21T10:15:00.123456Z", "verdict": "pass"}
    first = drills.save_report(report, tmp_path)
    second = drills.save_report(report, tmp_path)
    assert first.name == "20261121T101500Z-hang.json"
    assert second.name == "20261121T101500Z-hang-2.json"
    assert json.loads(first.read_text()) == report
    assert {p.name for p in (tmp_path / "drills").iterdir()} == {first.name, second.name}


def test_a_failed_report_reads_as_one_line_per_step_then_the_reason() -> None:
    report = {
        "drill": "hang",
        "verdict": "fail",
        "reason": "timed out after 30.0s waiting for the hang marker",
        "duration_ms": 31234.0,
        "timings_ms": {},
        "steps": [{"t_ms": 0.0, "step": "sandbox", "detail": "home /tmp/x"}],
    }
    assert drills.format_report(report).splitlines() == [
        "    0.0s  sandbox  home /tmp/x",
        "FAIL hang in 31.2s: timed out after 30.0s waiting for the hang marker",
    ]


def test_the_sandbox_config_is_toml_the_daemon_reads() -> None:
    settings = merge(FAST, {"legs": {"webhook": {"url": "http://127.0.0.1:1/p"}}, "clones": 0})
    text = "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in settings.items())
    parsed = tomllib.loads(text)
    assert parsed["legs"] == {
        "desktop": {"notify": False},
        "webhook": {"url": "http://127.0.0.1:1/p"},
    }
    assert parsed["clones"] == 0 and parsed["tick_interval_s"] == 1.0
    assert tomllib.loads(f"x = {toml_value({'a.b': [1, 'two', True]})}")["x"] == {
        "a.b": [1, "two", True]
    }
    from netskyd.config import Settings

    Settings(**parsed)  # every key is a real setting (extra="forbid")


def test_the_sandbox_never_passes_the_owners_netsky_settings_on() -> None:
    run = Run("x", 10.0)
    box = Sandbox(
        run, {"NETSKY_HOME": "/owner", "NETSKY_LEGS": "{}", "TMUX": "/s,1,0", "PATH": "/b"}
    )
    try:
        env = box.env
        assert env["NETSKY_HOME"] == str(box.home) != "/owner"
        assert env["NETSKY_TMUX_SOCKET"] == box.socket_name
        assert "NETSKY_LEGS" not in env and "TMUX" not in env and env["PATH"] == "/b"
    finally:
        box.teardown(keep=False)
    assert not box.home.exists()


def test_drill_list_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "list", "--json"], {"NETSKY_HOME": "/nowhere"}) == 0
    listed = json.loads(capsys.readouterr().out)["drills"]
    assert [d["drill"] for d in listed] == list(drills.DRILLS)
    assert main(["drill", "nope"], {}) == 2
    assert "unknown drill 'nope'" in capsys.readouterr().err
    assert main(["drill"], {}) == 2
    assert main(["drill", "hang", "--deadline", "0"], {}) == 2


def test_netskyctl_does_not_import_the_drills_until_asked() -> None:
    code = "import sys, client.netskyctl; print('client.drills' in sys.modules)"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert res.stdout.strip() == "False"


def test_a_deadline_met_inside_a_check_still_names_what_was_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("time.sleep", lambda s: setattr(clock, "now", clock.now + s))
    run = Run("x", 1.0, clock=clock)

    def rpc() -> None:
        run.budget_s(10.0)  # what every RPC of the sandbox does
        return None

    with pytest.raises(DrillFailed, match="waiting for agents ready") as e:
        run.wait(rpc, "agents ready")
    assert "deadline of 1s passed" in str(e.value)
