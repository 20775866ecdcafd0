"""What the running install is made of: its runtime requirements, distributions, fingerprint.

The pure part walks ``Requires-Dist`` lines: ``parse_requirement(text) -> Req`` (PEP 508, names
normalised per PEP 503), ``marker_allows`` and ``walk_requirements(roots, requires_of, evaluate) ->
(sorted installed names, sorted missing names)``; the reader of installed metadata and the marker
evaluator (``MarkerEval``, ``(marker, extra) -> bool``) are passed in. The rest reads the install
this process runs: ``package_dirs()`` (the ``netskyd``, ``netsky_shared`` and ``client``
directories), ``runtime_dists()`` (``importlib.metadata`` distributions, missing names),
``fingerprint()`` (sha256 hex; equal for an install and its copy). netskyd.keepalive.lkg.snapshot
copies what these name; netskyd.keepalive.lkg.task compares fingerprints.

Stdlib only (``packaging``, when importable, evaluates markers). ``parse_requirement`` (and
so ``walk_requirements`` and ``runtime_dists``) raises ValueError on a line that is not a
requirement; the readers raise OSError when a file cannot be read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import importlib.util
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netskyd import __version__

_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*)(?:;(.*))?$")


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


# --- the install that runs now -------------------------------------------------------


#: The top-level packages an install is made of (pyproject's wheel packages).
PACKAGES = ("netskyd", "netsky_shared", "client")


def package_dirs() -> dict[str, Path]:
    """``{package: directory}`` of the packages of the install this process runs from.

    Found with ``importlib.util.find_spec``, so the daemon never imports the client
    (an import contract); raises LookupError when one cannot be found.
    """
    found: dict[str, Path] = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise LookupError(f"package {name} is not importable here")
        found[name] = Path(spec.origin).resolve().parent
    return found


def netsky_requirements() -> list[str]:
    """netsky's runtime requirements: its distribution's ``Requires-Dist``, plus
    ``[project] dependencies`` of ``pyproject.toml`` when this is a source checkout (an
    editable install's metadata is as old as the last ``pip install -e``)."""
    lines: list[str] = []
    try:
        lines += metadata.distribution("netsky").requires or []
    except metadata.PackageNotFoundError:
        pass
    pyproject = package_dirs()["netskyd"].parent / "pyproject.toml"
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
    parent, e.g. ``netskyd/app/cli.py``) and content under ``packages``, and each
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
    return fingerprint(__version__, list(package_dirs().values()), dist_ids(dists))
