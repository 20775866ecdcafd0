"""Errors, each named after its condition, all under NetskyError (stdlib only)."""

from __future__ import annotations


class NetskyError(Exception):
    """Base of every error netsky raises on purpose."""


class ConfigError(NetskyError):
    """Raised when config.toml or a NETSKY_* variable cannot be read or is invalid."""


class DaemonAlreadyRunning(NetskyError):
    """Raised when another netskyd holds ``state/netskyd.lock`` for this NETSKY_HOME."""


class DaemonNotRunning(NetskyError):
    """Raised when the control socket is missing or refuses connections."""


class VersionSkew(NetskyError):
    """Raised when client and daemon speak different ``API_VERSION``s."""


class InboxFull(NetskyError):
    """Raised when a target inbox already holds ``inbox_max_pending`` envelopes."""


class EnvelopeTooLarge(NetskyError):
    """Raised when an envelope's text would exceed ``envelope_max_bytes``."""


class EnvelopeRejected(NetskyError):
    """Raised when an envelope fails validation; ``rule`` names the rule it broke."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


class UnknownAgent(NetskyError):
    """Raised when a name is not an agent id, or not part of the constellation."""


class PromptRenderError(NetskyError):
    """Raised when a prompt template fails to render (e.g. an unknown variable)."""


class SpawnFailed(NetskyError):
    """Raised when tmux could not create an agent's session."""


class ReadinessTimeout(NetskyError):
    """Raised when a spawned agent did not become ready before its deadline."""


class TmuxError(NetskyError):
    """Raised when a tmux command exits non-zero; the message carries its stderr."""


class TmuxTimeout(TmuxError):
    """Raised when a tmux command did not finish before its deadline."""


class SessionNotFound(TmuxError):
    """Raised when the tmux session an operation targets does not exist."""


class CorruptMarker(NetskyError):
    """Raised when a marker file is not valid JSON; it has been moved aside."""


class IllegalTransition(NetskyError):
    """Raised when the restart state machine is given an event its state cannot take."""


class RestartBusy(NetskyError):
    """Raised when a planned restart is asked for while one is already in flight."""


class HandoffPoisoned(NetskyError):
    """Raised when the bus poisoned a restart's handoff envelope."""


class McpLinkError(NetskyError):
    """Raised when an agent's MCP channel server refused, mangled or missed a delivery.

    ``maybe_delivered`` is False when nothing can have reached the agent.
    """

    def __init__(self, message: str, *, maybe_delivered: bool = True) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class UnknownIncident(NetskyError):
    """Raised when an incident id (or prefix) matches no single file in ``state/escalations/``."""


class GitError(NetskyError):
    """Raised when a git command fails or misses its deadline; the message has git's own
    last lines (``stderr``)."""


class ClonesFull(NetskyError):
    """Raised when a brief needs a clone and ``max_clones`` clones already hold work
    (a temporary failure: exit 75)."""


class UnknownClone(NetskyError):
    """Raised when a clone number or workspace names no dispatch (exit 2)."""


class HarvestRefused(NetskyError):
    """Raised when a harvest cannot start: the target has uncommitted changes, nothing to
    apply, or an unknown branch. Nothing was changed."""


class UnknownEntry(NetskyError):
    """Raised when a cron entry's name or a loop's id names nothing (exit 2)."""


class ScheduleFull(NetskyError):
    """Raised when a cron entry or loop would pass ``schedule_max_entries`` (exit 1)."""
