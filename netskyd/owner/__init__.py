"""The owner's line (docs/owner.md): inbound sources for agent0 (email over IMAP, iMessage
from the Messages database) and the outbound verbs (iMessage, email, drafts)."""
