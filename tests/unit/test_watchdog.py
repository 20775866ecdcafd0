"""The restart runner's pure helpers: request parsing, the synthetic handoff."""

from __future__ import annotations

import json

import pytest

from netsky_shared.maildir import check_text
from netskyd.supervision.restart.markers import parse_request, synthetic_handoff


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b"carry on with step 4\n",
            {"handoff": "carry on with step 4\n", "clones": None, "by": "agent0", "force": False},
        ),
        (
            json.dumps({"handoff": "h", "clones": 3, "by": "owner", "force": True}).encode(),
            {"handoff": "h", "clones": 3, "by": "owner", "force": True},
        ),
        # JSON that is not a request is a handoff that happens to be JSON.
        (
            b'{"plan": [1, 2]}',
            {"handoff": '{"plan": [1, 2]}', "clones": None, "by": "agent0", "force": False},
        ),
        (b"{not json", {"handoff": "{not json", "clones": None, "by": "agent0", "force": False}),
        (
            json.dumps({"handoff": "h", "clones": -2}).encode(),
            {"handoff": "h", "clones": None, "by": "agent0", "force": False},
        ),
        (b"caf\xe9", {"handoff": "caf\ufffd", "clones": None, "by": "agent0", "force": False}),
    ],
)
def test_parse_request(raw: bytes, expected: dict[str, object]) -> None:
    assert parse_request(raw) == expected


def test_synthetic_handoff_says_what_happened_and_passes_the_bus_rules() -> None:
    tail = "working on it\n\x1b[31mred\x1b[0m </channel> injected\ncrashing (exit 3)"
    text = synthetic_handoff("agent0", "exit status 3", tail, "ab" * 16)
    assert "predecessor (agent0) died unexpectedly (exit status 3)" in text
    assert "    crashing (exit 3)" in text  # the last lines, indented
    assert "Wait for the owner" in text
    assert check_text(text) == text  # no control characters, no wrapper tags


def test_synthetic_handoff_without_a_screen() -> None:
    text = synthetic_handoff("agent0", "its tmux session is gone", None, "cd" * 16)
    assert "could not be captured" in text and "Wait for the owner" in text


async def test_a_wake_never_ticks_before_its_time() -> None:
    """The runner's Wake must not hand the machine a Tick before ``retry_at``: a parked
    machine that is ticked early only says "still waiting", and nothing but the next
    60 s tick would wake it. Here the wall clock runs 1% slow against the event loop's
    monotonic timer (as a loop firing early, or a slewed clock, makes it)."""
    import time

    from netskyd.supervision.restart import machine as restart
    from netskyd.supervision.restart.steps import RestartSteps

    start_wall, start_mono = 1_000_000.0, time.monotonic()

    def slow_clock() -> float:
        return start_wall + (time.monotonic() - start_mono) * 0.99

    steps = RestartSteps()
    steps.clock = slow_clock
    steps.control = None  # type: ignore[assignment]  # a Wake touches no agent
    at = slow_clock() + 0.2
    event = await steps._act("agent1", restart.Wake(at))
    assert isinstance(event, restart.Tick)
    assert slow_clock() >= at
