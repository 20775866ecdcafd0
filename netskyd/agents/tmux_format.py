"""tmux text, pure: the format netsky lists panes with, its parsers, hook commands, quoting.

Nothing here runs tmux; ``netskyd.agents.tmux`` (the port) does, with these. Kept apart so the
port stays small and these rules can be tested with tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FMT = (
    "#{session_name}\t#{session_id}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{session_created}"
    "\t#{pane_dead_status}"
)
FMT_FIELDS = 7
#: Index in each hook array that netsky owns: re-installing replaces only that entry,
#: and the user's own hooks (index 0, or set with ``-a``) are never touched.
HOOK_INDEX = 4242
#: Sessions the hooks report on (tmux regex; ``{`` and ``,`` would break the format, so
#: the clone-number range is checked by the receiver, ``netsky_shared.ids.is_agent_id``).
HOOK_SESSION_RE = "^agent([0-9]+|infinity)$"


@dataclass(frozen=True)
class PaneInfo:
    """The first pane of one tmux session.

    ``pane_dead`` is True once the pane's process has gone (its pty closed); the pane
    itself stays only with ``remain-on-exit``. ``dead_status`` is the exit status of a
    dead pane's process, None while it runs, when it was killed by a signal (tmux 3.3
    reports no status then) or when tmux has not reaped it yet.
    """

    session: str
    session_id: str
    pane_id: str
    pane_pid: int
    pane_dead: bool
    created: int
    dead_status: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """One tick's view of the server: every session's first pane and some captures.

    ``panes``: session name -> PaneInfo, as ``Tmux.list_panes``. ``captures``: session
    name -> pane text, as ``Tmux.capture(name, lines)``, for each requested name that
    exists (a missing session has no entry).
    """

    panes: dict[str, PaneInfo] = field(default_factory=dict)
    captures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """What ``Tmux.nudge_unreaped`` saw.

    ``server_pid``: the tmux server's pid (None: no server, or no pane). ``sessions``:
    every session's name. ``dead``: session -> exit status (None: killed by a signal)
    of each session whose first pane is dead and reaped. ``unreaped``: sessions with a
    dead pane tmux had not reaped (each nudged).
    """

    server_pid: int | None = None
    sessions: frozenset[str] = frozenset()
    dead: dict[str, int | None] = field(default_factory=dict)
    unreaped: tuple[str, ...] = ()


def int_or_none(text: str) -> int | None:
    """``int(text)``, or None when ``text`` is empty or not an integer."""
    try:
        return int(text)
    except ValueError:
        return None


def parse_pane(line: str) -> PaneInfo | None:
    """Parse one ``FMT`` line; None when it does not have the expected fields."""
    parts = line.split("\t")
    if len(parts) != FMT_FIELDS:
        return None
    return PaneInfo(
        session=parts[0],
        session_id=parts[1],
        pane_id=parts[2],
        pane_pid=int(parts[3] or 0),
        pane_dead=parts[4] == "1",
        created=int(parts[5] or 0),
        dead_status=int_or_none(parts[6]),
    )


def parse_panes(out: str) -> dict[str, PaneInfo]:
    """Parse ``list-panes -a -F FMT`` output: the first pane of each session, by name."""
    panes: dict[str, PaneInfo] = {}
    for line in out.splitlines():
        pane = parse_pane(line)
        if pane is not None and pane.session not in panes:
            panes[pane.session] = pane
    return panes


def tmux_quote(text: str) -> str:
    """Quote ``text`` as one word for tmux's command parser (``tmux(1)``, "PARSING SYNTAX").

    Single quotes keep everything literal (no ``$VAR``/``~`` expansion, no ``;``, ``#``
    or ``{`` meaning); an embedded single quote closes the quotes, is escaped and
    reopens them, which tmux joins into one word as sh does (checked on tmux 3.3a).
    """
    return "'" + text.replace("'", "'\\''") + "'"


def hook_commands(command: str) -> dict[str, str]:
    """The tmux command each netsky hook runs, by hook name.

    ``command`` is a shell command line (already shell-quoted, e.g. from
    ``netskyd.agents.sessions.hook_command``); each hook appends ``EVENT SESSION [STATUS]``.
    Facts these rely on (tmux 3.3a, verified): a *global* ``pane-died`` hook sees the
    dead pane's ``#{session_name}`` and ``#{pane_dead_status}`` (``#{hook_session_name}``
    is empty there); only a *global* ``session-closed`` hook fires (a session's own is
    gone with it), with the closed name in ``#{hook_session_name}`` (``#{session_name}``
    is some other session). ``if-shell -F`` filters in the server, so the user's other
    sessions cost no process. ``run-shell`` expands formats (so a literal ``#`` in
    ``command`` is doubled), runs ``/bin/sh -c``, and would show any output or a
    non-zero exit in a pane: hence the redirection and ``|| true``.
    """
    base = command.replace("#", "##")
    quiet = " >/dev/null 2>&1 || true"
    match = "#{m/r:" + HOOK_SESSION_RE + ",%s}"
    died = f"{base} pane-died #{{session_name}} #{{pane_dead_status}}{quiet}"
    closed = f"{base} session-closed #{{hook_session_name}}{quiet}"
    return {
        "pane-died": (
            f"if-shell -F {tmux_quote(match % '#{session_name}')} "
            f"{{ run-shell -b {tmux_quote(died)} }}"
        ),
        "session-closed": (
            f"if-shell -F {tmux_quote(match % '#{hook_session_name}')} "
            f"{{ run-shell -b {tmux_quote(closed)} }}"
        ),
    }


def split_captures(out: str, token: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """Split batched output at the marker lines ``<token> <index>``.

    Returns (the text before the first marker, {name: the text after its marker}).
    Each marker line follows a complete line, so splitting at ``"\\n<token> "``
    (``str.split``: a fifth of a regex's time on 800 kB) takes one newline from the
    text before it, which is put back.
    """
    pieces = ("\n" + out).split(f"\n{token} ")
    head = pieces[0][1:] + "\n" if pieces[0] else ""
    if len(pieces) == 1:
        return out, {}
    captures: dict[str, str] = {}
    last = len(pieces) - 1
    for i, piece in enumerate(pieces[1:], start=1):
        index, sep, text = piece.partition("\n")
        if sep and i < last:  # no newline: an empty capture (the marker's was taken)
            text += "\n"
        n = int_or_none(index)
        if n is not None and 0 <= n < len(names):
            captures[names[n]] = text
    return head, captures
