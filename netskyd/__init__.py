"""netskyd: the netsky supervisor daemon.

One subpackage per concern (docs/architecture.md): ``bus``, ``supervision``,
``activity``, ``escalation``, ``keepalive``, ``agents``, ``runtimes``, ``store``,
``control``, and ``app`` (cli, lifecycle, wiring). What the client shares with the
daemon is in ``netsky_shared`` (stdlib only).
"""

from netsky_shared import __version__

__all__ = ["__version__"]
