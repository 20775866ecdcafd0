"""netskyctl's bus commands: ``channel send|ls|peek|poison|retry|replay`` (stdlib only).

All but ``replay`` work on the files under ``channels/agent/`` themselves, so they
work while netskyd is down; ``replay`` asks the daemon to paste again.

client.netskyctl imports this module only for ``channel`` and runs
``CHANNEL_COMMANDS[args.channel_command](args, environ)``. The commands live by group:
client.send (``send``), client.boxes (``ls``, ``peek`` and the readers of the bus's files),
client.poison (``poison``, ``retry``), client.replay (``replay``); their names stay
importable from here.
"""

from __future__ import annotations

from client.boxes import (
    COUNTS,
    DB_TIMEOUT_S,
    REASON_SUFFIX,
    channel_agents,
    channel_counts,
    cmd_channel_ls,
    cmd_channel_peek,
    peek,
    poisoned_names,
    read_json_file,
    unconsumed_records,
)
from client.common import preview
from client.poison import (
    REASON_MAX_BYTES,
    AmbiguousMatch,
    NoMatch,
    NotRetryable,
    cmd_channel_poison,
    cmd_channel_retry,
    find_poisoned,
    poisoned,
    retry,
)
from client.replay import cmd_channel_replay, parse_since
from client.send import UnreadableInput, cmd_channel_send

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

__all__ = [
    "CHANNEL_COMMANDS",
    "COUNTS",
    "DB_TIMEOUT_S",
    "REASON_MAX_BYTES",
    "REASON_SUFFIX",
    "AmbiguousMatch",
    "NoMatch",
    "NotRetryable",
    "UnreadableInput",
    "channel_agents",
    "channel_counts",
    "cmd_channel_ls",
    "cmd_channel_peek",
    "cmd_channel_poison",
    "cmd_channel_replay",
    "cmd_channel_retry",
    "cmd_channel_send",
    "find_poisoned",
    "parse_since",
    "peek",
    "poisoned",
    "poisoned_names",
    "preview",
    "read_json_file",
    "retry",
    "unconsumed_records",
]

#: ``channel`` subcommand -> the function that runs it (``(args, environ) -> exit code``).
CHANNEL_COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "send": cmd_channel_send,
    "ls": cmd_channel_ls,
    "peek": cmd_channel_peek,
    "poison": cmd_channel_poison,
    "retry": cmd_channel_retry,
    "replay": cmd_channel_replay,
}
