"""``netskyd.periodic.every``: the drift-free grid every periodic loop runs on.

Deterministic: a fake monotonic clock, and ``anyio.sleep`` replaced by one that moves
that clock on by exactly what was asked; the work moves it on by its own duration.
"""

from __future__ import annotations

import pytest

from netskyd import periodic


class Stop(Exception):
    pass


class Rig:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, work_s: float, runs: int) -> None:
        self.now = 100.0
        self.work_s = work_s
        self.runs = runs
        self.at: list[float] = []

        async def sleep(seconds: float) -> None:
            assert seconds >= 0
            self.now += seconds

        monkeypatch.setattr(periodic.anyio, "sleep", sleep)

    def clock(self) -> float:
        return self.now

    async def work(self) -> None:
        self.at.append(round(self.now - 100.0, 6))
        if len(self.at) == self.runs:
            raise Stop
        self.now += self.work_s


async def test_runs_on_the_grid_whatever_the_work_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(monkeypatch, work_s=0.3, runs=5)
    with pytest.raises(Stop):
        await periodic.every(1.0, rig.work, at_once=True, clock=rig.clock)
    assert rig.at == [0.0, 1.0, 2.0, 3.0, 4.0]  # not 0, 1.3, 2.6, ...: no drift


async def test_an_overrun_skips_missed_slots_instead_of_bunching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(monkeypatch, work_s=1.5, runs=4)
    with pytest.raises(Stop):
        await periodic.every(1.0, rig.work, clock=rig.clock)
    assert rig.at == [1.0, 3.0, 5.0, 7.0]  # first one period in; 2, 4, 6 were missed


async def test_the_period_is_read_again_before_each_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(monkeypatch, work_s=0.0, runs=4)
    periods = iter([1.0, 1.0, 0.5, 0.5])
    with pytest.raises(Stop):
        await periodic.every(lambda: next(periods), rig.work, clock=rig.clock)
    assert rig.at == [1.0, 2.0, 2.5, 3.0]


async def test_a_period_that_is_not_positive_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(monkeypatch, work_s=0.0, runs=3)
    with pytest.raises(ValueError, match="positive"):
        await periodic.every(0.0, rig.work, clock=rig.clock)
