"""The dialog handler answers each dialog instance at most once (property tests).

An *instance* is defined here independently of the handler's bookkeeping, from
the observations alone: two answers of dialog D on one session belong to
different instances only if, between them, D was seen absent and the next
sighting of D (or the last absent observation) came ``gone_s`` or more after the
first absent observation. Any sequence of screens — flicker, redraws with the
highlight moved, other dialogs in between, long gaps between observations,
session changes — must respect that.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from netskyd.activity.dialogs import Dialog, DialogHandler, Step
from netskyd.runtimes.catalogue import DIALOGS

SETTLE_S, GONE_S = 0.5, 3.0
NAMES = ("claude.folder-trust", "claude.permission", "codex.approval")


def dialog(name: str, key: str) -> Dialog:
    return Dialog(DIALOGS[name], (f"{name} {key}",), (), key)


@dataclass(frozen=True)
class Obs:
    t: float
    session: str
    shown: tuple[str, str] | None  # (name, content key) or nothing


observations = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.05, 0.1, 0.4, 0.6, 1.0, 2.9, 3.0, 3.1, 60.0]),
        st.sampled_from(["s1", "s1", "s1", "s1", "s2"]),
        st.one_of(
            st.none(),
            st.tuples(st.sampled_from(NAMES), st.sampled_from(["k1", "k2", "k3"])),
        ),
    ),
    min_size=1,
    max_size=60,
)


def run(seq: list[tuple[float, str, tuple[str, str] | None]]) -> tuple[list[Obs], list[int]]:
    """Feed the handler; answer whenever it says so. Returns observations and the
    indexes at which an answer was sent."""
    handler = DialogHandler(settle_s=SETTLE_S, gone_s=GONE_S)
    t = 0.0
    obs, answers = [], []
    for i, (dt, session, shown) in enumerate(seq):
        t += dt
        obs.append(Obs(t, session, shown))
        d = dialog(*shown) if shown else None
        step = handler.observe("agent1", session, d, t)
        if step is Step.ANSWER:
            assert d is not None
            handler.answered("agent1", d.name)
            answers.append(i)
    return obs, answers


def new_instance_between(obs: list[Obs], i: int, j: int, name: str) -> bool:
    """True when the observations after ``i`` up to ``j`` show ``name`` going away
    for ``gone_s`` or more (or the session changing) before its sighting at ``j``."""
    absent_since: float | None = None
    for k in range(i + 1, j + 1):
        o = obs[k]
        if o.session != obs[i].session:
            return True
        shows = o.shown is not None and o.shown[0] == name
        if not shows:
            if absent_since is None:
                absent_since = o.t
            elif o.t - absent_since >= GONE_S:
                return True
        else:
            if absent_since is not None and o.t - absent_since >= GONE_S:
                return True
            absent_since = None
    return False


@settings(max_examples=400, deadline=None)
@given(observations)
def test_no_sequence_answers_one_instance_twice(
    seq: list[tuple[float, str, tuple[str, str] | None]],
) -> None:
    obs, answers = run(seq)
    for x, i in enumerate(answers):
        for j in answers[x + 1 :]:
            shown_i, shown_j = obs[i].shown, obs[j].shown
            assert shown_i is not None and shown_j is not None
            if shown_i[0] != shown_j[0]:
                continue
            assert new_instance_between(obs, i, j, shown_i[0]), (
                f"{shown_i[0]} answered at t={obs[i].t} and again at t={obs[j].t} "
                "without going away in between"
            )


@settings(max_examples=200, deadline=None)
@given(observations)
def test_every_answer_follows_a_stable_screen(
    seq: list[tuple[float, str, tuple[str, str] | None]],
) -> None:
    """Debounce: an answer only after the same dialog, drawn the same, for settle_s."""
    obs, answers = run(seq)
    for j in answers:
        shown = obs[j].shown
        k = j
        while k > 0 and obs[k - 1].shown == shown and obs[k - 1].session == obs[j].session:
            k -= 1
        assert obs[j].t - obs[k].t >= SETTLE_S


def test_a_dialog_that_stays_up_after_its_answer_is_never_answered_again() -> None:
    handler = DialogHandler(settle_s=SETTLE_S, gone_s=GONE_S)
    d = dialog("claude.permission", "k1")
    steps = [handler.observe("agent1", "s", d, t) for t in (0.0, 0.6)]
    assert steps == [Step.SETTLING, Step.ANSWER]
    handler.answered("agent1", d.name)
    # 129 more screens of the same prompt, an hour apart: nothing more is sent.
    assert {handler.observe("agent1", "s", d, 0.6 + 3600 * n) for n in range(1, 130)} == {Step.DONE}


def test_gone_and_back_is_a_new_instance() -> None:
    handler = DialogHandler(settle_s=SETTLE_S, gone_s=GONE_S)
    d = dialog("claude.permission", "k1")
    handler.observe("agent1", "s", d, 0.0)
    assert handler.observe("agent1", "s", d, 1.0) is Step.ANSWER
    handler.answered("agent1", d.name)
    assert handler.instance("agent1", d.name) == "claude.permission#1"
    assert handler.observe("agent1", "s", None, 2.0) is Step.NONE
    assert handler.observe("agent1", "s", d, 2.5) is Step.DONE  # a flicker, not a new one
    assert handler.observe("agent1", "s", None, 3.0) is Step.NONE
    assert handler.observe("agent1", "s", d, 9.0) is Step.SETTLING  # gone 6 s: new
    assert handler.instance("agent1", d.name) == "claude.permission#2"
    assert handler.observe("agent1", "s", d, 9.6) is Step.ANSWER
