"""What the client and the daemon share: the contracts on disk and on the wire.

Stdlib only (an import-linter contract in ``pyproject.toml`` says so): ``netskyctl``
imports this package and must start fast, and a module here never pulls in
pydantic, anyio, structlog or the daemon's machinery.

- ``paths``: every file and directory under ``NETSKY_HOME``.
- ``ids``: agent ids, roles, sort order, RFC 3339 time, uptime.
- ``protocol``: the JSON-RPC 2.0 contract of ``netskyd.sock`` and the exit codes.
- ``errors``: ``NetskyError`` and every named condition under it.
- ``maildir``: the send side of the bus (envelope, stage, publish, inbox counts) and
  whole-file atomic writes.
- ``markers``: JSON markers under ``state/``.
- ``incidents``: incident files under ``state/escalations/`` (read, scan, ack).
- ``health``: the health report and the readers of the files it is built from.
- ``bundled``: the files shipped with netsky (prompts, units, the shim).
- ``git``: the environment variables every git call netsky makes drops.
"""

__version__ = "0.1.0"
