"""``netskyctl channel replay AGENT --since T``: paste again what was delivered since (stdlib only).

The one bus command that needs netskyd: the daemon pastes the envelopes of ``delivered/``
from ``--since`` on again, each batch waiting for the agent to take the one before
(docs/bus.md, "Operator commands").
"""

from __future__ import annotations

import re
import time

from client.common import Usage, home_of, out
from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.ids import parse_agent, rfc3339
from netsky_shared.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

_RELATIVE_RE = re.compile(r"(?:[0-9]+[smhd])+")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RFC3339_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_since(value: str, now_s: float | None = None) -> str:
    """Turn ``--since`` into an RFC 3339 UTC string with microseconds (``...000000Z``).

    ``value`` is RFC 3339 (``2026-11-21T10:00:00Z``, ``...+02:00``) or an age before
    ``now_s`` (seconds since the epoch, default now): ``30s``, ``10m``, ``2h``,
    ``1d``, or a sum such as ``1h30m``. The output has the envelope ``ts`` format,
    so it compares with envelope timestamps as strings too. Raises Usage.
    """
    from datetime import UTC, datetime

    v = value.strip()
    try:
        if _RELATIVE_RE.fullmatch(v):
            age_s = sum(int(n) * _UNIT_S[u] for n, u in re.findall(r"([0-9]+)([smhd])", v))
            now_s = time.time() if now_s is None else now_s
            dt = datetime.fromtimestamp(now_s - age_s, tz=UTC)
        else:
            m = _RFC3339_RE.fullmatch(v)
            if m is None:
                raise ValueError(v)
            date, hms, frac, zone = m.groups()
            frac = (frac or ".0")[:7]  # datetime keeps microseconds
            zone = "+00:00" if zone in ("Z", "z") else zone
            dt = datetime.fromisoformat(f"{date}T{hms}{frac}{zone}").astimezone(UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise Usage(
            f"--since {value!r}: expected RFC 3339 (2026-11-21T10:00:00Z) "
            "or an age like 30s, 10m, 2h, 1d"
        ) from e
    return rfc3339(dt)


def cmd_channel_replay(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    agent = parse_agent(args.agent)
    since = parse_since(args.since)  # usage errors before any connection attempt
    with Client(socket_path(home_of(environ))) as client:
        res = client.call(protocol.CHANNEL_REPLAY, {"agent": agent, "since": since}, 60.0)
    n = res["count"]
    out(args, res, f"replayed {n} envelope{'' if n == 1 else 's'} to {agent} (since {since})")
    return 0
