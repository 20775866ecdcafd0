"""What Messages.app is told when netsky sends an iMessage (stdlib only).

Shared by the ``imessage`` page leg (netskyd.escalation.legs.imessage) and the owner's
line (netskyd.owner.imessage), so both send the same way.
"""

from __future__ import annotations

#: The AppleScript of one send, line by line (osascript takes each after an ``-e``).
#: ``argv`` item 1 is the text, item 2 the recipient (a +E.164 phone number or an Apple
#: ID): both travel as osascript arguments after the script, so nothing a message says is
#: ever spliced into the script. Sends through the first iMessage account.
SEND_SCRIPT: tuple[str, ...] = (
    "on run argv",
    'tell application "Messages"',
    "send (item 1 of argv) to participant (item 2 of argv) "
    "of (1st account whose service type = iMessage)",
    "end tell",
    "end run",
)
