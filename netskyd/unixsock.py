"""Private Unix sockets: bound with mode 0600, and who is at the other end.

The control socket and the MCP channel server both listen this way and accept
only peers running as the daemon's own uid.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path

import anyio
from anyio.abc import SocketListener


async def listen_private(path: Path) -> SocketListener:
    """Listen on a Unix socket at ``path`` that only its owner can connect to (mode 0600).

    The umask is tightened while binding, so the socket is never reachable by others,
    not even for a moment. Raises OSError (e.g. the path exists).
    """
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return listener


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket, or None if unknown.

    Linux: ``SO_PEERCRED`` (``struct ucred {pid, uid, gid}``); BSD/macOS:
    ``LOCAL_PEERCRED`` (``struct xucred {u_int version; uid_t uid; ...}``).
    """
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", raw)[1])
    if hasattr(socket, "LOCAL_PEERCRED"):
        raw = sock.getsockopt(0, socket.LOCAL_PEERCRED, struct.calcsize("2I"))
        return int(struct.unpack("2I", raw)[1])
    return None


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket, or None if unknown
    (Linux: ``SO_PEERCRED``; macOS: ``LOCAL_PEERPID``)."""
    try:
        if hasattr(socket, "SO_PEERCRED"):
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return int(struct.unpack("3i", raw)[0]) or None
        local_peerpid = getattr(socket, "LOCAL_PEERPID", 0x002 if sys.platform == "darwin" else 0)
        if local_peerpid:
            raw = sock.getsockopt(0, local_peerpid, struct.calcsize("i"))
            return int(struct.unpack("i", raw)[0]) or None
    except OSError:
        return None
    return None
