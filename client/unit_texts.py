"""What ``netskyctl service install`` writes, rendered for one install (stdlib only, pure).

- ``$NETSKY_HOME/service.env``: the shim's settings as sh ``NAME='value'`` lines
  (``render_env``; ``parse_env`` reads them back);
- systemd: the shipped ``systemd/*`` units are the rendering for the default home
  ``%h/.netsky``; any other home replaces that word, escaped for systemd
  (``render_unit``). launchd: the shipped plists are templates with ``__NETSKY_HOME__``
  and ``__PATH__`` (``render_plist``).

``Service`` says where everything goes for one run; ``plan`` builds it. The effects
(writing, ``systemctl``, ``launchctl``) are netskyd.service's. Nothing here reads
``os.environ``: callers pass it in.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from netsky_shared.bundled import bundled
from netsky_shared.paths import LAUNCHD_LABELS, SYSTEMD_UNITS, Paths

MANAGERS = ("systemd", "launchd", "none")
#: What ``enable --now`` starts: the daemon, and the timer that runs the shim.
SYSTEMD_ENABLE = ("netskyd.service", "netsky-shim.timer")
#: The home the shipped unit files are written for.
DEFAULT_HOME_SPEC = "%h/.netsky"
PLIST_TOKENS = ("__NETSKY_HOME__", "__PATH__")
#: What service.env always sets (other names in an existing file are kept).
ENV_NAMES = (
    "NETSKY_HOME",
    "NETSKY_LIVE_BIN",
    "NETSKY_SERVICE_MANAGER",
    "NETSKY_CONFIG",
    "NETSKY_TMUX_SOCKET",
    "NETSKY_UNIT_DIR",
    "PATH",
)
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class ServiceError(Exception):
    """Raised when an install cannot even be planned (no netskyd to point the units at)."""


@dataclass
class Service:
    """Where things go for one ``netskyctl service`` run (all paths absolute)."""

    manager: str
    home: Path
    unit_dir: Path | None
    environ: Mapping[str, str]
    live_bin: Path | None = None
    uid: int = field(default_factory=os.getuid)

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    @property
    def shim(self) -> Path:
        return self.paths.bin / "netsky-shim"

    def unit_files(self) -> list[Path]:
        """The unit files or plists of this manager, where they go."""
        if self.unit_dir is None:
            return []
        if self.manager == "systemd":
            return [self.unit_dir / n for n in SYSTEMD_UNITS]
        if self.manager == "launchd":
            return [self.unit_dir / f"{label}.plist" for label in LAUNCHD_LABELS]
        return []


def plan(
    environ: Mapping[str, str],
    home: Path,
    *,
    manager: str | None = None,
    unit_dir: str | None = None,
    platform: str = sys.platform,
    executable: str = sys.executable,
) -> Service:
    """The Service for one command. The manager: ``manager``, else the last install's
    (service.env), else the platform's. The unit dir: ``unit_dir``, else
    ``$NETSKY_UNIT_DIR``, else the last install's (when the manager is the same), else
    the manager's default."""
    last = read_env_file(Paths(home).service_env)
    if manager is None:
        manager = last.get("NETSKY_SERVICE_MANAGER")
    if manager not in MANAGERS:
        manager = default_manager(platform)
    where: Path | None = None
    if manager != "none":
        if unit_dir:
            where = Path(unit_dir).expanduser().absolute()
        elif (
            not environ.get("NETSKY_UNIT_DIR")
            and last.get("NETSKY_UNIT_DIR")
            and (last.get("NETSKY_SERVICE_MANAGER") == manager)
        ):
            where = Path(last["NETSKY_UNIT_DIR"])
        else:
            where = default_unit_dir(manager, environ)
    return Service(
        manager=manager,
        home=home,
        unit_dir=where,
        environ=environ,
        live_bin=find_live_bin(environ, executable),
    )


def default_manager(platform: str = sys.platform) -> str:
    """systemd on Linux, launchd on macOS, none elsewhere."""
    if platform.startswith("linux"):
        return "systemd"
    return "launchd" if platform == "darwin" else "none"


def user_home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or os.path.expanduser("~"))


def default_unit_dir(manager: str, environ: Mapping[str, str]) -> Path | None:
    """``NETSKY_UNIT_DIR``, else systemd's user unit dir or ``~/Library/LaunchAgents``."""
    if manager == "none":
        return None
    if environ.get("NETSKY_UNIT_DIR"):
        return Path(environ["NETSKY_UNIT_DIR"]).expanduser().absolute()
    if manager == "systemd":
        base = environ.get("XDG_CONFIG_HOME") or str(user_home(environ) / ".config")
        return Path(base) / "systemd" / "user"
    return user_home(environ) / "Library" / "LaunchAgents"


def find_live_bin(environ: Mapping[str, str], executable: str = sys.executable) -> Path | None:
    """The bin dir of the running install: the interpreter's, when it holds ``netskyd``
    (a venv), else where ``netskyd`` is on PATH; None when there is none."""
    here = Path(executable).absolute().parent
    if os.access(here / "netskyd", os.X_OK):
        return here
    found = shutil.which("netskyd", path=environ.get("PATH"))
    return Path(found).absolute().parent if found else None


def service_path(live_bin: Path | None, environ: Mapping[str, str]) -> str:
    """PATH for the daemon and the shim: the live bin dir, tmux's dir, the installing
    shell's PATH (where ``claude`` and ``codex`` are) and the system dirs; absolute
    entries only, each once."""
    tmux = shutil.which("tmux", path=environ.get("PATH"))
    parts = [str(live_bin) if live_bin else "", os.path.dirname(tmux) if tmux else ""]
    parts += environ.get("PATH", "").split(os.pathsep) + list(SYSTEM_PATH)
    seen: list[str] = []
    for p in parts:
        if p.startswith("/") and p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


def sh_quote(value: str) -> str:
    """``'value'`` for sh, with each ``'`` as ``'\\''``."""
    return "'" + value.replace("'", "'\\''") + "'"


def read_env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a service.env ({} when absent or unreadable)."""
    try:
        return parse_env(path.read_text(encoding="utf-8"))
    except OSError:
        return {}


def parse_env(text: str) -> dict[str, str]:
    """The ``NAME=value`` assignments of service.env text (sh quoting undone; a line
    that does not parse is skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _ASSIGNMENT.match(line.strip())
        if m:
            try:
                out[m.group(1)] = "".join(shlex.split(m.group(2)))
            except ValueError:
                continue
    return out


def render_env(svc: Service, existing: Mapping[str, str] | None = None) -> str:
    """service.env for ``svc``; names other than ENV_NAMES in ``existing`` are kept."""
    values = {
        "NETSKY_HOME": str(svc.home),
        "NETSKY_LIVE_BIN": str(svc.live_bin or ""),
        "NETSKY_SERVICE_MANAGER": svc.manager,
    }
    for name in ("NETSKY_CONFIG", "NETSKY_TMUX_SOCKET"):
        if svc.environ.get(name):
            value = svc.environ[name]
            values[name] = str(Path(value).absolute()) if name == "NETSKY_CONFIG" else value
    if svc.unit_dir is not None:
        # Where this install put its units, for `service status` and `uninstall`.
        values["NETSKY_UNIT_DIR"] = str(svc.unit_dir)
    values["PATH"] = service_path(svc.live_bin, svc.environ)
    kept = {k: v for k, v in (existing or {}).items() if k not in ENV_NAMES}
    lines = [
        "# The netsky shim's settings, written by `netskyctl service install`",
        "# (docs/keepalive.md). sh syntax; the environment wins over these lines.",
        *(f"{k}={sh_quote(v)}" for k, v in {**values, **kept}.items()),
    ]
    return "\n".join(lines) + "\n"


def _sd_word(value: str, key: str) -> str:
    """``value`` as one word of a systemd ``key=`` line: specifiers (``%``) doubled,
    ``$`` doubled in Exec lines, double-quoted (C escapes) when it holds a space, a
    quote or a backslash (systemd.syntax(7), systemd.service(5) "Command lines")."""
    if "\n" in value:
        raise ServiceError(f"a path with a newline cannot go in a unit file: {value!r}")
    value = value.replace("%", "%%")
    if key.startswith("Exec"):
        value = value.replace("$", "$$")
    if any(c in value for c in " \t\"'\\;"):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def render_unit(text: str, home: Path, environ: Mapping[str, str]) -> str:
    """A shipped unit file for ``home``: unchanged for ``~/.netsky``; otherwise every word
    holding ``%h/.netsky`` names the real home instead, escaped for systemd."""
    if home == user_home(environ) / ".netsky":
        return text
    out = []
    for line in text.splitlines(keepends=True):
        m = _ASSIGNMENT.match(line.rstrip("\n"))
        if m and DEFAULT_HOME_SPEC in m.group(2):
            key = m.group(1)
            words = [
                _sd_word(w.replace(DEFAULT_HOME_SPEC, str(home)), key)
                if DEFAULT_HOME_SPEC in w
                else w
                for w in m.group(2).split(" ")
            ]
            line = f"{key}={' '.join(words)}\n"
        out.append(line)
    return "".join(out)


def render_plist(text: str, home: Path, path: str) -> str:
    """A shipped plist template with the home and PATH filled in (XML-escaped)."""
    return text.replace("__NETSKY_HOME__", xml_escape(str(home))).replace(
        "__PATH__", xml_escape(path)
    )


def rendered(svc: Service, path: str | None = None) -> dict[Path, str]:
    """Each unit file or plist of ``svc`` -> its content for this install. ``path`` is
    the plists' PATH (default: service.env's, else a fresh one)."""
    out: dict[Path, str] = {}
    for dest in svc.unit_files():
        src = bundled(f"{svc.manager}/{dest.name}")
        text = src.read_text(encoding="utf-8")
        if svc.manager == "systemd":
            out[dest] = render_unit(text, svc.home, svc.environ)
        else:
            if path is None:
                path = read_env_file(svc.paths.service_env).get("PATH") or service_path(
                    svc.live_bin, svc.environ
                )
            out[dest] = render_plist(text, svc.home, path)
    return out
