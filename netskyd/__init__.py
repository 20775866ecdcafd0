"""netskyd: the netsky supervisor daemon.

This module stays import-light on purpose: the thin client imports
``netskyd.protocol``, ``netskyd.ids`` and ``netskyd.maildir`` and must not pay
for pydantic, anyio, libtmux or structlog.
"""

__version__ = "0.1.0"
