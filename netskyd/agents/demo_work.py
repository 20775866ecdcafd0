"""The demo agent's work: a brief whose lines are steps, carried out with real git.

A ``brief`` envelope to a demo clone (its text starts ``brief for agentN:``, as
netskyd.work.loop writes it) may hold steps, one per line; other lines are prose:

- ``write PATH TEXT`` / ``append PATH TEXT``: the file (relative to the workspace, never
  outside it) gets TEXT and a newline;
- ``commit MESSAGE``: ``git add -A`` and ``git commit -m MESSAGE`` in the workspace;
- ``report [TEXT]``: ``netskyctl clone report TEXT`` (the same command an AI clone runs);
- ``done [TEXT]``: the same with ``--done``.

Steps run in order in the agent's working directory (its workspace); the first one that
fails stops the rest and is said on the pane. Every child has a deadline
(``STEP_TIMEOUT_S``). Stdlib only, like the demo agent.

A message ``owner imessage TEXT``, ``owner email TEXT`` or ``owner draft TEXT`` (to any
demo agent) runs the owner's verb an AI agent would (``netskyctl imessage send --owner``,
``email send --owner``, ``email draft``) from the agent's own pane, so netskyd's check of
the caller (docs/owner.md) sees the real process tree: agent0's goes, a clone's is refused.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from netsky_shared.bundled import this_python

#: Deadline of each git or netskyctl child of a step, in seconds.
STEP_TIMEOUT_S = 60.0
_STEP = re.compile(r"^(write|append|commit|report|done)\b[ \t]*(.*)$")


_OWNER = re.compile(r"^owner (imessage|email|draft) (.+)$", re.DOTALL)
OWNER_SUBJECT = "from the demo agent"


def owner_verb(text: str) -> list[str] | None:
    """The netskyctl arguments of an ``owner VERB TEXT`` message, or None for another."""
    m = _OWNER.fullmatch(text.strip())
    if m is None:
        return None
    verb, rest = m.group(1), m.group(2).strip()
    if verb == "imessage":
        return ["imessage", "send", "--owner", rest]
    if verb == "email":
        return ["email", "send", "--owner", OWNER_SUBJECT, rest]
    return ["email", "draft", OWNER_SUBJECT, rest]


def run_owner_verb(args: list[str], workdir: Path, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Run ``netskyctl ARGS`` as this agent's child; (it went, what it said)."""
    try:
        out = _run([*this_python("client"), *args], workdir, environ)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return False, str(e)
    return True, out.strip().splitlines()[-1] if out.strip() else "ok"


def request_restart(handoff: str, workdir: Path, environ: Mapping[str, str]) -> tuple[bool, str]:
    """``netskyctl restart --request --handoff -`` with ``handoff`` on stdin (the /restart
    skill's command); (it went, what it said)."""
    try:
        done = subprocess.run(
            [*this_python("client"), "restart", "--request", "--handoff", "-"],
            cwd=workdir, env=dict(environ), input=handoff, capture_output=True, text=True,
            timeout=STEP_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
    return done.returncode == 0, tail[0]


def is_brief(agent: str, text: str) -> bool:
    """True when ``text`` is a brief for ``agent`` (netskyd.work.loop.brief_text)."""
    return text.startswith(f"brief for {agent}:")


def steps(text: str) -> list[tuple[str, str]]:
    """The ``(verb, rest)`` steps of a brief's text, in order."""
    out = []
    for line in text.splitlines():
        m = _STEP.match(line.strip())
        if m is not None:
            out.append((m.group(1), m.group(2).strip()))
    return out


def run_steps(
    text: str, workdir: Path, environ: Mapping[str, str], say: Callable[[str], None]
) -> bool:
    """Carry out the steps of ``text`` in ``workdir``; True when every one succeeded."""
    for verb, rest in steps(text):
        try:
            said = _step(verb, rest, workdir, environ)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            say(f"step failed: {verb} {rest}: {e}")
            return False
        say(said)
    return True


def _step(verb: str, rest: str, workdir: Path, environ: Mapping[str, str]) -> str:
    if verb in ("write", "append"):
        name, _, body = rest.partition(" ")
        path = _inside(workdir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a" if verb == "append" else "w", encoding="utf-8") as f:
            f.write(body + "\n")
        return f"{verb} {name} ({len(body) + 1} bytes)"
    if verb == "commit":
        _run(["git", "add", "-A"], workdir, environ)
        _run(["git", "commit", "-q", "-m", rest or "work"], workdir, environ)
        sha = _run(["git", "rev-parse", "--short", "HEAD"], workdir, environ).strip()
        return f"committed {sha}: {rest or 'work'}"
    # -P (this_python): the workspace may be a checkout of netsky itself; its client/ must
    # not shadow the installed one.
    argv = [*this_python("client"), "clone", "report", rest or f"{verb} by the demo agent"]
    if verb == "done":
        argv.append("--done")
    first = (_run(argv, workdir, environ).strip().splitlines() or ["ok"])[0]
    return f"reported{' done' if verb == 'done' else ''}: {first}"


def _inside(workdir: Path, name: str) -> Path:
    """``workdir/name``, refusing a path that leaves ``workdir`` (ValueError)."""
    if not name:
        raise ValueError("no file named")
    path = (workdir / name).resolve()
    if not path.is_relative_to(workdir.resolve()) or ".git" in Path(name).parts:
        raise ValueError(f"{name!r} is outside the workspace")
    return path


def _run(argv: list[str], cwd: Path, environ: Mapping[str, str]) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=dict(environ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        name = "netskyctl" if argv[0] == sys.executable else argv[0]
        raise ValueError(f"{name} exited {done.returncode}: {tail[0]}")
    return done.stdout
