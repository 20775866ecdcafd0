"""Last-known-good installs: a self-contained copy of a netsky install that ran healthy.

``promote(home)`` builds ``lkg/<id>/`` (docs/keepalive.md, "The last-known-good
install"): a ``venv --without-pip`` on the base interpreter whose site-packages holds
copies of ``netskyd/``, ``client/``, the shipped files (``netskyd/_data/``) and every
runtime dependency, found by walking the ``netsky`` distribution's requirements. It is
built in ``lkg/.tmp-<id>``, renamed into place, asked ``netskyd selftest``, and only then
linked as ``lkg/current`` (the old one becomes ``lkg/previous``; at most ``KEEP`` are
kept). The daemon task ``run`` records the running install this way after a healthy
stretch, in a child process (``python -m netskyd.lkg promote``) with a deadline.

The build needs only the stdlib (``packaging``, when importable, evaluates markers), so
``python -m netskyd.lkg`` loads none of the daemon's heavier modules but anyio.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from netskyd import __version__
from netskyd.bundled import BUNDLED, bundled
from netskyd.errors import NetskyError
from netskyd.paths import Paths

if TYPE_CHECKING:
    from netskyd.context import Context

#: ``lkg/<id>`` directories kept (``current`` and ``previous`` are never removed).
KEEP = 3
#: Deadline of the copy's ``netskyd selftest`` (its imports are most of it).
SELFTEST_TIMEOUT_S = 120.0
#: After a record attempt (or finding the recorded one current), look again this much later.
RECHECK_S = 3600.0
#: Restart-budget markers that mean "not healthy" while they hold an agent.
UNHEALTHY_MARKERS = ("gave-up.json", "crashloop.json")
ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}(-\d+)?$")
_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*)(?:;(.*))?$")


class LkgError(NetskyError):
    """Raised when a last-known-good install cannot be built, verified or linked."""


# --- requirements (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """One ``Requires-Dist`` line: a normalised name, the extras asked for, the marker."""

    name: str
    extras: tuple[str, ...] = ()
    marker: str | None = None


def normalize(name: str) -> str:
    """PEP 503 name normalisation: ``Typing_Extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> Req:
    """Parse ``name[extra,...] (specifier) ; marker`` (PEP 508, without checking the
    specifier: the installed version is what gets copied). Raises ValueError."""
    m = _REQ_RE.match(text)
    if m is None:
        raise ValueError(f"not a requirement: {text!r}")
    extras = tuple(normalize(e) for e in (m.group(2) or "").split(",") if e.strip())
    marker = (m.group(4) or "").strip() or None
    return Req(normalize(m.group(1)), extras, marker)


MarkerEval = Callable[[str, str], bool]


def packaging_evaluator() -> MarkerEval | None:
    """``(marker, extra) -> bool`` through ``packaging.markers``; None when not importable."""
    try:
        from packaging.markers import Marker
    except ImportError:
        return None

    def evaluate(marker: str, extra: str) -> bool:
        return bool(Marker(marker).evaluate({"extra": extra}))

    return evaluate


def marker_allows(
    marker: str | None, extras: Collection[str], installed: bool, evaluate: MarkerEval | None
) -> bool:
    """Whether a requirement with ``marker`` applies when its parent was asked for
    ``extras``. With ``evaluate`` (packaging) the marker decides, once per extra (and once
    with none). Without it, an ``extra`` marker applies when it names one of ``extras``;
    any other marker applies when the distribution is ``installed``."""
    if marker is None:
        return True
    if evaluate is not None:
        return any(evaluate(marker, e) for e in ("", *extras))
    if re.search(r"\bextra\b", marker):
        named = {normalize(x) for x in re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)}
        return bool(named & set(extras))
    return installed


def walk_requirements(
    roots: Iterable[str],
    requires_of: Callable[[str], list[str] | None],
    evaluate: MarkerEval | None,
    skip: Collection[str] = ("netsky",),
) -> tuple[list[str], list[str]]:
    """Every distribution ``roots`` (requirement strings) need, transitively.

    ``requires_of(name)`` gives an installed distribution's ``Requires-Dist`` lines, or
    None when it is not installed. Requirements whose marker does not apply are skipped
    (so the root's ``extra == 'dev'`` ones are); a distribution asked for with extras
    brings those extras' requirements. Returns (sorted installed names, sorted missing
    names), normalised.
    """
    queue: list[tuple[str, tuple[str, ...]]] = [("", ())]
    root_lines = list(roots)
    asked: dict[str, set[str]] = {}
    missing: set[str] = set()
    while queue:
        parent, parent_extras = queue.pop(0)
        lines = root_lines if parent == "" else (requires_of(parent) or [])
        for line in lines:
            req = parse_requirement(line)
            if req.name in skip:
                continue
            installed = requires_of(req.name) is not None
            if not marker_allows(req.marker, parent_extras, installed, evaluate):
                continue
            if not installed:
                missing.add(req.name)
                continue
            before = asked.get(req.name)
            now = (before or set()) | set(req.extras)
            if before is None or now != before:
                asked[req.name] = now
                queue.append((req.name, tuple(sorted(now))))
    return sorted(asked), sorted(missing)


def to_prune(ids: Iterable[str], keep: Collection[str], max_keep: int = KEEP) -> list[str]:
    """Which ``lkg/<id>`` to delete so at most ``max_keep`` remain, oldest first (ids sort
    by time), never one in ``keep`` (the targets of ``current`` and ``previous``)."""
    ordered = sorted(ids)
    excess = len(ordered) - max_keep
    out = []
    for i in ordered:
        if excess <= 0:
            break
        if i not in keep:
            out.append(i)
            excess -= 1
    return out


# --- the install that runs now -------------------------------------------------------


def package_dirs() -> list[Path]:
    """The ``netskyd`` and ``client`` package directories this process imported."""
    import client

    return [Path(__file__).resolve().parent, Path(client.__file__).resolve().parent]


def netsky_requirements() -> list[str]:
    """netsky's runtime requirements: its distribution's ``Requires-Dist``, plus
    ``[project] dependencies`` of ``pyproject.toml`` when this is a source checkout (an
    editable install's metadata is as old as the last ``pip install -e``)."""
    lines: list[str] = []
    try:
        lines += metadata.distribution("netsky").requires or []
    except metadata.PackageNotFoundError:
        pass
    pyproject = package_dirs()[0].parent / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == "netsky":
            lines += [d for d in project.get("dependencies", []) if d not in lines]
    return lines


def _requires_of(name: str) -> list[str] | None:
    try:
        return metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        return None


def runtime_dists() -> tuple[list[metadata.Distribution], list[str]]:
    """The installed distributions netsky needs at run time, and the missing names."""
    names, missing = walk_requirements(netsky_requirements(), _requires_of, packaging_evaluator())
    return [metadata.distribution(n) for n in names], missing


def dist_ids(dists: Iterable[metadata.Distribution]) -> list[tuple[str, str]]:
    return sorted((normalize(d.metadata["Name"]), d.version) for d in dists)


def fingerprint(version: str, packages: Sequence[Path], dists: Iterable[tuple[str, str]]) -> str:
    """sha256 (hex) over ``version``, each ``.py`` file's path (relative to its package's
    parent, e.g. ``netskyd/cli.py``) and content under ``packages``, and each
    ``(name, version)`` of ``dists``: equal for an install and its copy."""
    files: list[tuple[str, Path]] = []
    for pkg in packages:
        for path in pkg.rglob("*.py"):
            rel = path.relative_to(pkg.parent)
            if "__pycache__" in rel.parts or "_data" in rel.parts:
                continue
            files.append((rel.as_posix(), path))
    h = hashlib.sha256(f"netsky {version}\n".encode())
    for name, path in sorted(files):
        h.update(f"file {name} ".encode() + hashlib.sha256(path.read_bytes()).digest() + b"\n")
    for name, ver in sorted(dists):
        h.update(f"dist {name} {ver}\n".encode())
    return h.hexdigest()


def fingerprint_of_running() -> str:
    """The fingerprint of the install this process runs (its files as they are on disk)."""
    dists, _ = runtime_dists()
    return fingerprint(__version__, package_dirs(), dist_ids(dists))


def this_python(module: str) -> list[str]:
    """``python -m module`` that imports this very install: isolated (``-I``) when this
    process is, else ``-P`` (no working directory on sys.path, where a checkout would
    shadow it) unless the working directory is where this process found netskyd."""
    root = Path(__file__).resolve().parent.parent
    if sys.flags.isolated:
        flags = ["-I"]
    else:
        flags = [] if root == Path.cwd().resolve() else ["-P"]
    return [sys.executable, *flags, "-m", module]


def running_from_lkg(lkg: Path, executable: str | None = None) -> bool:
    """Whether ``executable`` (default ``sys.executable``) lives under ``lkg/``."""
    exe = Path(executable or sys.executable).absolute()
    base = lkg.absolute()
    return exe.is_relative_to(base) or exe.is_relative_to(base.resolve())


def read_manifest(install: Path) -> dict[str, Any] | None:
    """``<install>/manifest.json`` (``install`` may be the ``current`` link); None when
    absent or unreadable."""
    try:
        value = json.loads((install / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- building one ----------------------------------------------------------------------


def _copy_tree(src: Path, dst: Path) -> None:
    # symlinks=False: a link into the live install becomes a real file here.
    shutil.copytree(
        src, dst, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_data")
    )


def _copy_dist(dist: metadata.Distribution, site: Path) -> None:
    name = dist.metadata["Name"]
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        raise LkgError(f"{name} is an editable install; its code lives outside site-packages")
    if dist.files is None:
        raise LkgError(f"{name} lists no files (no RECORD); reinstall it with pip")
    base = Path(str(dist.locate_file("")))
    for f in dist.files:
        rel = Path(str(f))
        if rel.is_absolute() or ".." in rel.parts:
            continue  # scripts in bin/, data outside site-packages: not needed to import
        src = base / rel
        if not src.is_file():
            continue  # RECORD may name .pyc files that were never written
        dst = site / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)  # follows links: a real file


def _site_packages(venv_dir: Path, python: str) -> Path:
    """The venv's purelib; asks the venv's python when it is not this interpreter."""
    if Path(python).resolve() == Path(_base_python()).resolve():
        site = sysconfig.get_path(
            "purelib", "venv", vars={"base": str(venv_dir), "platbase": str(venv_dir)}
        )
    else:
        site = _run(
            [
                str(venv_dir / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            60,
        ).stdout.strip()
    path = Path(site)
    if not path.is_dir():
        raise LkgError(f"the new venv has no site-packages at {path}")
    return path


def _base_python() -> str:
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def _run(
    cmd: Sequence[str],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=cwd,
            check=True,
        )
    except subprocess.TimeoutExpired as e:
        raise LkgError(f"{shlex.join(cmd)} did not finish within {timeout_s:g}s") from e
    except subprocess.CalledProcessError as e:
        raise LkgError(f"{shlex.join(cmd)} exited {e.returncode}: {e.stderr.strip()[-500:]}") from e
    except OSError as e:
        raise LkgError(f"cannot run {cmd[0]}: {e}") from e


def _make_venv(venv_dir: Path, python: str) -> None:
    if Path(python).resolve() == Path(_base_python()).resolve():
        venv.EnvBuilder(with_pip=False, symlinks=True).create(venv_dir)
    else:
        _run([python, "-m", "venv", "--without-pip", "--symlinks", str(venv_dir)], 120)
        ours = sys.version_info[:2]
        theirs = _run([python, "-c", "import sys; print(*sys.version_info[:2])"], 60).stdout
        if tuple(int(x) for x in theirs.split()) != ours:
            raise LkgError(f"{python} is not Python {ours[0]}.{ours[1]}, the one copied from")
    for leftover in (venv_dir / "bin").glob("[Aa]ctivate*"):
        leftover.unlink()  # they name the temporary directory


def _wrapper(python: Path, module: str) -> str:
    # -I: no PYTHONPATH, no user site, no cwd on sys.path: the copy runs only itself.
    return (
        "#!/bin/sh\n# a netsky last-known-good install (netskyd.lkg); do not edit\n"
        f'exec {shlex.quote(str(python))} -I -m {module} "$@"\n'
    )


def _count(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            if not p.is_symlink():
                files += 1
                size += p.stat().st_size
    return files, size


def _build(
    tmp: Path, final: Path, python: str, dists: list[metadata.Distribution], reqs: list[str]
) -> Path:
    """Fill ``tmp`` as the install that will live at ``final``; return its site-packages."""
    _make_venv(tmp / "venv", python)
    site = _site_packages(tmp / "venv", python)
    netskyd_dir, client_dir = package_dirs()
    _copy_tree(netskyd_dir, site / "netskyd")
    _copy_tree(client_dir, site / "client")
    for rel in BUNDLED:
        src, dst = bundled(rel), site / "netskyd" / "_data" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=False)
        elif src.is_file():
            shutil.copy2(src, dst)
    for dist in dists:
        _copy_dist(dist, site)
    info = site / f"netsky-{__version__}.dist-info"
    info.mkdir()
    requires = "".join(f"Requires-Dist: {r}\n" for r in reqs if "extra" not in r.partition(";")[2])
    meta = f"Metadata-Version: 2.1\nName: netsky\nVersion: {__version__}\n{requires}"
    (info / "METADATA").write_text(meta, encoding="utf-8")
    (info / "INSTALLER").write_text("netskyd.lkg\n", encoding="utf-8")
    (tmp / "bin").mkdir()
    for name, module in (("netskyd", "netskyd"), ("netskyctl", "client")):
        script = tmp / "bin" / name
        script.write_text(_wrapper(final / "venv" / "bin" / "python", module), encoding="utf-8")
        script.chmod(0o755)
    return site


def _selftest(install: Path, home: Path, environ: Mapping[str, str], timeout_s: float) -> None:
    env = {k: v for k, v in environ.items() if not k.startswith("PYTHON")}
    env["NETSKY_HOME"] = str(home)
    cmd = [str(install / "bin" / "netskyd"), "selftest", "--json"]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=install,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LkgError(f"the copy's selftest did not finish within {timeout_s:g}s") from e
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    failed = [f"{c['name']}: {c['detail']}" for c in report.get("checks", []) if not c.get("ok")]
    if done.returncode != 0 or not report.get("ok"):
        why = "; ".join(failed) or done.stderr.strip()[-500:] or f"exit {done.returncode}"
        raise LkgError(f"the copy's selftest failed: {why}")
    if not Path(str(report.get("executable", ""))).is_relative_to(install):
        raise LkgError(f"the copy's selftest ran {report.get('executable')}, not the copy")
    where = "import netskyd, client; print(netskyd.__file__); print(client.__file__)"
    python = str(install / "venv" / "bin" / "python")
    for file in _run([python, "-I", "-c", where], timeout_s, env, install).stdout.split():
        if not Path(file).is_relative_to(install):
            raise LkgError(f"the copy imports {file}, outside itself")


def _link(lkg: Path, name: str, target: str) -> None:
    tmp = lkg / f".{name}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)  # relative: lkg/current -> <id>
    os.replace(tmp, lkg / name)


def _target(link: Path) -> str | None:
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def _relink(lkg: Path, lkg_id: str) -> None:
    """``previous`` -> the old ``current``, ``current`` -> ``lkg_id`` (each by rename), then
    prune to ``KEEP``."""
    old = _target(lkg / "current")
    if old and old != lkg_id and (lkg / old).is_dir():
        _link(lkg, "previous", old)
    _link(lkg, "current", lkg_id)
    keep = {t for t in (_target(lkg / "current"), _target(lkg / "previous")) if t}
    on_disk = [p.name for p in lkg.iterdir() if ID_RE.match(p.name) and not p.is_symlink()]
    for gone in to_prune(on_disk, keep):
        shutil.rmtree(lkg / gone, ignore_errors=True)


def _lock(lkg: Path) -> int:
    fd = os.open(lkg / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise LkgError(f"another promote is running in {lkg}") from e
    return fd


def promote(
    home: Path,
    *,
    reason: str,
    python: str | None = None,
    expect_fingerprint: str | None = None,
    environ: Mapping[str, str] | None = None,
    selftest_timeout_s: float = SELFTEST_TIMEOUT_S,
) -> dict[str, Any]:
    """Record the running install as ``lkg/<id>`` and link it as ``lkg/current``.

    ``python`` is the base interpreter of the copy's venv (default: this one's,
    ``sys._base_executable``; it must be the same Python version). With
    ``expect_fingerprint``, refuse when the install on disk is no longer that one.
    ``environ`` is what the copy's selftest runs with (``NETSKY_HOME`` set to ``home``).
    Returns the manifest (plus ``"path"``). Raises LkgError (nothing is linked then).
    """
    started = time.monotonic()
    python = python or _base_python()
    environ = environ or {}
    lkg = Paths(home).lkg
    lkg.mkdir(parents=True, exist_ok=True)
    fd = _lock(lkg)
    try:
        for stale in lkg.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a build killed at its deadline
        dists, missing = runtime_dists()
        if missing:
            raise LkgError(f"runtime dependencies are not installed: {', '.join(missing)}")
        ids = dist_ids(dists)
        fp = fingerprint(__version__, package_dirs(), ids)
        if expect_fingerprint and fp != expect_fingerprint:
            raise LkgError("the install on disk changed since netskyd started; not recording it")
        base_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + fp[:8]
        lkg_id, n = base_id, 1
        while (lkg / lkg_id).exists():
            n += 1
            lkg_id = f"{base_id}-{n}"
        tmp, final = lkg / f".tmp-{lkg_id}", lkg / lkg_id
        try:
            site = _build(tmp, final, python, dists, netsky_requirements())
            copied = fingerprint(__version__, [site / "netskyd", site / "client"], ids)
            if copied != fp:
                raise LkgError("the copy differs from the install (it changed while copying)")
            files, size = _count(tmp)
            manifest = {
                "id": lkg_id,
                "version": __version__,
                "fingerprint": fp,
                "created_ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": sysconfig.get_path("scripts"),
                "python": python,
                "files": files,
                "bytes": size,
                "reason": reason,
                "dists": [f"{name}=={ver}" for name, ver in ids],
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            os.rename(tmp, final)
        except LkgError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except (OSError, ValueError, shutil.Error) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LkgError(f"copying the install failed: {e}") from e
        try:
            _selftest(final, home, environ, selftest_timeout_s)
        except LkgError:
            shutil.rmtree(final, ignore_errors=True)
            raise
        try:
            _relink(lkg, lkg_id)
        except OSError as e:
            raise LkgError(f"{final} is built but could not be linked as current: {e}") from e
    finally:
        os.close(fd)
    manifest["path"] = str(final)
    manifest["duration_ms"] = int((time.monotonic() - started) * 1000)
    return manifest


def check(home: Path) -> dict[str, Any]:
    """Compare the running install with ``lkg/current``: ``{"running": {"version",
    "fingerprint", "executable", "from_lkg"}, "lkg": manifest | None, "same": bool}``."""
    paths = Paths(home)
    running = fingerprint_of_running()
    manifest = read_manifest(paths.lkg_current)
    return {
        "running": {
            "version": __version__,
            "fingerprint": running,
            "executable": sys.executable,
            "from_lkg": running_from_lkg(paths.lkg),
        },
        "lkg": manifest,
        "same": bool(manifest and manifest.get("fingerprint") == running),
    }


# --- the daemon task -------------------------------------------------------------------


def open_markers(paths: Paths) -> list[str]:
    """The restart-budget markers (``state/gave-up.json``, ``state/crashloop.json``) that
    hold an agent, or do not parse. Read only: a corrupt marker is the restart runner's
    to move aside."""
    out = []
    for name in UNHEALTHY_MARKERS:
        try:
            value = json.loads(paths.marker(name).read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            out.append(name)
            continue
        if not isinstance(value, dict) or value.get("agents"):
            out.append(name)
    return out


def unhealthy_reason(
    now: float, last_tick_at: float | None, tick_interval_s: float, markers: Sequence[str]
) -> str | None:
    """Why the daemon is not healthy right now (None when it is): no tick yet, a tick
    older than three intervals, or an open gave-up / crash-loop marker."""
    if last_tick_at is None:
        return "no tick yet"
    if now - last_tick_at > 3 * tick_interval_s:
        return f"last tick {now - last_tick_at:.0f}s ago"
    if markers:
        return f"open markers: {', '.join(markers)}"
    return None


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: after ``lkg_after_s`` of healthy running (fresh ticks, no open
    gave-up or crash-loop marker), record the running install as last-known-good when
    ``lkg/current`` holds another one; then look again every ``RECHECK_S``. Never raises
    (but cancellation). Records nothing when ``lkg_after_s`` is 0, while
    ``state/install-selected`` says ``lkg`` (the live install is distrusted), or when this
    daemon runs from ``lkg/``."""
    task_status.started()
    if running_from_lkg(ctx.paths.lkg):
        await ctx.recorder.event("lkg.skipped", reason=f"netskyd runs from {sys.executable}")
        await anyio.sleep_forever()
    try:
        started_fp = await anyio.to_thread.run_sync(fingerprint_of_running)
    except Exception as e:  # noqa: BLE001 - the task must never take the daemon down
        await ctx.recorder.event("lkg.record_failed", level="warning", error=f"fingerprint: {e}")
        await anyio.sleep_forever()
    watch = _Watch()
    while True:
        await anyio.sleep(min(max(ctx.settings.tick_interval_s, 0.5), 30.0))
        try:
            if await watch.due(ctx):
                await _record_if_changed(ctx, started_fp)
        except Exception as e:  # noqa: BLE001 - the task must never take the daemon down
            await ctx.recorder.event("lkg.record_failed", level="warning", error=str(e))


class _Watch:
    """The healthy stretch so far, and when the next record attempt may be."""

    def __init__(self) -> None:
        self.healthy_since: float | None = None
        self.next_check_at = 0.0
        self.distrusted = False

    async def due(self, ctx: Context) -> bool:
        """Whether to attempt a record now (then the next one is ``RECHECK_S`` away)."""
        settings = ctx.settings  # SIGHUP may change it
        now = ctx.clock()
        if settings.lkg_after_s <= 0:
            return False
        if _selected(ctx.paths) == "lkg":
            if not self.distrusted:
                await ctx.recorder.event(
                    "lkg.skipped",
                    reason="state/install-selected is lkg: the live install is "
                    "not recorded until 'netskyctl self-repair promote' selects it again",
                )
            self.distrusted, self.healthy_since = True, None
            return False
        self.distrusted = False
        why = unhealthy_reason(
            now, ctx.last_tick_at, settings.tick_interval_s, open_markers(ctx.paths)
        )
        if why is not None:
            self.healthy_since = None
            return False
        self.healthy_since = now if self.healthy_since is None else self.healthy_since
        if now - self.healthy_since < settings.lkg_after_s or now < self.next_check_at:
            return False
        self.next_check_at = now + RECHECK_S
        return True


def _selected(paths: Paths) -> str:
    try:
        return paths.install_selected.read_text(encoding="utf-8").strip() or "live"
    except OSError:
        return "live"


async def _record_if_changed(ctx: Context, started_fp: str) -> None:
    """Record the running install unless ``lkg/current`` already is it."""
    manifest = read_manifest(ctx.paths.lkg_current)
    if manifest is not None and manifest.get("fingerprint") == started_fp:
        await ctx.recorder.event("lkg.unchanged", id=manifest.get("id"), fingerprint=started_fp)
        return
    on_disk = await anyio.to_thread.run_sync(fingerprint_of_running)
    if on_disk != started_fp:
        # An upgrade landed under a running daemon: it is recorded after its own
        # healthy stretch, once a daemon runs it.
        await ctx.recorder.event(
            "lkg.skipped", reason="the install on disk changed since netskyd started"
        )
        return
    cmd = [
        *this_python("netskyd.lkg"),
        "promote",
        "--home",
        str(ctx.paths.home),
        "--reason",
        "healthy-stretch",
        "--expect-fingerprint",
        started_fp,
        "--json",
    ]
    t0 = ctx.monotonic()
    rc, out, err = await run_child(cmd, ctx.settings.lkg_timeout_s, ctx.environ or None)
    duration_ms = int((ctx.monotonic() - t0) * 1000)
    try:
        result = json.loads(out)
    except ValueError:
        result = {}
    if rc != 0 or not isinstance(result, dict) or "id" not in result:
        error = (result.get("error") if isinstance(result, dict) else None) or err.strip()[-500:]
        await ctx.recorder.event(
            "lkg.record_failed",
            level="warning",
            error=error or f"exit {rc}",
            duration_ms=duration_ms,
        )
        return
    await ctx.recorder.event(
        "lkg.recorded",
        id=result["id"],
        fingerprint=result["fingerprint"],
        duration_ms=duration_ms,
        files=result.get("files"),
        bytes=result.get("bytes"),
    )


async def run_child(
    cmd: Sequence[str], timeout_s: float, env: Mapping[str, str] | None
) -> tuple[int, str, str]:
    """Run ``cmd`` in its own process group; return (exit code, stdout, stderr).

    At the deadline the whole group (the promote and its selftest) is killed and
    LkgError raised."""
    chunks: dict[int, list[bytes]] = {1: [], 2: []}
    async with await anyio.open_process(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as proc:

        async def drain(stream: Any, key: int) -> None:
            async for chunk in stream:
                chunks[key].append(chunk)

        try:
            with anyio.fail_after(timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, proc.stdout, 1)
                    tg.start_soon(drain, proc.stderr, 2)
                await proc.wait()
        except BaseException as e:  # the deadline, or the daemon stopping: the group goes
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if isinstance(e, TimeoutError):
                raise LkgError(f"recording took longer than {timeout_s:g}s") from e
            raise
    rc = proc.returncode if proc.returncode is not None else -1
    return (
        rc,
        b"".join(chunks[1]).decode(errors="replace"),
        b"".join(chunks[2]).decode(errors="replace"),
    )


# --- python -m netskyd.lkg -------------------------------------------------------------


def _home(arg: str | None, environ: Mapping[str, str]) -> Path:
    if arg:
        return Path(arg).expanduser().absolute()
    from netskyd.config import load_settings

    return load_settings(None, environ).home


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m netskyd.lkg promote|check``; exit 0 done, 1 failed, 2 usage.

    ``promote [--home H] [--reason R] [--python P] [--expect-fingerprint F] [--json]``
    prints the manifest (``--json``) or a line; ``check [--home H] [--json]`` prints
    ``check()``'s report and exits 0 when ``lkg/current`` holds the running install.
    """
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m netskyd.lkg", description="Last-known-good installs (docs/keepalive.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("promote", help="record the running install as last-known-good")
    pr.add_argument("--reason", default="manual")
    pr.add_argument("--python", default=None, help="base interpreter (default: this one's)")
    pr.add_argument("--expect-fingerprint", default=None)
    ck = sub.add_parser("check", help="compare the running install with lkg/current")
    for p in (pr, ck):
        p.add_argument("--home", default=None, help="NETSKY_HOME (default: as netskyd finds it)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        home = _home(args.home, environ)
        if args.command == "promote":
            m = promote(
                home,
                reason=args.reason,
                python=args.python,
                expect_fingerprint=args.expect_fingerprint,
                environ=environ,
            )
            text = (
                f"recorded {m['path']} (netsky {m['version']}, {m['files']} files, "
                f"{m['bytes'] / 1e6:.1f} MB, {m['duration_ms'] / 1000:.1f}s)"
            )
            _print(args.json, m, text)
            return 0
        report = check(home)
        lkg = report["lkg"]
        text = (
            "no last-known-good install"
            if lkg is None
            else f"lkg/current: {lkg.get('id')} (netsky {lkg.get('version')}), "
            + ("the running install" if report["same"] else "not the running install")
        )
        _print(args.json, report, text)
        return 0 if report["same"] else 1
    except NetskyError as e:
        _print(args.json, {"ok": False, "error": str(e)}, f"netskyd.lkg: {e}")
        return 1


def _print(as_json: bool, value: object, text: str) -> None:
    sys.stdout.write((json.dumps(value) if as_json else text) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
