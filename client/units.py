"""``netskyctl service install|uninstall|status``: netskyd under systemd or launchd (stdlib only).

What ``install`` writes (docs/keepalive.md, "Units, plists and the shim"; rendered by
client.unit_texts):

- ``$NETSKY_HOME/bin/netsky-shim``: a copy of the shipped ``launchd/netsky-shim`` (0755);
- ``$NETSKY_HOME/service.env``: the shim's settings;
- systemd: ``netskyd.service``, ``netsky-shim.service``, ``netsky-shim.timer`` in
  ``$XDG_CONFIG_HOME/systemd/user`` (default ``~/.config/systemd/user``); launchd:
  ``com.netsky.netskyd.plist``, ``com.netsky.shim.plist`` in ``~/Library/LaunchAgents``
  (``--unit-dir`` or ``NETSKY_UNIT_DIR`` overrides either);
- ``state/install-selected``: ``live``.

Then it enables them. Every ``systemctl``/``launchctl`` run has a deadline and its
output is kept in the step that reports it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client.unit_texts import (
    SYSTEMD_ENABLE,
    Service,
    ServiceError,
    parse_env,
    read_env_file,
    render_env,
    rendered,
)
from netsky_shared import health as healthfiles
from netsky_shared.bundled import bundled
from netsky_shared.maildir import atomic_write_bytes
from netsky_shared.paths import LAUNCHD_LABELS

#: Deadline of one systemctl/launchctl run.
COMMAND_TIMEOUT_S = 30.0


@dataclass
class Step:
    """One thing done (or, with ``--dry-run``, that would be done)."""

    #: ``write``, ``remove``, ``run`` or ``skip``.
    action: str
    #: A path, or the command line.
    target: str
    ok: bool = True
    detail: str = ""


@dataclass
class Result:
    """What install/uninstall did: the steps in order, ``ok``, and a hint on failure."""

    command: str
    manager: str
    home: str
    unit_dir: str | None
    dry_run: bool = False
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- effects ----------------------------------------------------------------------------


def _write(result: Result, path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` by rename (a reader never sees half a unit), with ``mode``."""
    step = Step("write", str(path), detail=f"{len(text.encode())} bytes, mode {mode:04o}")
    result.steps.append(step)
    if result.dry_run:
        return
    try:
        atomic_write_bytes(path, text.encode("utf-8"), mode=mode)
    except OSError as e:
        step.ok, step.detail = False, str(e)


def _remove(result: Result, path: Path) -> None:
    if not path.exists():
        result.steps.append(Step("skip", str(path), detail="not there"))
        return
    step = Step("remove", str(path))
    result.steps.append(step)
    if not result.dry_run:
        try:
            path.unlink()
        except OSError as e:
            step.ok, step.detail = False, str(e)


def _call(svc: Service, argv: list[str]) -> tuple[int | None, str, str]:
    """Run ``argv`` (looked up on ``svc.environ``'s PATH) with a deadline: (exit status,
    stdout, stderr); the status is None when it could not run or did not finish."""
    exe = shutil.which(argv[0], path=svc.environ.get("PATH"))
    if exe is None:
        return None, "", f"{argv[0]} not found on PATH"
    try:
        done = subprocess.run(
            [exe, *argv[1:]],
            env=dict(svc.environ),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "", f"no answer within {COMMAND_TIMEOUT_S:g}s"
    except OSError as e:
        return None, "", str(e)
    return done.returncode, done.stdout, done.stderr


def _run(result: Result | None, svc: Service, argv: list[str], *, check: bool = True) -> Step:
    """Run ``argv`` (``_call``) and record it as a step of ``result`` (unless None), its
    detail the output's last line. ``check=False``: a failure does not fail the result."""
    step = Step("run", shlex.join(argv))
    if result is not None:
        result.steps.append(step)
        if result.dry_run:
            return step
    rc, stdout, stderr = _call(svc, argv)
    said = (stdout.strip() + "\n" + stderr.strip()).strip().splitlines()
    step.ok = rc == 0
    status = "ok" if step.ok else ("failed" if rc is None else f"exit {rc}")
    step.detail = said[-1] if step.ok and said else status + (f": {said[-1]}" if said else "")
    if not check and not step.ok:
        step.detail += " (ignored)"
        step.ok = True
    return step


def _enable_hint(svc: Service, failed: Step) -> str:
    if svc.manager == "systemd":
        why = (
            "no systemd user manager answered"
            if "bus" in failed.detail.lower()
            else "systemctl --user failed"
        )
        return (
            f"{why}. On a server, `loginctl enable-linger $USER` gives you a user manager "
            "that runs without a login session; then run `netskyctl service install` again. "
            "Or run `netskyd run` under another supervisor, or `netskyctl service install "
            f"--manager none` with a cron line `*/2 * * * * /bin/sh {shlex.quote(str(svc.shim))} "
            "check`. "
            "The files above are kept."
        )
    return (
        f"launchctl could not load the agents; see `launchctl print gui/{svc.uid}/"
        f"{LAUNCHD_LABELS[0]}`. The files above are kept."
    )


def install(svc: Service, *, dry_run: bool = False, enable: bool = True) -> Result:
    """Write the shim, service.env, the units/plists and ``state/install-selected``, then
    enable and start them. Raises ServiceError when there is no live install."""
    if svc.live_bin is None:
        raise ServiceError(
            "cannot find netskyd (not beside this Python, not on PATH): install netsky first"
        )
    result = Result("install", svc.manager, str(svc.home), _str(svc.unit_dir), dry_run)
    paths = svc.paths
    if not dry_run:
        for d in (paths.state, paths.logs, paths.bin):
            d.mkdir(parents=True, exist_ok=True)
    shim_src = bundled("launchd/netsky-shim")
    _write(result, svc.shim, shim_src.read_text(encoding="utf-8"), 0o755)
    env_text = render_env(svc, read_env_file(paths.service_env))
    _write(result, paths.service_env, env_text, 0o644)
    plist_path = parse_env(env_text).get("PATH", "")
    for dest, text in rendered(svc, plist_path).items():
        _write(result, dest, text)
    _write(result, paths.install_selected, "live\n")
    if not result.ok:
        return result
    if svc.manager == "none":
        result.notes.append(
            "no service manager: nothing restarts netskyd when it dies. Run the shim from "
            f"cron: `*/2 * * * * /bin/sh {shlex.quote(str(svc.shim))} check`"
        )
        return result
    if not enable:
        result.notes.append("not enabled (--no-enable)")
        return result
    if svc.manager == "systemd":
        for argv in (
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", *SYSTEMD_ENABLE],
        ):
            step = _run(result, svc, argv)
            if not step.ok:
                result.hint = _enable_hint(svc, step)
                return result
    else:
        for label, dest in zip(LAUNCHD_LABELS, svc.unit_files(), strict=True):
            if not dry_run and _loaded(svc, label):
                # A loaded job keeps its old definition: unload it first.
                _run(result, svc, ["launchctl", "bootout", f"gui/{svc.uid}/{label}"], check=False)
            step = _run(result, svc, ["launchctl", "bootstrap", f"gui/{svc.uid}", str(dest)])
            if not step.ok and not dry_run:
                step.detail += " (falling back to launchctl load)"
                step.ok = True
                step = _run(result, svc, ["launchctl", "load", "-w", str(dest)])
            if not step.ok:
                result.hint = _enable_hint(svc, step)
                return result
    return result


def _loaded(svc: Service, label: str) -> bool:
    return _run(None, svc, ["launchctl", "print", f"gui/{svc.uid}/{label}"]).ok


def _str(p: Path | None) -> str | None:
    return None if p is None else str(p)


def uninstall(svc: Service, *, dry_run: bool = False, disable: bool = True) -> Result:
    """Stop and disable the units (or boot out the agents), remove them, the shim and
    service.env. The agents' tmux sessions and everything else in the home stay."""
    result = Result("uninstall", svc.manager, str(svc.home), _str(svc.unit_dir), dry_run)
    failed: Step | None = None
    if disable and svc.manager == "systemd":
        step = _run(result, svc, ["systemctl", "--user", "disable", "--now", *SYSTEMD_ENABLE])
        failed = None if step.ok else step
    elif disable and svc.manager == "launchd":
        for label, dest in zip(LAUNCHD_LABELS, svc.unit_files(), strict=True):
            if not dry_run and not _loaded(svc, label):
                result.steps.append(
                    Step("skip", f"launchctl bootout gui/{svc.uid}/{label}", detail="not loaded")
                )
                continue
            step = _run(result, svc, ["launchctl", "bootout", f"gui/{svc.uid}/{label}"])
            if not step.ok and dest.exists():
                step.detail += " (falling back to launchctl unload)"
                step.ok = True
                step = _run(result, svc, ["launchctl", "unload", "-w", str(dest)])
            failed = failed or (None if step.ok else step)
    for path in [*svc.unit_files(), svc.shim, svc.paths.service_env]:
        _remove(result, path)
    if disable and svc.manager == "systemd":
        _run(result, svc, ["systemctl", "--user", "daemon-reload"], check=False)
    result.notes.append(
        "the agents' tmux sessions are left running; nothing restarts netskyd now "
        "(start it with `netskyd run`, or `netskyctl service install` again)"
    )
    if failed is not None:
        result.hint = (
            f"could not stop the service ({failed.detail}); the files are removed. If "
            "netskyd still runs, stop it with `netskyctl` from its own service manager "
            "or kill its pid (`netskyctl ping` shows it)"
        )
    return result


def status(svc: Service) -> dict[str, Any]:
    """What is installed and whether it is current and running:
    ``{"manager", "home", "unit_dir", "ok", "files": [{"path", "present", "current"}],
    "units": {name: {...}}, "selected", "shim_last"}``. ``current`` is None where there is
    nothing to compare (service.env)."""
    paths = svc.paths
    files: list[dict[str, Any]] = []

    def add(path: Path, want: str | None) -> None:
        present = path.is_file()
        current = None
        if want is not None and present:
            try:
                current = path.read_text(encoding="utf-8") == want
            except OSError:
                current = False
        files.append({"path": str(path), "present": present, "current": current})

    add(svc.shim, bundled("launchd/netsky-shim").read_text(encoding="utf-8"))
    add(paths.service_env, None)
    for dest, text in rendered(svc).items():
        add(dest, text)
    units: dict[str, dict[str, Any]] = {}
    if svc.manager == "systemd":
        for unit in SYSTEMD_ENABLE:
            row: dict[str, Any] = {}
            for verb in ("is-enabled", "is-active"):
                step = _run(None, svc, ["systemctl", "--user", verb, unit])
                row[verb] = step.detail.split(": ", 1)[-1] if step.detail else "?"
                row[f"{verb}-ok"] = step.ok
            units[unit] = row
    elif svc.manager == "launchd":
        for label in LAUNCHD_LABELS:
            units[label] = _launchd_state(svc, label)
    selected = healthfiles.read_install_selected(str(paths.home))
    running = all(
        (u.get("is-enabled-ok") and u.get("is-active-ok")) or u.get("loaded")
        for u in units.values()
    )
    ok = all(f["present"] and f["current"] is not False for f in files) and running
    return {
        "manager": svc.manager,
        "home": str(svc.home),
        "unit_dir": _str(svc.unit_dir),
        "ok": ok,
        "files": files,
        "units": units,
        "selected": selected,
        "shim_last": healthfiles.read_shim_last(str(paths.home)),
    }


def _launchd_state(svc: Service, label: str) -> dict[str, Any]:
    """``launchctl print``: {"loaded", "state", "pid"} or {"loaded": False, "detail"}."""
    rc, stdout, stderr = _call(svc, ["launchctl", "print", f"gui/{svc.uid}/{label}"])
    if rc != 0:
        return {"loaded": False, "detail": (stderr.strip() or "not loaded")[-200:]}
    state = re.search(r"^\s*state = (.+)$", stdout, re.M)
    pid = re.search(r"^\s*pid = (\d+)$", stdout, re.M)
    return {
        "loaded": True,
        "state": state.group(1) if state else None,
        "pid": int(pid.group(1)) if pid else None,
    }
