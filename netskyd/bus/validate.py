"""The bus's validation step: one claimed file in, one Envelope out or a named rule broken.

Rules, in the order they are checked (ARCHITECTURE.md, "The agent bus", step 3;
each is the ``rule`` of the EnvelopeRejected raised and of ``<name>.reason.json``):

=====================  ==========================================================
``not-regular-file``   a symlink, FIFO, directory, socket or device (never opened)
``too-large``          over ``envelope_max_bytes``, checked with lstat before reading
``unreadable``         the file could not be opened or read (OSError)
``not-utf8``           the bytes are not UTF-8
``not-json``           the text is not JSON
``schema``             not an envelope object (missing/extra/mistyped fields)
``bad-agent-id``       ``from`` or ``to`` is not an agent id (or, for ``from``, a
                       pseudo-sender such as ``owner``)
``bad-timestamp``      ``ts`` is not RFC 3339 with a zone
``wrapper-injection``  the text contains ``<channel`` or ``</channel>``
``control-characters`` the text contains C0/C1 controls other than tab and newline
                       (an ESC could end the bracketed paste and type keys)
``wrong-recipient``    ``to`` is not the owner of the inbox it was found in
``future-timestamp``   ``ts`` is more than ``envelope_future_skew_s`` ahead of now
``duplicate-id``       (checked by the bus against meta.db and the batch) an envelope
                       with this id was already delivered
=====================  ==========================================================
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import ValidationError

from netsky_shared.errors import EnvelopeRejected
from netskyd.bus.envelope import RULE_ERRORS, Envelope

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def read_capped(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` without following links or blocking.

    Raises EnvelopeRejected (``not-regular-file``, ``too-large``, ``unreadable``).
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        raise EnvelopeRejected("unreadable", str(e)) from e
    if not stat.S_ISREG(st.st_mode):
        raise EnvelopeRejected("not-regular-file", f"mode {stat.filemode(st.st_mode)}")
    if st.st_size > max_bytes:
        raise EnvelopeRejected("too-large", f"{st.st_size} bytes > envelope_max_bytes={max_bytes}")
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after lstat
                raise EnvelopeRejected("not-regular-file", "changed type while being read")
            # One read of the size lstat saw (+1 to see growth); more only if it grew.
            raw = os.read(fd, st.st_size + 1)
            while len(raw) > st.st_size and len(raw) <= max_bytes:
                chunk = os.read(fd, min(65536, max_bytes + 1 - len(raw)))
                if not chunk:
                    break
                raw += chunk
        finally:
            os.close(fd)
    except OSError as e:
        raise EnvelopeRejected("unreadable", str(e)) from e
    if len(raw) > max_bytes:
        raise EnvelopeRejected("too-large", f"grew past envelope_max_bytes={max_bytes}")
    return raw


def parse(raw: bytes) -> Envelope:
    """Decode and check one envelope's bytes (rules not-utf8 .. control-characters).

    Raises EnvelopeRejected naming the first rule broken; ``detail`` lists every error.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EnvelopeRejected("not-utf8", str(e)) from e
    try:
        # pydantic-core parses and checks in one pass (the bus's hot path).
        return Envelope.model_validate_json(text)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = errors[0]["type"] if errors else "schema"
        if first == "json_invalid":
            raise EnvelopeRejected("not-json", str(errors[0]["msg"])) from e
        rule = first.replace("_", "-") if first in RULE_ERRORS else "schema"
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in errors
        )
        raise EnvelopeRejected(rule, details) from e


def validate(
    path: Path,
    owner: str,
    max_bytes: int,
    *,
    now: float | None = None,
    future_skew_s: float = 300.0,
) -> Envelope:
    """Check one claimed file found in ``owner``'s channel and return its envelope.

    ``now`` is seconds since the epoch (None skips the future-timestamp rule).
    Raises EnvelopeRejected with one of the rules in the module docstring
    (all but ``duplicate-id``, which needs the message records).
    """
    envelope = parse(read_capped(path, max_bytes))
    if envelope.to != owner:
        raise EnvelopeRejected("wrong-recipient", f"to={envelope.to!r} but inbox of {owner}")
    if now is not None and envelope.ts_epoch > now + future_skew_s:
        ahead = envelope.ts_epoch - now
        raise EnvelopeRejected(
            "future-timestamp",
            f"ts {envelope.ts} is {ahead:.0f}s ahead of this clock "
            f"(envelope_future_skew_s={future_skew_s:g})",
        )
    return envelope
