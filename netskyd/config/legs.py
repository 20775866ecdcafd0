"""Escalation legs: the ways a page reaches the owner (ARCHITECTURE.md, "Escalation").

Each leg is configured in ``config.toml`` under ``[legs.<name>]`` (the name is the
leg's type unless ``type`` says otherwise, so two webhooks can be ``[legs.ntfy]`` and
``[legs.slack]`` with ``type = "webhook"``). Credentials are never written in the file
or in code: a secret field takes a reference, ``{ env = "VAR" }`` or
``{ file = "~/.config/netsky/smtp-password" }``, resolved when the leg runs.

``netskyd.escalation.legs.send(name, leg, page, ctx)`` runs one leg once and returns a LegResult
whose ``status`` is ``delivered``, ``failed`` (worth retrying: the server said no, timed out,
refused) or ``unavailable`` (this leg cannot work here: not macOS, a credential variable not set, no
tmux server). It never raises for a leg's own trouble and it never waits longer than
``ctx.timeout_s``.

Legs (docs/escalation.md has the examples, Gmail's among them):

- ``imessage``: ``osascript`` tells Messages.app to send the text to each of ``to``;
  ``unavailable`` on anything but macOS.
- ``email``: SMTP through aiosmtplib; ``security`` is ``starttls`` (port 587),
  ``tls`` (implicit TLS, port 465) or ``none`` (port 25, local relays only).
- ``webhook``: an HTTP POST through httpx; ``format = "json"`` posts the Page as JSON,
  ``format = "text"`` posts the text with ``Title``/``Priority``/``Tags`` headers
  (ntfy's convention). 2xx is delivered.
- ``desktop``: the sentinel file (default ``$NETSKY_HOME/OWNER-PAGE.txt``) lists every
  open incident and is removed when none is open; plus a desktop notification
  (``notify-send`` where a display or session bus exists, ``osascript`` on macOS)
  when ``notify`` is on. The file is what counts as delivered.
- ``tmux``: ``display-message`` on every attached client of netsky's tmux server and a
  marker in the status line (``status-right`` gains ``#{@netsky-page}`` while any
  incident is open; the owner's own ``status-right`` is kept and put back).

``desktop`` and ``tmux`` need no settings and are on unless configured with
``enabled = false``; the others are on once configured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Severities, lowest first. A leg takes pages at or above its ``min_severity``.
SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
Status = Literal["delivered", "failed", "unavailable"]
#: Legs that need no configuration and are on by default.
DEFAULT_ON = ("desktop", "tmux")
LEG_TYPES = ("imessage", "email", "webhook", "desktop", "tmux")


def severity_rank(severity: str) -> int:
    """0 for info, 1 warning, 2 critical. Raises ValueError for anything else."""
    return SEVERITIES.index(severity)


class LegUnavailable(Exception):  # noqa: N818 - a status, like StopIteration
    """Raised inside a leg when it cannot work here; becomes ``unavailable: <message>``."""


class SecretRef(BaseModel):
    """A credential by reference: ``{env = "VAR"}`` or ``{file = "path"}`` (exactly one).

    The file's content is stripped of surrounding whitespace.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError('a secret is { env = "VAR" } or { file = "path" }, exactly one')
        return self

    def describe(self) -> str:
        """``env NAME`` or ``file PATH`` (for messages; never the secret itself)."""
        return f"env {self.env}" if self.env is not None else f"file {self.file}"

    def resolve(self, environ: Mapping[str, str]) -> str:
        """The secret. Raises LegUnavailable naming the variable or file when it is
        unset, empty or unreadable."""
        if self.env is not None:
            value = environ.get(self.env, "")
            if not value:
                raise LegUnavailable(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        path = self.file.expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise LegUnavailable(f"cannot read {path}: {e.strerror or e}") from None
        if not value:
            raise LegUnavailable(f"{path} is empty")
        return value


def _secret(v: object) -> object:
    if isinstance(v, str):
        raise ValueError(
            'credentials are given by reference, { env = "VAR" } or { file = "path" }, '
            "never in the file itself"
        )
    return v


class ByReference(BaseModel):
    """A model whose ``SECRET_FIELDS`` take a credential only by reference (SecretRef):
    a plain string there is refused with the reason, before any other validation."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _refs(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for key in cls.SECRET_FIELDS:
                if key in v:
                    _secret(v[key])
        return v


class _Leg(ByReference):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    #: Pages below this severity skip the leg.
    min_severity: Severity = "warning"


class IMessageLeg(_Leg):
    type: Literal["imessage"] = "imessage"
    #: Phone numbers or Apple IDs to send to.
    to: list[str] = Field(min_length=1)
    #: The osascript binary (tests point it elsewhere).
    command: str = "osascript"


class EmailLeg(_Leg):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    SECRET_FIELDS = ("password",)

    type: Literal["email"] = "email"
    host: str
    #: None: 587 for starttls, 465 for tls, 25 for none.
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretRef | None = None
    #: The From address (TOML key ``from``).
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    #: A CA bundle to trust instead of the system's (a private relay's certificate).
    ca_file: Path | None = None

    def effective_port(self) -> int:
        """``port``, else the usual one for ``security``."""
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class WebhookLeg(_Leg):
    SECRET_FIELDS = ("token",)

    type: Literal["webhook"] = "webhook"
    #: The URL, or a reference to it (an ntfy topic URL is itself a secret).
    url: str | SecretRef
    format: Literal["json", "text"] = "json"
    #: Extra headers (not secrets; use ``token`` for those).
    headers: dict[str, str] = Field(default_factory=dict)
    #: Sent as ``Authorization: Bearer <token>``.
    token: SecretRef | None = None
    ca_file: Path | None = None



class DesktopLeg(_Leg):
    type: Literal["desktop"] = "desktop"
    min_severity: Severity = "info"
    #: The sentinel file; None = ``$NETSKY_HOME/OWNER-PAGE.txt``.
    path: Path | None = None
    #: Also raise a desktop notification where one exists.
    notify: bool = True


class TmuxLeg(_Leg):
    type: Literal["tmux"] = "tmux"
    min_severity: Severity = "info"
    #: Keep a marker in the status line while an incident is open.
    status_line: bool = True
    #: How long the message stays on each client, in milliseconds.
    display_ms: int = Field(default=15_000, ge=0)


Leg = Annotated[
    IMessageLeg | EmailLeg | WebhookLeg | DesktopLeg | TmuxLeg, Field(discriminator="type")
]


def with_types(raw: object) -> object:
    """Fill in ``type`` from the table name where it is missing (``[legs.email]``).

    Raises ValueError for a table whose name is not a leg type and that has no ``type``.
    """
    if not isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, dict) and "type" not in value:
            if name not in LEG_TYPES:
                raise ValueError(
                    f"legs.{name}: give its type ({', '.join(LEG_TYPES)}); "
                    "the table name is only the type when it is one of those"
                )
            value = {**value, "type": name}
        out[name] = value
    return out


def configured(legs: dict[str, Any]) -> dict[str, Any]:
    """The legs that run: the configured ones that are enabled, plus ``desktop`` and
    ``tmux`` unless configured (then as configured). Order: as given, defaults last."""
    out = {n: leg for n, leg in legs.items() if leg.enabled}
    for name in DEFAULT_ON:
        if name not in legs:
            out[name] = DesktopLeg() if name == "desktop" else TmuxLeg()
    return out


@dataclass(frozen=True)
class Page:
    """What every leg sends. ``kind``: ``page`` (a new incident or a re-page after the
    quiet period), ``retry`` (a leg that failed, tried again) or ``all-clear``.

    ``open_incidents`` lists ``{"id", "subject", "severity", "opened_ts",
    "ack_command"}`` for every incident open after this page (the desktop sentinel
    and the tmux marker show them).
    """

    kind: Literal["page", "retry", "all-clear"]
    incident: str
    key: str
    subject: str
    body: str
    severity: Severity
    ts: str
    #: The command that acknowledges the incident, e.g. ``netskyctl ack 2026...-1a2b3c4d``.
    ack_command: str
    host: str
    home: str
    open_incidents: tuple[dict[str, str], ...] = ()

    def title(self) -> str:
        """One line: ``[netsky] <subject>`` or ``[netsky] all clear: <subject>``."""
        if self.kind == "all-clear":
            return f"[netsky] all clear: {self.subject}"
        return f"[netsky] {self.subject}"

    def text(self) -> str:
        """The message: the body, then the incident id, the ack command and the host."""
        if self.kind == "all-clear":
            return (
                f"{self.body}\n\nIncident {self.incident} ({self.key}) is closed; "
                f"nothing to acknowledge.\nHost: {self.host}  NETSKY_HOME: {self.home}"
            )
        return (
            f"{self.body}\n\nIncident: {self.incident} (key {self.key}, "
            f"severity {self.severity})\nAcknowledge: {self.ack_command}\n"
            f"Host: {self.host}  NETSKY_HOME: {self.home}"
        )

    def to_json(self) -> dict[str, Any]:
        """The Page as a JSON object (``python -m netskyd.escalation.legs`` reads it back)."""
        d = asdict(self)
        d["open_incidents"] = list(self.open_incidents)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Page:
        """The inverse of ``to_json`` (no validation: callers validate)."""
        return cls(**{**d, "open_incidents": tuple(d.get("open_incidents", ()))})


@dataclass(frozen=True)
class LegContext:
    """What a leg may use besides its config: the environment (for secrets), the
    deadline, the home and netsky's tmux socket (None = the default server)."""

    environ: dict[str, str]
    timeout_s: float
    home: Path
    tmux_socket: str | None
    platform: str = field(default_factory=lambda: sys.platform)


@dataclass(frozen=True)
class LegResult:
    """One leg's outcome: ``status``, ``reason`` (None when delivered, or a note such
    as "no attached clients"), and how long it took in milliseconds."""

    leg: str
    status: Status
    reason: str | None
    duration_ms: float

    def describe(self) -> str:
        """``delivered``, ``failed: reason`` or ``unavailable: reason``."""
        if self.status == "delivered":
            return "delivered" + (f" ({self.reason})" if self.reason else "")
        return f"{self.status}: {self.reason}"


def elapsed_ms(t0: float) -> float:
    """Milliseconds since the ``time.monotonic()`` reading ``t0``, to 0.1 ms."""
    return round((time.monotonic() - t0) * 1000, 1)
