"""Last-known-good installs: a self-contained copy of a netsky install that ran healthy.

``promote(home)`` builds ``lkg/<id>/`` (docs/keepalive.md, "The last-known-good install"): a ``venv
--without-pip`` on the base interpreter whose site-packages holds copies of ``netskyd/``,
``netsky_shared/``, ``client/``, the shipped files (``netsky_shared/_data/``) and every runtime
dependency, found by walking the ``netsky`` distribution's requirements. It is built in
``lkg/.tmp-<id>``, renamed into place, asked ``netskyd selftest``, and only then linked as
``lkg/current`` (the old one becomes ``lkg/previous``; at most ``KEEP`` are kept). The daemon task
(netskyd.keepalive.lkg.task) records the running install this way after a healthy stretch, in a
child process (``python -m netskyd.keepalive.lkg.snapshot promote``) with a deadline. What an
install is made of (its requirements, distributions, fingerprint) is netskyd.keepalive.lkg.install.

The build needs only the stdlib (``packaging``, when importable, evaluates markers), so
``python -m netskyd.keepalive.lkg.snapshot`` loads none of the daemon's heavier modules.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata as metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from netsky_shared.bundled import BUNDLED, bundled
from netsky_shared.errors import NetskyError
from netsky_shared.ids import rfc3339
from netsky_shared.paths import Paths
from netskyd import __version__
from netskyd.keepalive.lkg.install import (
    PACKAGES,
    dist_ids,
    fingerprint,
    fingerprint_of_running,
    netsky_requirements,
    package_dirs,
    runtime_dists,
)

#: ``lkg/<id>`` directories kept (``current`` and ``previous`` are never removed).
KEEP = 3
#: Deadline of the copy's ``netskyd selftest`` (its imports are most of it).
SELFTEST_TIMEOUT_S = 120.0
ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}(-\d+)?$")


class LkgError(NetskyError):
    """Raised when a last-known-good install cannot be built, verified or linked."""


# --- lkg/ on disk ------------------------------------------------------------------------


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
        "#!/bin/sh\n"
        "# a netsky last-known-good install (netskyd.keepalive.lkg.snapshot); do not edit\n"
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
    for name, directory in package_dirs().items():
        _copy_tree(directory, site / name)
    for rel in BUNDLED:
        src, dst = bundled(rel), site / "netsky_shared" / "_data" / rel
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
    (info / "INSTALLER").write_text("netskyd.keepalive.lkg.snapshot\n", encoding="utf-8")
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
    prints = [f"print({name}.__file__)" for name in PACKAGES]
    where = "; ".join(["import " + ", ".join(PACKAGES), *prints])
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
        fp = fingerprint(__version__, list(package_dirs().values()), ids)
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
            copied = fingerprint(__version__, [site / name for name in PACKAGES], ids)
            if copied != fp:
                raise LkgError("the copy differs from the install (it changed while copying)")
            files, size = _count(tmp)
            manifest = {
                "id": lkg_id,
                "version": __version__,
                "fingerprint": fp,
                "created_ts": rfc3339(time.time(), digits=0),
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


# --- python -m netskyd.keepalive.lkg.snapshot ----------------------------------------


def _home(arg: str | None, environ: Mapping[str, str]) -> Path:
    if arg:
        return Path(arg).expanduser().absolute()
    from netskyd.config import load_settings

    return load_settings(None, environ).home


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m netskyd.keepalive.lkg.snapshot promote|check``; exit 0 done, 1 failed, 2 usage.

    ``promote [--home H] [--reason R] [--python P] [--expect-fingerprint F] [--json]``
    prints the manifest (``--json``) or a line; ``check [--home H] [--json]`` prints
    ``check()``'s report and exits 0 when ``lkg/current`` holds the running install.
    """
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m netskyd.keepalive.lkg.snapshot",
        description="Last-known-good installs (docs/keepalive.md).",
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
        _print(args.json, {"ok": False, "error": str(e)}, f"netskyd.keepalive.lkg.snapshot: {e}")
        return 1


def _print(as_json: bool, value: object, text: str) -> None:
    sys.stdout.write((json.dumps(value) if as_json else text) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
