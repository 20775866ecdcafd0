"""The demo agent: a tiny stand-in for an AI agent, for demos, tests and drills.

Run as ``python -m netskyd.agents.demo_agent [--crash-at-start]`` in a tmux pane
(netsky's ``demo`` runtime). Environment: ``AGENT_N``, ``NETSKY_HOME``,
``NETSKY_SESSION_ID`` (set by the spawn path). It:

- prints a readiness line and writes ``state/ready/<agent>.json``;
- reads ``<channel ...>text</channel>`` blocks pasted into its pane (and lines
  typed by the owner) and shows each as ``← <from>: <text>``;
- answers ``ping`` with a ``pong`` envelope to the sender, through the bus;
- on a terminal, shows an input prompt ``<agent>> `` whenever it waits for input
  (the ``demo`` runtime's idle prompt in ``netskyd.runtimes.catalogue``; gone while it hangs).

Drill commands (in an envelope or typed into the pane):

- ``crash``: exits with status 3 (CRASH_EXIT_CODE).
- ``hang``: prints ``<agent>: hanging (ignoring input)``, then prints nothing and
  acts on nothing, ever; it keeps reading and discarding input (so pastes do not
  pile up in the pty) and exits only when stdin closes or on a signal.
- a ``brief`` (text ``brief for <agent>: ...``) with steps (``write``, ``append``,
  ``commit``, ``report``, ``done``; netskyd.agents.demo_work): carried out with real git in
  its workspace, reported with ``netskyctl clone report``, so the work loop runs end to end
  with no model.
- ``restart [handoff text]``: asks for a planned restart the way the ``/restart`` skill
  does, ``netskyctl restart --request --handoff -`` (writing ``state/restart-request``
  itself only if that fails), the handoff text as UTF-8
  (default ``handoff from <agent>: planned restart requested by the demo agent``),
  prints ``<agent>: restart requested (N bytes of handoff)`` and exits 0. The
  watchdog claims the file by rename; the text is what the next agent0 receives.

``--crash-at-start`` prints one line and exits 3 at once, before the readiness
record is written: a runtime that never comes up, for crash-loop tests (via the
``custom`` runtime).

Stdlib only, so it starts fast and needs nothing the daemon has not already got.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from netsky_shared.errors import NetskyError
from netsky_shared.maildir import atomic_write_bytes, new_envelope, send
from netsky_shared.paths import Paths
from netskyd.agents import demo_work
from netskyd.agents.readiness import write_ready_record

CRASH_EXIT_CODE = 3
RESTART_REQUEST = "restart-request"
_RESTART = re.compile(r"restart(?:\s+(.*))?", re.DOTALL | re.IGNORECASE)
_BLOCK = re.compile(r"<channel\b([^>]*)>\n?(.*?)\n?</channel>", re.DOTALL)
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_PASTE_MARKERS = re.compile(r"\x1b\[20[01]~")


class DemoAgent:
    """State of one demo agent process; ``feed`` takes raw input and acts on whole blocks."""

    def __init__(
        self,
        agent: str,
        paths: Paths,
        out: TextIO,
        environ: Mapping[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.agent = agent
        self.paths = paths
        self.out = out
        #: Where brief steps run (the workspace) and with what environment.
        self.environ = dict(os.environ if environ is None else environ)
        self.workdir = Path.cwd() if workdir is None else workdir
        self.buffer = ""
        #: Set by ``hang``: from then on every input is read and thrown away.
        self.hanging = False
        #: True while the prompt is the last thing on the terminal's line.
        self.prompting = False

    def say(self, line: str) -> None:
        # Over the prompt, if one is showing: carriage return, erase the line.
        self.out.write(("\r\x1b[K" if self.prompting else "") + line + "\n")
        self.out.flush()
        self.prompting = False

    def prompt(self) -> None:
        """Show the idle prompt ``<agent>> `` (unless hanging: a hung agent shows none)."""
        if self.hanging or self.prompting:
            return
        self.out.write(f"{self.agent}> ")
        self.out.flush()
        self.prompting = True

    def feed(self, data: str) -> int | None:
        """Consume input; return an exit code when the agent must exit, else None."""
        if self.hanging:
            return None
        self.buffer += _PASTE_MARKERS.sub("", data).replace("\r", "\n")
        while True:
            m = _BLOCK.search(self.buffer)
            if m is None:
                break
            self.buffer = self.buffer[m.end() :]
            attrs = dict(_ATTR.findall(m.group(1)))
            code = self.handle(attrs.get("from", "owner"), m.group(2).strip(), attrs)
            if code is not None or self.hanging:
                return code
        if "<channel" not in self.buffer and "\n" in self.buffer:
            # Lines typed by a person (outside any block) are commands from the owner.
            *lines, self.buffer = self.buffer.split("\n")
            for line in lines:
                if line.strip():
                    code = self.handle("owner", line.strip(), {})
                    if code is not None or self.hanging:
                        return code
        return None

    def receipt(self, sender: str, text: str, attrs: Mapping[str, str]) -> None:
        """Append what arrived to ``state/demo/<agent>.received.jsonl`` (tests read it)."""
        row = {"ts_ns": time.time_ns(), "from": sender, "text": text, **attrs}
        path = self.paths.demo_receipts(self.agent)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        except OSError as e:
            self.say(f"{self.agent}: could not write receipt: {e}")

    def child_env(self) -> dict[str, str]:
        """The environment of a netskyctl this agent runs: its own, with NETSKY_HOME
        its paths' (never another home's)."""
        return {**self.environ, "NETSKY_HOME": str(self.paths.home)}

    def action(self, row: dict[str, object]) -> None:
        """Append what the agent did to ``state/demo/<agent>.actions.jsonl`` (tests read it)."""
        path = self.paths.demo_receipts(self.agent).with_name(f"{self.agent}.actions.jsonl")
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"ts_ns": time.time_ns(), **row}) + "\n")
        except OSError as e:
            self.say(f"{self.agent}: could not write the action: {e}")

    def handle(self, sender: str, text: str, attrs: Mapping[str, str]) -> int | None:
        """Act on one message; return an exit code to stop the agent."""
        self.say(f"← {sender}: {text}")
        self.receipt(sender, text, attrs)
        command = text.strip().lower()
        if command == "crash":
            self.say(f"{self.agent}: crashing on request (exit {CRASH_EXIT_CODE})")
            return CRASH_EXIT_CODE
        if command == "hang":
            self.say(f"{self.agent}: hanging (ignoring input)")
            self.hanging = True
            self.buffer = ""
            return None
        restart = _RESTART.fullmatch(text.strip())
        if restart is not None:
            return self.request_restart((restart.group(1) or "").strip())
        if demo_work.is_brief(self.agent, text) and demo_work.steps(text):
            ok = demo_work.run_steps(text, self.workdir, self.environ, self.say)
            self.say(f"{self.agent}: brief {'carried out' if ok else 'stopped at a failed step'}")
            return None
        owner_args = demo_work.owner_verb(text)
        if owner_args is not None:
            went, said = demo_work.run_owner_verb(owner_args, self.workdir, self.child_env())
            self.say(f"{self.agent}: owner line {'ok' if went else 'refused'}: {said}")
            self.action({"verb": owner_args[0] + " " + owner_args[1], "ok": went, "said": said})
            return None
        if command == "ping" and sender != "owner":
            envelope = new_envelope(self.agent, sender, "pong", chat_id=self.agent)
            try:
                send(self.paths, envelope)
            except NetskyError as e:
                self.say(f"{self.agent}: could not answer {sender}: {e}")
            else:
                self.say(f"→ {sender}: pong")
        return None

    def request_restart(self, handoff: str) -> int | None:
        """Write ``state/restart-request`` (tmp + rename) with ``handoff``; return 0 to exit.

        An empty ``handoff`` becomes the default text (module docstring). When the
        file cannot be written the agent says so and keeps running (returns None).
        """
        text = handoff or f"handoff from {self.agent}: planned restart requested by the demo agent"
        data = text.encode("utf-8")
        # The /restart skill's command (netskyd/agents/skills.py), as an AI agent runs it.
        went, said = demo_work.request_restart(text, self.workdir, self.child_env())
        self.action({"verb": "restart --request", "ok": went, "said": said})
        if not went:
            self.say(f"{self.agent}: netskyctl restart --request failed ({said}); writing it")
            try:
                atomic_write_bytes(self.paths.marker(RESTART_REQUEST), data)
            except OSError as e:
                self.say(f"{self.agent}: could not write the restart request: {e}")
                return None
        self.say(f"{self.agent}: restart requested ({len(data)} bytes of handoff)")
        return 0


def _quiet_tty(stream: TextIO) -> None:
    # Hide the echo of pasted text: the agent prints each message itself.
    try:
        import termios

        fd = stream.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (ImportError, OSError, ValueError):
        pass


def _parse_args(argv: Sequence[str]) -> bool | str:
    """Return whether ``--crash-at-start`` was given, or a usage message."""
    crash_at_start = False
    for arg in argv:
        if arg == "--crash-at-start":
            crash_at_start = True
        else:
            return (
                f"unknown argument {arg!r} "
                "(usage: python -m netskyd.agents.demo_agent [--crash-at-start])"
            )
    return crash_at_start


def main(environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> int:
    """Run the demo agent until stdin closes, it is told to crash or to restart.

    ``argv`` defaults to ``sys.argv[1:]``. Returns the exit code: 0 (stdin closed,
    or a restart requested), 2 (usage, or AGENT_N/NETSKY_HOME missing), 3 (crash,
    or ``--crash-at-start``).
    """
    env = os.environ if environ is None else environ
    parsed = _parse_args(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, str):
        sys.stderr.write(f"demo agent: {parsed}\n")
        return 2
    n = env.get("AGENT_N", "")
    home = env.get("NETSKY_HOME")
    if not n or not home:
        sys.stderr.write("demo agent: AGENT_N and NETSKY_HOME must be set (netskyd sets them)\n")
        return 2
    agent = f"agent{n}"
    paths = Paths(Path(home))
    session_id = env.get("NETSKY_SESSION_ID", "")
    demo = DemoAgent(agent, paths, sys.stdout, env)
    if parsed:
        demo.say(f"netsky demo agent {agent}: crashing at start (exit {CRASH_EXIT_CODE})")
        return CRASH_EXIT_CODE
    if sys.stdin.isatty():
        _quiet_tty(sys.stdin)
    write_ready_record(paths.ready_file(agent), agent, session_id, "demo", os.getpid())
    demo.say(
        f"netsky demo agent {agent} ready (session {session_id[:8] or '-'}, pid {os.getpid()})"
    )
    demo.say(
        "send me 'ping' over the bus; drills: 'crash' (exit 3), 'hang' (ignore all input), "
        "'restart [handoff]' (planned restart)"
    )
    interactive = sys.stdout.isatty()
    while True:
        if interactive and "<channel" not in demo.buffer:
            demo.prompt()
        line = sys.stdin.readline()
        if line == "":
            return 0
        code = demo.feed(line)
        if code is not None:
            return code


if __name__ == "__main__":
    raise SystemExit(main())
