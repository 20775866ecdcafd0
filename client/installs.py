"""The installs netskyctl self-repair works on, and children with deadlines (client/selfrepair.py).

``run(cmd, timeout_s)`` runs a child in its own process group: ``(exit code | None at the
deadline | 127 when it cannot start, stdout, stderr)``; ``selftest`` asks an install's
``netskyd selftest --json`` (``{"ok", "version", "executable", "detail"}``);
``this_python(module)`` is an argv that runs this very install. The files:
``state/install-selected`` (``live`` or ``lkg``), ``lkg/current/manifest.json`` and
``service.env`` (the shim's settings). ``daemon_info`` asks netskyd ``hello``
(``{"running", "pid", "version", "executable"}``). Contracts: docs/keepalive.md.

Stdlib only. Nothing here raises for a missing file, a dead daemon or a failing child:
each says so in its result; ``write_selected`` raises OSError when it cannot write.
"""

from __future__ import annotations

import json
import os

from netsky_shared.health import read_install_selected

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

SELFTEST_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 5.0


def run(
    cmd: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None
) -> tuple[int | None, str, str]:
    """Run ``cmd`` in its own process group: (exit code, stdout, stderr). At the deadline
    the group is killed and the code is None; a command that cannot start gives 127."""
    import signal
    import subprocess

    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    except OSError as e:
        return 127, "", f"cannot run {cmd[0]}: {e}"
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            stdout, stderr = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # something outside the group holds the pipes
            stdout, stderr = "", ""
        return None, stdout, stderr + f"\n(killed after {timeout_s:g}s)"
    return proc.returncode, stdout, stderr


def this_python(module: str) -> list[str]:
    """``python -m module`` that imports this very install (``netsky_shared.bundled``;
    imported only when called, so netskyctl's start-up does not pay for it)."""
    from netsky_shared.bundled import this_python as of_this_install

    return of_this_install(module)


def json_object(text: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; ``{}`` when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def selftest(cmd: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """Run ``<netskyd> selftest --json``: ``{"ok", "version", "executable", "detail"}``."""
    rc, stdout, stderr = run([*cmd, "selftest", "--json"], SELFTEST_TIMEOUT_S, env)
    report = json_object(stdout)
    failed = [f"{c['name']}: {c['detail']}" for c in report.get("checks", []) if not c.get("ok")]
    ok = rc == 0 and bool(report.get("ok"))
    detail = (
        "passes selftest" if ok else "; ".join(failed) or (stderr.strip()[-300:] or f"exit {rc}")
    )
    return {
        "ok": ok,
        "version": report.get("version"),
        "executable": report.get("executable"),
        "detail": detail,
    }


#: ``state/install-selected``: ``live`` or ``lkg`` (the one reader, netsky_shared.health).
read_selected = read_install_selected


def write_selected(home: str, which: str) -> None:
    """Write ``state/install-selected`` atomically (tmp + rename)."""
    from pathlib import Path

    from netsky_shared.maildir import atomic_write_bytes

    atomic_write_bytes(Path(home, "state", "install-selected"), (which + "\n").encode("utf-8"))


def read_manifest(home: str) -> dict[str, Any] | None:
    """``lkg/current/manifest.json``; None when absent or unreadable."""
    try:
        with open(os.path.join(home, "lkg", "current", "manifest.json"), encoding="utf-8") as f:
            return json_object(f.read()) or None
    except OSError:
        return None


def service_env(home: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The shim's settings: ``service.env`` (sh ``NAME='value'`` lines), then ``environ``."""
    import shlex

    values: dict[str, str] = {}
    path = environ.get("NETSKY_SHIM_ENV") or os.path.join(home, "service.env")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        name, eq, raw = line.strip().partition("=")
        if eq and name.isidentifier() and not name.startswith("#"):
            try:
                values[name] = "".join(shlex.split(raw))
            except ValueError:
                continue
    values.update({k: v for k, v in environ.items() if k.startswith("NETSKY_")})
    return values


def daemon_info(home: str) -> dict[str, Any]:
    """Whether netskyd answers ``hello``: ``{"running", "pid", "version", "executable"}``."""
    from client.rpc import Client
    from netsky_shared.errors import NetskyError
    from netsky_shared.paths import socket_path

    try:
        with Client(socket_path(home), timeout_s=PROBE_TIMEOUT_S) as c:
            hello = c.hello
    except (NetskyError, OSError, ValueError):
        return {"running": False, "pid": None, "version": None, "executable": None}
    pid = hello.get("pid")
    return {
        "running": True,
        "pid": pid,
        "version": hello.get("version"),
        "executable": _executable_of(home, pid) if isinstance(pid, int) else None,
    }


def _executable_of(home: str, pid: int) -> str | None:
    try:
        with open(os.path.join(home, "state", "heartbeat.json"), encoding="utf-8") as f:
            beat = json_object(f.read())
        if beat.get("pid") == pid and beat.get("executable"):
            return str(beat["executable"])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace") or None
    except OSError:
        return None


def is_under(path: str | None, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (absolute paths, links not followed)."""
    if not path:
        return False
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root + os.sep)


def home_env(home: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with ``NETSKY_HOME`` set to ``home``: what child processes run with."""
    return {**environ, "NETSKY_HOME": home}
