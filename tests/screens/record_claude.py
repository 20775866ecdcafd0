"""Record the screens of a Claude Code release for tests/screens/claude-code-<version>/.

Usage::

    python -m tests.screens.record_claude --claude PATH --out DIR [--only NAME ...]

Every scenario starts the real CLI in a fresh temporary ``HOME`` (``<base>/<scenario>-<cols>/
home``, working directory ``.../work``) on a private tmux server (``tmux -L
netsky-screens-<hex>``, ``remain-on-exit on``, nothing else configured), against the fake
Messages API of ``tests/fake_anthropic.py`` on 127.0.0.1. Outbound HTTP(S) is pointed at a
closed port on 127.0.0.1 (``HTTPS_PROXY``), so nothing leaves the machine. Screens are
``tmux capture-pane -p`` (visible screen, no ``-e``, no history) once the screen has not changed
for 1.5 s (busy frames: at fixed times while the spinner runs), saved as
``DIR/<name>.<cols>x<rows>.txt`` at 100x30 and 200x50. What each scenario did after its
screens (the key pressed, the screen that followed, what was written to ``~/.claude.json`` and
the settings files) goes to ``<base>/log/<scenario>-<cols>.txt``, for the README.

Only the tmux servers this script started are killed (``tmux -L <its socket> kill-server``);
the CLI runs inside them. See tests/screens/claude-code-2.1.332/README.md for what was found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fake_anthropic import FakeAnthropic, Reply, Text, ToolUse, UsageLimit

KEY = "sk-ant-netsky-test-0123456789abcdefghijklmnopqrst"
SIZES = ((100, 30), (200, 50))
QUIET_S = 1.5
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, so proxied requests fail
PASTE_SHORT = (
    '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">'
    "hello</channel>"
)
PASTE_LONG = "\n".join(
    [
        '<channel source="agent" chat_id="agent1" from="agent1" ts="2026-12-04T10:00:00Z">',
        *(f"line {n} of a longer message from agent1" for n in range(1, 11)),
        "</channel>",
    ]
)
SLOW_WORDS = " ".join(f"word{n}" for n in range(60))

Json = dict[str, Any]
_BLINK = re.compile(r"^●", re.MULTILINE)


#: Deadline of every tmux or CLI call this script makes.
CALL_TIMEOUT_S = 60.0


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` with a deadline (``CALL_TIMEOUT_S`` unless given)."""
    kw.setdefault("timeout", CALL_TIMEOUT_S)
    return subprocess.run(cmd, **kw)


def say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


@dataclass
class Start:
    """How a scenario's CLI is started. ``seed`` builds ``~/.claude.json`` from the workdir."""

    seed: Callable[[Path, str], Json | None] | None = None
    settings: Json | None = None  # ~/.claude/settings.json
    env: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()  # environment variables to remove
    args: tuple[str, ...] = ()
    mcp_json: Json | None = None  # <workdir>/.mcp.json
    files: dict[str, str] = field(default_factory=dict)  # <workdir>/<name>: text
    script: Callable[[Path], list[Reply]] = lambda work: []


def full_seed(work: Path, version: str) -> Json:
    """The seed that suppresses the first-run screens (README: "The seed")."""
    return {
        "numStartups": 5,
        "theme": "dark",
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": version,
        "customApiKeyResponses": {"approved": [KEY[-20:]], "rejected": []},
        "projects": {
            str(work): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}
        },
    }


def seed_without(*keys: str, **extra: Any) -> Callable[[Path, str], Json]:
    def seed(work: Path, version: str) -> Json:
        out = {k: v for k, v in full_seed(work, version).items() if k not in keys}
        out.update(extra)
        return out

    return seed


class Session:
    """One CLI run in one private tmux server."""

    def __init__(
        self, claude: Path, version: str, root: Path, start: Start, cols: int, rows: int, out: Path
    ) -> None:
        self.root, self.cols, self.rows, self.out = root, cols, rows, out
        if root.exists():
            shutil.rmtree(root)
        self.home, self.work = root / "home", root / "work"
        (self.home / ".claude").mkdir(parents=True)
        self.work.mkdir()
        seed = start.seed(self.work, version) if start.seed else None
        if seed is not None:
            (self.home / ".claude.json").write_text(json.dumps(seed, indent=2))
        if start.settings is not None:
            (self.home / ".claude" / "settings.json").write_text(json.dumps(start.settings))
        if start.mcp_json is not None:
            (self.work / ".mcp.json").write_text(json.dumps(start.mcp_json))
        for name, text in start.files.items():
            (self.work / name).write_text(text)
        self.api = FakeAnthropic(start.script(self.work))
        self.api.__enter__()
        env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": self.api.url,
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            **{k: CLOSED for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **start.env,
        }
        for name in start.drop:
            env.pop(name, None)
        args = [a.replace("{root}", str(root)) for a in start.args]
        self.socket = f"netsky-screens-{uuid.uuid4().hex[:10]}"
        conf = root / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\n")
        self.tmux = ["tmux", "-L", self.socket, "-f", str(conf)]
        size = ["-x", str(cols), "-y", str(rows)]
        new = ["new-session", "-d", "-s", "rec", *size, "-c", str(self.work)]
        _run([*self.tmux, *new, str(claude), *args], env=env, check=True)
        self.log: list[str] = []

    # -- looking ------------------------------------------------------------------------
    def capture(self) -> str:
        cmd = [*self.tmux, "capture-pane", "-p", "-t", "rec"]
        return str(_run(cmd, capture_output=True, text=True, check=True).stdout)

    def stable(self, timeout_s: float = 40.0, quiet_s: float = QUIET_S) -> str:
        """The screen once it has not changed for ``quiet_s`` (the last one after timeout).

        A blinking ``●`` in front of a tool call that waits for permission (2.1.332, Bash)
        does not count as a change: the frame saved may show it or not.
        """
        last, since = self.capture(), time.monotonic()
        deadline = since + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.capture()
            if _BLINK.sub(" ", now) != _BLINK.sub(" ", last):
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return now
        self.note(f"(not stable after {timeout_s}s)")
        return last

    def until(self, *texts: str, timeout_s: float = 40.0) -> str:
        """The stable screen once it contains one of ``texts``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(t in self.capture() for t in texts):
                return self.stable()
            time.sleep(0.2)
        screen = self.capture()
        raise RuntimeError(f"{self.root.name}: {texts!r} never showed:\n{screen}")

    def dead(self) -> str | None:
        """The exit status if the CLI has exited."""
        fmt = "#{pane_dead} #{pane_dead_status}"
        cmd = [*self.tmux, "display-message", "-p", "-t", "rec", fmt]
        out = _run(cmd, capture_output=True, text=True, check=False).stdout.split()
        return out[1] if out and out[0] == "1" and len(out) > 1 else None

    # -- acting -------------------------------------------------------------------------
    def keys(self, *keys: str) -> None:
        _run([*self.tmux, "send-keys", "-t", "rec", *keys], check=True)

    def type(self, text: str) -> None:
        _run([*self.tmux, "send-keys", "-t", "rec", "-l", text], check=True)

    def prompt(self, text: str) -> None:
        self.type(text)
        time.sleep(0.5)
        self.keys("Enter")

    def paste(self, text: str) -> None:
        """A bracketed paste (``paste-buffer -p``) of ``text``."""
        path = self.root / "paste.txt"
        path.write_text(text)
        buf = f"rec-{uuid.uuid4().hex[:6]}"
        _run([*self.tmux, "load-buffer", "-b", buf, str(path)], check=True)
        paste = ["paste-buffer", "-p", "-d", "-b", buf, "-t", "rec"]
        _run([*self.tmux, *paste], check=True)

    # -- recording ----------------------------------------------------------------------
    def save(self, name: str, screen: str | None = None) -> str:
        screen = self.stable() if screen is None else screen
        path = self.out / f"{name}.{self.cols}x{self.rows}.txt"
        path.write_text(screen, encoding="utf-8")
        self.note(f"saved {path.name}")
        return screen

    def note(self, text: str) -> None:
        self.log.append(text)

    def after(self, what: str, screen: str | None = None) -> str:
        """Log the screen (and exit status) that followed ``what``."""
        screen = self.stable() if screen is None else screen
        status = self.dead()
        exited = f" (exited, status {status})" if status is not None else ""
        self.note(f"--- after {what}{exited}:\n{screen.rstrip()}\n---")
        return screen

    def state(self) -> None:
        """Log the state files the CLI keeps (for the README's 'what is persisted')."""
        files = [
            self.home / ".claude.json",
            self.home / ".claude" / "settings.json",
            self.work / ".claude" / "settings.local.json",
        ]
        for path in files:
            if not path.exists():
                self.note(f"{path.name}: absent")
                continue
            try:
                data = json.loads(path.read_text())
            except ValueError:
                self.note(f"{path}: not JSON")
                continue
            if isinstance(data, dict) and "projects" in data:
                data["projects"] = {
                    k: {n: v for n, v in p.items() if not n.startswith("last")}
                    for k, p in data["projects"].items()
                }
            for noisy in ("pluginUsage", "machineID", "userID", "cachedGrowthBookFeatures"):
                if isinstance(data, dict):
                    data.pop(noisy, None)
            self.note(f"{path.relative_to(self.root)}: {json.dumps(data, sort_keys=True)}")

    def close(self) -> None:
        _run([*self.tmux, "kill-server"], capture_output=True, check=False, timeout=30)
        Path(f"/tmp/tmux-{os.getuid()}", self.socket).unlink(missing_ok=True)
        self.api.__exit__(None, None, None)
        requests = [
            f"{r.method} {r.path} tools={bool(isinstance(r.body, dict) and r.body.get('tools'))}"
            for r in self.api.requests
        ]
        self.note("requests: " + "; ".join(requests))


# -- scenarios ------------------------------------------------------------------------------
Drive = Callable[[Session], None]


@dataclass
class Scenario:
    name: str
    start: Start
    drive: Drive
    sizes: tuple[tuple[int, int], ...] = SIZES


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, start: Start, sizes: tuple[tuple[int, int], ...] = SIZES
) -> Callable[[Drive], Drive]:
    def register(drive: Drive) -> Drive:
        SCENARIOS[name] = Scenario(name, start, drive, sizes)
        return drive

    return register


FULL = full_seed
DEFAULT_MODE = ("--permission-mode", "default")


@scenario("idle", Start(seed=FULL))
def idle(s: Session) -> None:
    s.save("idle", s.until("❯"))
    s.state()


@scenario(
    "busy",
    Start(seed=FULL, script=lambda w: [Text(SLOW_WORDS, delay_s=1.0, chunk_delay_s=0.35)]),
)
def busy(s: Session) -> None:
    s.until("❯")
    s.prompt("explain slowly")
    sent = time.monotonic()
    time.sleep(max(0.0, sent + 4.0 - time.monotonic()))
    s.save("busy-1", s.capture())
    time.sleep(max(0.0, sent + 5.0 - time.monotonic()))
    s.save("busy-2", s.capture())
    s.after("the reply finished", s.stable(timeout_s=60))


@scenario("pasted", Start(seed=FULL, script=lambda w: [Text("Got it.", delay_s=12.0)]))
def pasted(s: Session) -> None:
    s.until("❯")
    s.paste(PASTE_SHORT)
    s.save("pasted")
    s.keys("Enter")
    time.sleep(3.0)
    s.save("submitted", s.capture())
    s.after("the reply", s.stable(timeout_s=60))


@scenario("pasted-long", Start(seed=FULL))
def pasted_long(s: Session) -> None:
    s.until("❯")
    s.paste(PASTE_LONG)
    s.save("pasted-long")
    s.keys("Enter")
    s.after("Enter", s.stable(timeout_s=60))


@scenario("folder-trust", Start(seed=seed_without("projects")))
def folder_trust(s: Session) -> None:
    s.save("folder-trust", s.until("Enter to confirm"))
    s.keys("Down")
    s.save("folder-trust-down")
    s.keys("Down")
    s.after("a second Down")
    s.keys("Up")
    s.stable()
    s.keys("Enter")
    s.after("Enter on 'Yes, I trust this folder'")
    s.state()


@scenario("folder-trust-digit", Start(seed=seed_without("projects")), sizes=SIZES[:1])
def folder_trust_digit(s: Session) -> None:
    s.until("Enter to confirm")
    s.keys("2")
    s.after("the digit 2")
    s.state()


@scenario("folder-trust-esc", Start(seed=seed_without("projects")), sizes=SIZES[:1])
def folder_trust_esc(s: Session) -> None:
    s.until("Enter to confirm")
    s.keys("Enter")
    s.after("Enter on the preselected 'No, exit'")


@scenario("api-key", Start(seed=seed_without("customApiKeyResponses")))
def api_key(s: Session) -> None:
    s.save("api-key", s.until("Enter to confirm"))
    s.keys("Down")
    s.save("api-key-down")
    s.keys("Enter")
    s.after("Enter on 'Yes'")
    s.state()


@scenario("api-key-no", Start(seed=seed_without("customApiKeyResponses")), sizes=SIZES[:1])
def api_key_no(s: Session) -> None:
    s.until("Enter to confirm")
    s.keys("Enter")
    s.after("Enter on the preselected 'No (recommended)'")
    s.state()


BYPASS = Start(seed=FULL, env={"IS_SANDBOX": "1"}, args=("--dangerously-skip-permissions",))


@scenario("bypass-permissions", BYPASS)
def bypass(s: Session) -> None:
    s.save("bypass-permissions", s.until("Enter to confirm"))
    s.keys("Down")
    s.save("bypass-permissions-down")
    s.keys("Enter")
    s.after("Enter on 'Yes, I accept'")
    s.state()


@scenario("bypass-permissions-no", BYPASS, sizes=SIZES[:1])
def bypass_no(s: Session) -> None:
    s.until("Enter to confirm")
    s.keys("Escape")
    time.sleep(3.0)
    s.after("Esc (and 3 s)")


@scenario(
    "bypass-seeded",
    Start(
        seed=FULL,
        settings={"skipDangerousModePermissionPrompt": True},
        env={"IS_SANDBOX": "1"},
        args=("--dangerously-skip-permissions",),
    ),
    sizes=SIZES[:1],
)
def bypass_seeded(s: Session) -> None:
    s.after("start with skipDangerousModePermissionPrompt", s.until("❯"))


CHANNELS = Start(
    seed=lambda w, v: {**full_seed(w, v), "cachedGrowthBookFeatures": {"tengu_harbor": True}},
    drop=("DISABLE_TELEMETRY",),
    args=(
        "--dangerously-load-development-channels",
        "server:agent",
        "--mcp-config",
        "{root}/mcp.json",
    ),
    files={"../mcp.json": json.dumps({"mcpServers": {"agent": {"command": "/bin/cat"}}})},
)


@scenario("dev-channels", CHANNELS)
def dev_channels(s: Session) -> None:
    first = s.until("Enter to confirm", "❯")
    if "Enter to confirm" not in first:
        s.after("start (no dev-channels dialog)", first)
        return
    s.save("dev-channels", first)
    s.keys("Down")
    s.save("dev-channels-down")
    s.keys("Up")
    s.stable()
    s.keys("Enter")
    s.after("Enter on 'I am using this for local development'")


MCP = Start(seed=FULL, mcp_json={"mcpServers": {"agent": {"command": "/bin/cat"}}})


@scenario("mcp-server", MCP)
def mcp_server(s: Session) -> None:
    s.save("mcp-server", s.until("MCP server"))
    s.keys("Down")
    s.save("mcp-server-down")
    s.keys("Enter")
    s.after("Enter on the option after one Down")
    s.state()


@scenario("mcp-server-up", MCP, sizes=SIZES[:1])
def mcp_server_up(s: Session) -> None:
    s.until("MCP server")
    s.keys("Up")
    s.after("Up")
    s.keys("Enter")
    s.after("Enter")
    s.state()


ONBOARD = Start(seed=lambda w, v: {"customApiKeyResponses": {"approved": [KEY[-20:]]}})


@scenario("onboarding", ONBOARD)
def onboarding(s: Session) -> None:
    s.save("onboarding", s.until("Choose the text style", timeout_s=60))
    s.keys("Down")
    s.save("onboarding-down")
    s.keys("Enter")
    screen = s.after("Enter on the option after one Down")
    if "Security notes" in screen:
        s.save("onboarding-security", screen)
    for step in range(1, 6):  # whatever follows, until the prompt
        if s.dead() is not None or "for agents" in screen or "for shortcuts" in screen:
            break
        if "Yes, I trust this folder" in screen:
            s.keys("Down")  # "No, exit" is preselected
            s.stable()
        s.keys("Enter")
        screen = s.after(f"Enter (step {step})")
        if "Security notes" in screen:
            s.save("onboarding-security", screen)
    s.state()


def bash_script(work: Path) -> list[Reply]:
    cmd = {"command": "touch made-by-claude", "description": "Create a file"}
    return [ToolUse("Bash", cmd), Text("Done.")]


def write_script(work: Path) -> list[Reply]:
    return [ToolUse("Write", {"file_path": str(work / "hello.txt"), "content": "hello\n"})]


def edit_script(work: Path) -> list[Reply]:
    notes = str(work / "notes.txt")
    edit = {"file_path": notes, "old_string": "old line", "new_string": "new line"}
    return [ToolUse("Read", {"file_path": notes}), ToolUse("Edit", edit)]


def fetch_script(work: Path) -> list[Reply]:
    fetch = {"url": "https://example.com/", "prompt": "Summarise the page"}
    return [ToolUse("WebFetch", fetch)]


PERMISSIONS: dict[str, tuple[str, Callable[[Path], list[Reply]]]] = {
    "bash": ("make a file", bash_script),
    "write": ("write hello.txt", write_script),
    "edit": ("edit notes.txt", edit_script),
    "webfetch": ("fetch example.com", fetch_script),
}


def permission(kind: str) -> Drive:
    said = PERMISSIONS[kind][0]

    def drive(s: Session) -> None:
        s.until("❯")
        s.prompt(said)
        s.save(f"permission-{kind}", s.until("Do you want to"))
        s.keys("Down")
        s.save(f"permission-{kind}-down")
        s.keys("Up")
        s.stable()
        s.keys("Enter")
        s.after("Up, Enter")
        s.state()

    return drive


for _kind, (_said, _script) in PERMISSIONS.items():
    _start = Start(
        seed=FULL, args=DEFAULT_MODE, script=_script, files={"notes.txt": "old line\nkeep\n"}
    )
    scenario(f"permission-{_kind}", _start)(permission(_kind))


@scenario("permission-bash-digit", Start(seed=FULL, args=DEFAULT_MODE, script=bash_script))
def permission_bash_digit(s: Session) -> None:
    s.until("❯")
    s.prompt("make a file")
    s.until("Do you want to")
    s.keys("2")
    s.after("the digit 2")
    s.state()


@scenario("auto-mode", Start(seed=FULL, script=fetch_script))
def auto_mode(s: Session) -> None:
    """The default (auto) mode when the server-side safety check is missing."""
    s.until("❯")
    s.prompt("fetch example.com")
    s.save("auto-mode-unavailable", s.until("Auto mode can't check"))
    s.keys("Enter")
    s.save("permission-auto", s.until("Do you want to"))
    s.keys("Down")
    s.save("permission-auto-down")
    s.keys("Enter")
    s.after("Enter on the option after one Down")
    s.state()


QUESTION = {
    "questions": [
        {
            "question": "Which database should the service use?",
            "header": "Database",
            "multiSelect": False,
            "options": [
                {"label": "SQLite", "description": "A file next to the service"},
                {"label": "Postgres", "description": "The shared cluster"},
                {"label": "Redis", "description": "In memory, with snapshots"},
            ],
        }
    ]
}


@scenario(
    "owner-question",
    Start(seed=FULL, script=lambda w: [ToolUse("AskUserQuestion", QUESTION), Text("Noted.")]),
)
def owner_question(s: Session) -> None:
    s.until("❯")
    s.prompt("ask me something")
    s.save("owner-question", s.until("Type something"))
    s.keys("Down")
    s.save("owner-question-down")
    s.keys("Enter")
    s.after("Enter on the option after one Down")


OAUTH = Start(
    seed=seed_without("customApiKeyResponses"),
    env={"CLAUDE_CODE_OAUTH_TOKEN": "netsky-fake-oauth-token"},
    drop=("ANTHROPIC_API_KEY",),
    script=lambda w: [UsageLimit()],
)


@scenario("usage-limit", OAUTH)
def usage_limit(s: Session) -> None:
    first = s.until("❯")
    s.note(f"--- start:\n{first.rstrip()}\n---")
    s.prompt("hello")
    # 2.1.332 no longer opens the menu: it waits and continues by itself at the reset.
    screen = s.until("Continuing automatically", "What do you want to do")
    if "What do you want to do" not in screen:
        s.save("usage-limit", screen)
        s.keys("Escape")
        s.save("usage-limit-cancelled")
        s.prompt("/rate-limit-options")
    s.save("usage-limit-menu", s.until("What do you want to do"))
    s.keys("Down")
    s.save("usage-limit-menu-down")
    s.keys("Up")
    s.stable()
    s.keys("Escape")
    s.after("Up, Esc")
    s.state()


@scenario("usage-limit-api-key", Start(seed=FULL, script=lambda w: [UsageLimit()]))
def usage_limit_api_key(s: Session) -> None:
    s.until("❯")
    s.prompt("hello")
    s.save("usage-limit-api-key", s.until("429"))


# -- running --------------------------------------------------------------------------------
def version_of(claude: Path) -> str:
    out = _run([str(claude), "--version"], capture_output=True, text=True, check=True)
    return str(out.stdout).split()[0]


def run_one(
    claude: Path, version: str, sc: Scenario, cols: int, rows: int, base: Path, out: Path
) -> str:
    root = base / f"{sc.name}-{cols}"
    s = Session(claude, version, root, sc.start, cols, rows, out)
    error = ""
    try:
        sc.drive(s)
    except Exception as e:  # noqa: BLE001 - reported, the other scenarios go on
        error = f"{type(e).__name__}: {e}"
        s.note("FAILED " + error)
    finally:
        s.close()
    (base / "log").mkdir(exist_ok=True)
    (base / "log" / f"{sc.name}-{cols}.txt").write_text("\n".join(s.log) + "\n")
    return error


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--claude", type=Path, required=True, help="the claude executable")
    ap.add_argument("--out", type=Path, required=True, help="where the .txt screens go")
    ap.add_argument("--base", type=Path, default=Path("/tmp/claude-rec"), help="scratch dir")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    ap.add_argument("--jobs", type=int, default=2, help="scenarios run at once")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    opts = ap.parse_args(argv)
    if opts.list:
        sys.stdout.write("\n".join(SCENARIOS) + "\n")
        return 0
    unknown = set(opts.only or ()) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {sorted(unknown)}")
    claude = opts.claude.resolve()
    version = version_of(claude)
    opts.out.mkdir(parents=True, exist_ok=True)
    opts.base.mkdir(parents=True, exist_ok=True)
    chosen = [SCENARIOS[n] for n in (opts.only or SCENARIOS)]
    runs = [(sc, cols, rows) for sc in chosen for cols, rows in sc.sizes]
    say(f"Claude Code {version}: {len(runs)} runs, logs in {opts.base / 'log'}")
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        futures = {
            pool.submit(run_one, claude, version, sc, c, r, opts.base, opts.out): (sc.name, c)
            for sc, c, r in runs
        }
        for fut, (name, cols) in futures.items():
            error = fut.result()
            failed += bool(error)
            say(f"{name} {cols}: {error or 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
