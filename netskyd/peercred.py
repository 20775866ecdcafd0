"""Who is at the other end of a Unix socket (stdlib only; the control socket and the MCP
channel server both accept only peers running as the daemon's own uid)."""

from __future__ import annotations

import socket
import struct


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
