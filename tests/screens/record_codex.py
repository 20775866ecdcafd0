"""Record the screens of a Codex CLI release for tests/screens/codex-<version>/.

``python -m tests.screens.record_codex --codex PATH --out DIR [--only a,b] [--sizes 100x30]``

Each scenario runs once per terminal size, in a fresh temporary ``HOME`` (``auth.json``
with a fake API key unless the scenario is about signing in; ``config.toml`` pointing
``openai_base_url`` at ``tests/fake_openai.py`` on 127.0.0.1), a fresh workdir and its
own tmux server on a private socket (``tmux -L netsky-screens-<random>``). The Codex
environment is this one minus ``OPENAI_*``/``CODEX_*``, with ``LANG=C.UTF-8``.

A screen is captured with ``tmux capture-pane -p`` (visible screen, no ``-e``) once it
has not changed for 1.5 s; start-up and busy frames are taken as soon as they show.
The file is ``DIR/<name>.<cols>x<rows>.txt``. When an awaited screen does not come,
the scenario stops, the screen is kept as ``BASE/_unexpected/<scenario>.<size>.txt``
and the run goes on; ``BASE/_log.txt`` (``--base``, default /tmp/codex-rec) says what
happened (the config.toml Codex wrote, the requests the fake API got). Codex's
app-server daemons under the temporary ``HOME`` are killed by pid at the end of each
scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.fake_openai import (
    FakeOpenAI,
    PatchCall,
    RateLimit,
    Reply,
    ShellCall,
    Stall,
    Text,
    UsageLimit,
)

FAKE_KEY = "sk-netsky-test-" + "y" * 32
STABLE_S = 1.5
POLL_S = 0.1
SIZES = ((100, 30), (200, 50))
#: What a Codex that takes input shows (0.169 and 0.171): the "<model> default · <cwd>"
#: status line over the "← for agents · ? for shortcuts" footer.
READY = r"^  ← for agents · \? for shortcuts"
STATUS = r"^  \S.* default · /"
BUSY = r"esc to interrupt"
CHANNEL = '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">'
PASTE_SHORT = CHANNEL + "hello</channel>"
PASTE_LONG = "\n".join(
    [CHANNEL + "line 1 of a longer message"]
    + [f"line {i} of a longer message" for i in range(2, 12)]
    + ["</channel>"]
)
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"


class Unexpected(Exception):
    """An awaited screen did not come."""


def say(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


@dataclass
class Run:
    """One scenario at one size: its tmux pane, fake API, HOME and workdir."""

    scenario: str
    cols: int
    rows: int
    out: Path
    home: Path
    workdir: Path
    api: FakeOpenAI
    socket: str = field(default_factory=lambda: f"netsky-screens-{secrets.token_hex(4)}")
    log: list[str] = field(default_factory=list)

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        res = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=env,
        )
        return res.stdout

    def start(self, argv: Sequence[str], env: dict[str, str]) -> None:
        size = ["-x", str(self.cols), "-y", str(self.rows)]
        cmd = ["new-session", "-d", "-s", "rec", *size, "-c", str(self.workdir), *argv]
        self.tmux("-f", "/dev/null", *cmd, env=env)

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "rec")

    # --- waiting -------------------------------------------------------------------
    def wait(self, pattern: str, timeout_s: float = 60, absent: str | None = None) -> str:
        """The screen once ``pattern`` matches a line (and ``absent`` matches none)."""
        rx, no = re.compile(pattern, re.M), re.compile(absent, re.M) if absent else None
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.screen()
            if rx.search(text) and not (no and no.search(text)):
                return text
            if time.monotonic() > deadline:
                self.keep_unexpected(text)
                raise Unexpected(f"no /{pattern}/ within {timeout_s}s")
            time.sleep(POLL_S)

    def stable(self, timeout_s: float = 60) -> str:
        """The screen once it has not changed for STABLE_S."""
        last, since = self.screen(), time.monotonic()
        deadline = since + timeout_s
        while time.monotonic() - since < STABLE_S:
            if time.monotonic() > deadline:
                raise Unexpected(f"the screen did not settle within {timeout_s}s")
            time.sleep(POLL_S)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def ready(self, timeout_s: float = 60) -> str:
        self.wait(READY, timeout_s)
        return self.stable()

    # --- saving --------------------------------------------------------------------
    def save(self, name: str, text: str) -> None:
        path = self.out / f"{name}.{self.cols}x{self.rows}.txt"
        path.write_text(text, encoding="utf-8")
        self.note(f"saved {path.name}")

    def capture(self, name: str) -> str:
        text = self.stable()
        self.save(name, text)
        return text

    def snap(self, name: str) -> str:
        text = self.screen()
        self.save(name, text)
        return text

    def keep_unexpected(self, text: str) -> None:
        d = self.home.parent / "_unexpected"
        d.mkdir(exist_ok=True)
        (d / f"{self.scenario}.{self.cols}x{self.rows}.txt").write_text(text, encoding="utf-8")

    def note(self, msg: str) -> None:
        line = f"[{self.scenario} {self.cols}x{self.rows}] {msg}"
        self.log.append(line)
        say(line)

    # --- input ---------------------------------------------------------------------
    def keys(self, *keys: str) -> None:
        for k in keys:
            self.tmux("send-keys", "-t", "rec", k)
            time.sleep(0.3)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "rec", "-l", text)
        time.sleep(0.3)

    def prompt(self, text: str) -> None:
        """Type a prompt and submit it."""
        self.type(text)
        time.sleep(0.5)
        self.keys("Enter")

    def paste(self, text: str) -> None:
        """A bracketed paste, as netsky delivers a message (load-buffer + paste-buffer -p)."""
        buf = self.home / "paste.txt"
        buf.write_text(text, encoding="utf-8")
        self.tmux("load-buffer", "-b", "rec", str(buf))
        self.tmux("paste-buffer", "-p", "-d", "-b", "rec", "-t", "rec")


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: Callable[[Run], None]
    script: Callable[[], list[Reply]] = list
    signed_in: bool = True  # write auth.json
    trusted: bool = True  # a [projects."<workdir>"] trust_level = "trusted" entry
    git: bool = False  # the workdir is a git repository
    env_key: bool = False  # OPENAI_API_KEY in Codex's environment
    args: tuple[str, ...] = ()


# --- scenarios ---------------------------------------------------------------------------
def sign_in(prefix: str) -> Callable[[Run], None]:
    def steps(r: Run) -> None:
        r.wait(r"Choose how you want to use Codex")
        r.capture(prefix)
        r.keys("Down")
        r.wait(r"^> 2\. Sign in with Device Code")
        r.capture(f"{prefix}-down")
        r.keys("Up")
        r.wait(r"^> 1\. ")
        r.stable()
        r.keys("3")
        r.wait(r"^\W*Sign in another way\s*$")
        r.capture(f"{prefix}-other")
        r.keys("Down")
        r.wait(r"^> 2\. Use Amazon Bedrock")
        r.capture(f"{prefix}-other-down")
        r.keys("Up")
        r.wait(r"^> 1\. Use an OpenAI API key")
        r.stable()
        r.keys("Enter")
        r.wait(r"Use your own OpenAI API key")
        if prefix == "sign-in":
            r.capture("sign-in-api-key")
            r.stable()
            r.type(FAKE_KEY)
            r.wait(FAKE_KEY)
            r.capture("sign-in-api-key-typed")
        else:
            r.capture("sign-in-env-api-key")
        r.keys("Enter")
        r.ready(90)
        r.save(f"{prefix}-done", r.stable())

    return steps


def sign_in_chatgpt(r: Run) -> None:
    r.wait(r"Choose how you want to use Codex")
    r.stable()
    r.keys("Enter")
    r.wait(r"(?i)browser")
    r.capture("sign-in-chatgpt")
    r.keys("Escape")


def trust_git(r: Run) -> None:
    r.wait(r"Trust this folder\?", 90)
    r.capture("trust-git")
    r.keys("Down")
    r.wait(r"^› 2\. Back to")
    r.capture("trust-git-down")
    r.keys("Up")
    r.wait(r"^› 1\. Trust and continue")
    r.stable()
    r.keys("Enter")
    r.ready()
    r.capture("trust-git-accepted")


def trust_git_esc(r: Run) -> None:
    r.wait(r"Trust this folder\?", 90)
    r.stable()
    r.keys("Escape")
    r.wait(r"Agent command center")
    r.capture("trust-git-esc")


def trust_git_back(r: Run) -> None:
    r.wait(r"Trust this folder\?", 90)
    r.stable()
    r.keys("2")  # a digit activates its option at once ("1" only moves the highlight)
    r.wait(r"Agent command center")
    r.capture("agent-command-center")


def trust_plain(r: Run) -> None:
    r.ready(90)
    r.capture("trust-plain")


def idle(r: Run) -> None:
    r.wait(r"^\s*\? for shortcuts\s*$", 60)
    r.snap("starting")
    r.ready(90)
    r.capture("idle")
    r.prompt("say hello")
    r.wait(r"Hello from the fake API")
    r.ready()
    r.capture("reply")
    r.prompt("take your time")
    r.wait(r"\(2s • esc to interrupt\)")
    r.snap("busy-1")
    r.wait(r"\(3s • esc to interrupt\)")
    r.snap("busy-2")
    r.keys("Escape")
    r.wait(r"interrupted")
    r.ready()
    r.capture("interrupted")


def pasted(r: Run) -> None:
    r.ready(90)
    r.paste(PASTE_SHORT)
    r.wait(r"hello</channel>")
    r.capture("pasted")
    r.keys("Enter")
    r.wait(BUSY)
    r.snap("submitted")


def pasted_long(r: Run) -> None:
    r.ready(90)
    r.paste(PASTE_LONG)
    r.wait(r"</channel>")
    r.capture("pasted-long")


def approval_exec(r: Run) -> None:
    r.ready(90)
    r.prompt("make a file")
    r.wait(r"Would you like to run the following command")
    r.capture("approval-exec")
    r.keys("Down")
    r.wait(r"^› 2\. Yes, and don't ask again")
    r.capture("approval-exec-down")
    r.keys("Up")
    r.wait(r"^› 1\. Yes, proceed")
    r.stable()
    r.keys("y")
    r.wait(r"Ran it\.")
    r.ready()
    r.capture("approval-exec-approved")
    r.note(f"made-by-codex exists: {(r.workdir / 'made-by-codex').exists()}")


def approval_patch(r: Run) -> None:
    r.ready(90)
    r.prompt("add hello.txt")
    r.wait(r"Would you like to make the following edits")
    r.capture("approval-patch")
    r.keys("Down")
    r.wait(r"^› 2\. Yes, and don't ask again")
    r.capture("approval-patch-down")
    r.keys("Up")
    r.wait(r"^› 1\. Yes, proceed")
    r.stable()
    r.keys("Escape")
    r.wait(r"interrupted")
    r.ready()
    r.capture("approval-patch-declined")
    r.note(f"hello.txt exists: {(r.workdir / 'hello.txt').exists()}")


LIMITS = tuple(f"usage-limit{x}" for x in ("", "-pro", "-plus", "-team", "-free", "-days"))


def limits_script() -> list[Reply]:
    plans = [None, "pro", "plus", "team", "free"]
    script: list[Reply] = [UsageLimit(plan_type=p) for p in plans]
    return [*script, UsageLimit(resets_in_s=3 * 86400)]


def usage_limits(r: Run) -> None:
    r.ready(90)
    for n, name in enumerate(LIMITS, 1):
        r.prompt(f"turn {n}")
        r.wait(rf"^› turn {n}\s*$(?s:.*)^■ ")
        r.ready()
        r.capture(name)


def rate_limit(r: Run) -> None:
    r.ready(90)
    r.prompt("hit the rate limit")
    r.wait(r"^■ ", 120)
    r.ready()
    r.capture("rate-limit")


SCENARIOS = (
    Scenario("sign-in", sign_in("sign-in"), signed_in=False),
    Scenario("sign-in-env", sign_in("sign-in-env"), signed_in=False, env_key=True),
    Scenario("sign-in-chatgpt", sign_in_chatgpt, signed_in=False),
    Scenario("trust-git", trust_git, trusted=False, git=True),
    Scenario("trust-git-esc", trust_git_esc, trusted=False, git=True),
    Scenario("agent-command-center", trust_git_back, trusted=False, git=True),
    Scenario("trust-plain", trust_plain, trusted=False),
    Scenario("idle", idle, lambda: [Text("Hello from the fake API."), Stall(120)]),
    Scenario("pasted", pasted, lambda: [Stall(120)]),
    Scenario("pasted-long", pasted_long),
    Scenario(
        "approval-exec", approval_exec, lambda: [ShellCall("touch made-by-codex"), Text("Ran it.")]
    ),
    Scenario(
        "approval-patch",
        approval_patch,
        lambda: [PatchCall(PATCH), Text("Added it.")],
        args=("-s", "read-only"),
    ),
    Scenario("usage-limit", usage_limits, limits_script),
    Scenario("rate-limit", rate_limit, lambda: [RateLimit()]),
)


# --- running -----------------------------------------------------------------------------
def codex_pids(home: Path) -> list[int]:
    """Processes started under ``home``: its path in their command line or their HOME."""
    mine, found = str(home), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mine in cmdline or f"HOME={mine}".encode() in environ:
            found.append(int(d.name))
    return found


def kill_under(home: Path, run: Run) -> None:
    pids = codex_pids(home)
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        run.note(f"killing {pid}: {cmd[:200]}")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while (left := codex_pids(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def prepare(sc: Scenario, home: Path, workdir: Path, url: str) -> None:
    for d in (home, workdir):
        if d.exists():
            shutil.rmtree(d)
    (home / ".codex").mkdir(parents=True)
    workdir.mkdir(parents=True)
    if sc.git:
        subprocess.run(["git", "init", "-q", str(workdir)], check=True, timeout=30)
    config = f'check_for_update_on_startup = false\nopenai_base_url = "{url}"\n'
    if sc.trusted:
        config += f'\n[projects."{workdir}"]\ntrust_level = "trusted"\n'
    (home / ".codex" / "config.toml").write_text(config)
    if sc.signed_in:
        auth = {"OPENAI_API_KEY": FAKE_KEY, "auth_mode": "apikey"}
        (home / ".codex" / "auth.json").write_text(json.dumps(auth))


def environment(sc: Scenario, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "TMUX"))}
    env |= {"HOME": str(home), "LANG": "C.UTF-8"}
    if sc.env_key:
        env["OPENAI_API_KEY"] = FAKE_KEY
    return env


def record(sc: Scenario, codex: Path, out: Path, base: Path, cols: int, rows: int) -> list[str]:
    home = base / f"home-{sc.name}-{cols}"
    workdir = base / "rec" / f"work-{sc.name}-{cols}"
    with FakeOpenAI(sc.script()) as api:
        prepare(sc, home, workdir, api.url)
        config_before = (home / ".codex" / "config.toml").read_text()
        run = Run(sc.name, cols, rows, out, home, workdir, api)
        try:
            run.start([str(codex), *sc.args], environment(sc, home))
            sc.steps(run)
        except (Unexpected, subprocess.CalledProcessError) as e:
            run.note(f"STOPPED: {e}")
        finally:
            run.stop()
            kill_under(home, run)
        config = (home / ".codex" / "config.toml").read_text()
        if config != config_before:
            run.note("config.toml afterwards:\n" + config)
        auth = home / ".codex" / "auth.json"
        if not sc.signed_in and auth.exists():
            run.note(f"auth.json afterwards: {auth.read_text()}")
        posts = [(m, p) for m, p, _ in api.requests]
        run.note(f"requests: {posts}")
    return run.log


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.screens.record_codex")
    ap.add_argument("--codex", type=Path, required=True, help="the codex executable")
    ap.add_argument("--out", type=Path, required=True, help="directory for the .txt files")
    ap.add_argument("--base", type=Path, default=Path("/tmp/codex-rec"), help="HOMEs, workdirs")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--sizes", default="100x30,200x50", help="e.g. 100x30,200x50")
    a = ap.parse_args(argv)
    names = [s.name for s in SCENARIOS]
    only = [n for n in a.only.split(",") if n]
    if bad := [n for n in only if n not in names]:
        ap.error(f"unknown scenario(s) {bad}; known: {names}")
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    for sc in SCENARIOS:
        if only and sc.name not in only:
            continue
        for cols, rows in sizes:
            log += record(sc, a.codex.absolute(), a.out, a.base.absolute(), cols, rows)
    with (a.base / "_log.txt").open("a", encoding="utf-8") as f:
        f.write("\n".join(log) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
