"""The demo agent: a tiny stand-in for an AI agent, for demos, tests and drills.

Run as ``python -m netskyd.demo_agent`` in a tmux pane (netsky's ``demo``
runtime). Environment: ``AGENT_N``, ``NETSKY_HOME``, ``NETSKY_SESSION_ID``
(set by the spawn path). It:

- prints a readiness line and writes ``state/ready/<agent>.json``;
- reads ``<channel ...>text</channel>`` blocks pasted into its pane and shows
  each as ``← <from>: <text>``;
- answers ``ping`` with a ``pong`` envelope to the sender, through the bus;
- on ``crash`` exits with status 3.

Stdlib only, so it starts fast and needs nothing the daemon has not already got.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from netskyd.errors import NetskyError
from netskyd.maildir import new_envelope, send
from netskyd.paths import Paths
from netskyd.readiness import write_ready_record

CRASH_EXIT_CODE = 3
_BLOCK = re.compile(r"<channel\b([^>]*)>\n?(.*?)\n?</channel>", re.DOTALL)
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_PASTE_MARKERS = re.compile(r"\x1b\[20[01]~")


class DemoAgent:
    """State of one demo agent process; ``feed`` takes raw input and acts on whole blocks."""

    def __init__(self, agent: str, paths: Paths, out: TextIO) -> None:
        self.agent = agent
        self.paths = paths
        self.out = out
        self.buffer = ""

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def feed(self, data: str) -> int | None:
        """Consume input; return an exit code when the agent must exit, else None."""
        self.buffer += _PASTE_MARKERS.sub("", data).replace("\r", "\n")
        while True:
            m = _BLOCK.search(self.buffer)
            if m is None:
                break
            self.buffer = self.buffer[m.end() :]
            attrs = dict(_ATTR.findall(m.group(1)))
            code = self.handle(attrs.get("from", "owner"), m.group(2).strip(), attrs)
            if code is not None:
                return code
        if "<channel" not in self.buffer and "\n" in self.buffer:
            # Lines typed by a person (outside any block) are commands from the owner.
            *lines, self.buffer = self.buffer.split("\n")
            for line in lines:
                if line.strip():
                    code = self.handle("owner", line.strip(), {})
                    if code is not None:
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

    def handle(self, sender: str, text: str, attrs: Mapping[str, str]) -> int | None:
        """Act on one message; return an exit code to stop the agent."""
        self.say(f"← {sender}: {text}")
        self.receipt(sender, text, attrs)
        command = text.strip().lower()
        if command == "crash":
            self.say(f"{self.agent}: crashing on request (exit {CRASH_EXIT_CODE})")
            return CRASH_EXIT_CODE
        if command == "ping" and sender != "owner":
            envelope = new_envelope(self.agent, sender, "pong", chat_id=self.agent)
            try:
                send(self.paths, envelope)
            except NetskyError as e:
                self.say(f"{self.agent}: could not answer {sender}: {e}")
            else:
                self.say(f"→ {sender}: pong")
        return None


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


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the demo agent until stdin closes or it is told to crash; return the exit code."""
    env = os.environ if environ is None else environ
    n = env.get("AGENT_N", "")
    home = env.get("NETSKY_HOME")
    if not n or not home:
        sys.stderr.write("demo agent: AGENT_N and NETSKY_HOME must be set (netskyd sets them)\n")
        return 2
    agent = f"agent{n}"
    paths = Paths(Path(home))
    session_id = env.get("NETSKY_SESSION_ID", "")
    demo = DemoAgent(agent, paths, sys.stdout)
    if sys.stdin.isatty():
        _quiet_tty(sys.stdin)
    write_ready_record(paths.ready_file(agent), agent, session_id, "demo", os.getpid())
    demo.say(
        f"netsky demo agent {agent} ready (session {session_id[:8] or '-'}, pid {os.getpid()})"
    )
    demo.say("send me 'ping' over the bus; 'crash' makes me exit non-zero")
    while True:
        line = sys.stdin.readline()
        if line == "":
            return 0
        code = demo.feed(line)
        if code is not None:
            return code


if __name__ == "__main__":
    raise SystemExit(main())
