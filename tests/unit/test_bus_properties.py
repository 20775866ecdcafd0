"""Property tests (hypothesis) on validation and the drain: any bytes, any JSON, any file
type dropped into an inbox ends up delivered exactly as sent or poisoned with a reason,
and nothing ever escapes the drain as an exception."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsky_shared.errors import EnvelopeRejected
from netsky_shared.maildir import box_entries, new_envelope
from netsky_shared.paths import Paths
from netskyd.bus.validate import validate
from tests.busctx import bus_on

MAX = 2048

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _valid(text: str = "hello") -> dict[str, Any]:
    env = new_envelope("agent1", "agent0", "x")
    env.pop("_ts_ns")
    env["text"] = text
    return env


# Envelope-shaped objects with any field replaced, removed or added: most land near
# the schema's edges instead of far from it.
@st.composite
def near_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    env = _valid(draw(st.text(max_size=80)))
    env["id"] = draw(st.uuids()).hex
    for key in draw(st.lists(st.sampled_from(sorted(env)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["replace", "drop"]))
        if action == "drop":
            env.pop(key)
        else:
            env[key] = draw(
                json_values
                | st.sampled_from(
                    ["agent0", "agent2", "agentinfinity", "owner", "agent01", "", "message",
                     "2026-11-21T10:00:00Z", "2999-01-01T00:00:00Z", "<channel>"]
                )
            )
    if draw(st.booleans()):
        env[draw(st.text(max_size=5))] = draw(json_values)
    return env


entry = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=MAX + 64)),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("near"), near_envelopes()),
    st.tuples(st.just("text"), st.text(max_size=200).map(lambda t: ("good", t))),
    st.tuples(st.sampled_from(["symlink", "fifo", "dir", "dangling"]), st.none()),
)


def _materialise(inbox: Path, i: int, kind: str, value: Any) -> str:
    name = f"{time.time_ns()}-{i:03d}.json"
    p = inbox / name
    if kind == "bytes":
        p.write_bytes(value)
    elif kind == "json":
        p.write_text(json.dumps(value))
    elif kind == "near":
        p.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    elif kind == "text":
        env = _valid(value[1])
        env["id"] = os.urandom(16).hex()
        p.write_text(json.dumps(env, ensure_ascii=False), encoding="utf-8")
    elif kind == "symlink":
        target = inbox.parent / "target.json"
        target.write_text(json.dumps(_valid()))
        os.symlink(target, p)
    elif kind == "dangling":
        os.symlink(inbox / "missing", p)
    elif kind == "fifo":
        os.mkfifo(p)
    else:
        p.mkdir()
    return name


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entry, min_size=1, max_size=6))
def test_every_entry_is_delivered_as_sent_or_poisoned_with_a_reason(
    items: list[tuple[str, Any]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="netsky-prop-") as tmp:
        home = Path(tmp)
        paths = Paths(home)
        paths.ensure_channel("agent0")
        inbox = paths.channel("agent0", "inbox")
        names = [_materialise(inbox, i, kind, value) for i, (kind, value) in enumerate(items)]
        raw = {n: (inbox / n).read_bytes() for n in names if (inbox / n).is_file()
               and not (inbox / n).is_symlink()}

        async def main() -> None:
            async with bus_on(home, envelope_max_bytes=MAX) as (bus, rec):
                await bus.drain("agent0")  # must not raise, whatever the inbox holds
                delivered = {e.id: e for e in rec.delivered}
                box = {b: set(box_entries(paths.channel("agent0", b))) for b in
                       ("inbox", "claimed", "delivered", "poison")}
                assert not box["inbox"] and not box["claimed"]
                for n in names:
                    if n in box["delivered"]:
                        sent = json.loads(raw[n].decode("utf-8"))
                        got = delivered[sent["id"]]
                        # exactly as sent (in_reply_to is optional and defaults to null)
                        assert got.to_json() == {"in_reply_to": None, **sent}
                    else:
                        assert n in box["poison"], n
                        reason = json.loads(
                            (paths.channel("agent0", "poison") / f"{n}.reason.json").read_text()
                        )
                        assert reason["rule"] and reason["detail"] is not None and reason["ts"]

        anyio.run(main)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX + 16))
def test_validate_raises_only_envelope_rejected(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="netsky-prop-") as tmp:
        p = Path(tmp) / "x.json"
        p.write_bytes(data)
        try:
            env = validate(p, "agent0", MAX, now=time.time())
        except EnvelopeRejected as e:
            assert e.rule
        else:
            assert env.to == "agent0"
