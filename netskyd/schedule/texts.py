"""What a fire says to its agent, pure (docs/schedule.md, "What the agent sees").

The envelope's ``from`` (``agentcron`` / ``agentloop``) and ``kind`` already say who
speaks; the text opens with one bracketed line naming the entry, then the owner's text,
then, for a late fire only, a line saying how late and how many slots it stands for.
"""

from __future__ import annotations

from netsky_shared.ids import format_uptime, rfc3339
from netskyd.schedule.plan import ON_TIME_S, Fire


def late_note(fire: Fire) -> str:
    """``""`` for an on-time fire; else one line: how late, the slot (UTC), and how many
    earlier slots it stands in for."""
    if fire.late_s <= ON_TIME_S and fire.missed == 0:
        return ""
    note = f"(netsky: late by {format_uptime(fire.late_s)}, slot {rfc3339(fire.slot, digits=0)}"
    if fire.missed:
        s = "" if fire.missed == 1 else "s"
        note += f"; it stands for {fire.missed} earlier slot{s} missed while netskyd was down"
    return note + ")"


def cron_text(name: str, text: str, fire: Fire, *, by_hand: bool = False) -> str:
    """The text of a ``cron`` envelope for entry ``name``."""
    head = f"[cron {name}{', run by hand' if by_hand else ''}]"
    return "\n".join(p for p in (head, text, late_note(fire)) if p)


def loop_text(loop_id: int, text: str, fire: Fire, nth: int, count: int | None) -> str:
    """The text of a ``loop`` envelope: loop ``loop_id``'s ``nth`` fire (of ``count``)."""
    of = f" of {count}" if count is not None else ""
    head = f"[loop {loop_id}, fire {nth}{of}]"
    return "\n".join(p for p in (head, text, late_note(fire)) if p)
