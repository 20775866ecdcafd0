"""The escalation legs (netskyd.escalation.legs) against real servers on 127.0.0.1, real tmux on
a private socket, fake osascript/notify-send scripts, and ``python -m netskyd.escalation.legs``.
"""

from __future__ import annotations

import base64
import email.message
import inspect
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netskyd.config.legs import (
    LEG_TYPES,
    DesktopLeg,
    EmailLeg,
    IMessageLeg,
    LegContext,
    Page,
    SecretRef,
    TmuxLeg,
    WebhookLeg,
)
from netskyd.escalation.legs import KINDS, refresh_marker, send, write_sentinel
from netskyd.escalation.legs import email as email_kind
from tests.owner_servers import HttpServer, SmtpServer, free_port

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
INCIDENT = "20260301T101500Z-1a2b3c4d"
OTHER = "20260301T090000Z-9f8e7d6c"
OPEN = (
    {"id": INCIDENT, "subject": "agent3 is hung", "severity": "critical", "opened_ts": "T1"},
    {"id": OTHER, "subject": "disk 95% full", "severity": "warning", "opened_ts": "T0"},
)


def make_page(
    subject: str = "agent3 is hung",
    *,
    kind: Any = "page",
    open_incidents: tuple[dict[str, str], ...] = OPEN,
) -> Page:
    return Page(
        kind=kind,
        incident=INCIDENT,
        key="hang:agent3",
        subject=subject,
        body="agent3 has shown no activity for 12 minutes.",
        severity="critical",
        ts="2026-03-01T10:15:00Z",
        ack_command=f"netskyctl ack {INCIDENT}",
        host="devbox",
        home="/home/owner/.netsky",
        open_incidents=open_incidents,
    )


def make_ctx(
    tmp_path: Path,
    environ: dict[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
    platform: str = "linux",
    tmux_socket: str | None = None,
) -> LegContext:
    env = {"PATH": os.environ["PATH"]} if environ is None else environ
    return LegContext(env, timeout_s, tmp_path / "home", tmux_socket, platform)


def email_leg(smtp: SmtpServer, **fields: Any) -> EmailLeg:
    config = {
        "host": smtp.host,
        "port": smtp.port,
        "security": smtp.mode,
        "from": "netsky@example.org",
        "to": ["owner@example.org"],
        "ca_file": str(smtp.ca_file),
    }
    return EmailLeg.model_validate({**config, **fields})


def fake_command(path: Path, script: str) -> Path:
    """An executable sh script; ``$LOG`` in it is ``path``'s directory."""
    path.write_text(f"#!/bin/sh\nLOG={path.parent}\n{script}\n")
    path.chmod(0o755)
    return path


def calls(directory: Path, suffix: str) -> list[list[str]]:
    """The argv of each run of a fake that wrote ``printf '%s\\0' "$@" > $LOG/$$.<suffix>``."""
    return [p.read_text().split("\0")[:-1] for p in sorted(directory.glob(f"*.{suffix}"))]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s:g}s")
        time.sleep(0.05)


# --- email ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_email_arrives_with_subject_body_and_ack_command(tmp_path: Path, mode: Any) -> None:
    with SmtpServer(mode, auth=("owner", "s3cret")) as smtp:
        leg = email_leg(smtp, username="owner", password={"env": "NETSKY_TEST_SMTP_PW"})
        ctx = make_ctx(tmp_path, {"NETSKY_TEST_SMTP_PW": "s3cret"})
        page = make_page()
        result = await send("email", leg, page, ctx)
        assert result.status == "delivered", result
        [msg] = smtp.wait_for_messages(1)
    assert msg["Subject"] == page.title()
    assert msg["To"] == "owner@example.org"
    assert msg["X-Netsky-Incident"] == INCIDENT
    assert msg["X-Netsky-Severity"] == "critical"
    assert msg["Message-ID"]
    body = msg.get_content()
    assert page.body in body
    assert INCIDENT in body
    assert page.ack_command in body


async def test_email_password_variable_missing_is_unavailable(tmp_path: Path) -> None:
    with SmtpServer("starttls", auth=("owner", "s3cret")) as smtp:
        leg = email_leg(smtp, username="owner", password={"env": "NETSKY_TEST_SMTP_PW"})
        result = await send("email", leg, make_page(), make_ctx(tmp_path, {}))
        assert smtp.messages == []
    assert result.status == "unavailable"
    assert "NETSKY_TEST_SMTP_PW" in (result.reason or "")


async def test_email_wrong_password_fails_with_the_server_answer(tmp_path: Path) -> None:
    with SmtpServer("starttls", auth=("owner", "s3cret")) as smtp:
        leg = email_leg(smtp, username="owner", password={"env": "PW"})
        result = await send("email", leg, make_page(), make_ctx(tmp_path, {"PW": "wrong"}))
    assert result.status == "failed"
    assert "535" in (result.reason or "")


async def test_email_rejected_by_the_server_fails_with_its_code(tmp_path: Path) -> None:
    with SmtpServer("starttls", fail_with="550 mailbox unavailable") as smtp:
        result = await send("email", email_leg(smtp), make_page(), make_ctx(tmp_path))
        assert smtp.messages == []
    assert result.status == "failed"
    assert "550 mailbox unavailable" in (result.reason or "")


async def test_email_connection_refused_fails(tmp_path: Path) -> None:
    leg = EmailLeg.model_validate(
        {"host": "127.0.0.1", "port": free_port(), "from": "n@example.org", "to": ["o@x.org"]}
    )
    result = await send("email", leg, make_page(), make_ctx(tmp_path))
    assert result.status == "failed"
    assert f"port {leg.port}" in (result.reason or "")
    assert "\n" not in (result.reason or "")


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_email_untrusted_certificate_fails(tmp_path: Path, mode: Any) -> None:
    with SmtpServer(mode) as smtp:
        leg = email_leg(smtp, ca_file=None)
        result = await send("email", leg, make_page(), make_ctx(tmp_path))
        assert smtp.messages == []
    assert result.status == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in (result.reason or "")


# --- webhook -------------------------------------------------------------------------


async def test_webhook_json_posts_the_page_with_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    with HttpServer() as http:
        leg = WebhookLeg(url=http.url + "/hook", token=SecretRef(file=token_file))
        page = make_page()
        result = await send("webhook", leg, page, make_ctx(tmp_path))
        [req] = http.wait_for_requests(1)
    assert result.status == "delivered", result
    assert (req.method, req.path) == ("POST", "/hook")
    assert req.header("Authorization") == "Bearer tok-123"
    sent = json.loads(req.body)
    assert sent["subject"] == page.subject
    assert sent["body"] == page.body
    assert sent["incident"] == INCIDENT
    assert sent["ack_command"] == page.ack_command
    assert sent["title"] == page.title()
    assert sent["open_incidents"] == list(OPEN)


async def test_webhook_text_uses_ntfy_headers(tmp_path: Path) -> None:
    with HttpServer() as http:
        leg = WebhookLeg(url=http.url, format="text", headers={"X-Extra": "1"})
        page = make_page()
        result = await send("webhook", leg, page, make_ctx(tmp_path))
        [req] = http.wait_for_requests(1)
    assert result.status == "delivered", result
    assert req.header("Title") == page.title()
    assert req.header("Priority") == "5"
    assert req.header("Tags") == "rotating_light"
    assert req.header("X-Extra") == "1"
    assert (req.header("Content-Type") or "").startswith("text/plain")
    assert page.ack_command in req.body.decode()


async def test_webhook_text_non_ascii_title_is_encoded(tmp_path: Path) -> None:
    with HttpServer() as http:
        page = make_page("agent3 est bloqué ☂", kind="all-clear")
        leg = WebhookLeg(url=http.url, format="text")
        result = await send("webhook", leg, page, make_ctx(tmp_path))
        [req] = http.wait_for_requests(1)
    assert result.status == "delivered", result
    title = req.header("Title") or ""
    assert title.startswith("=?UTF-8?B?") and title.endswith("?=")
    assert base64.b64decode(title[10:-2]).decode() == page.title()
    assert req.header("Priority") == "2"
    assert req.header("Tags") == "white_check_mark"


async def test_webhook_https_with_ca_file_and_url_from_env(tmp_path: Path) -> None:
    with HttpServer(tls=True) as http:
        ctx = make_ctx(tmp_path, {"NTFY_URL": http.url + "/topic"})
        leg = WebhookLeg(url=SecretRef(env="NTFY_URL"), ca_file=http.ca_file)
        trusted = await send("webhook", leg, make_page(), ctx)
        untrusted = await send(
            "webhook", leg.model_copy(update={"ca_file": None}), make_page(), ctx
        )
        [req] = http.wait_for_requests(1)
    assert trusted.status == "delivered", trusted
    assert req.path == "/topic"
    assert untrusted.status == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.reason or "")


async def test_webhook_http_error_fails_with_status_and_body(tmp_path: Path) -> None:
    with HttpServer(status=500, body=b"upstream exploded\n" + b"x" * 500) as http:
        leg = WebhookLeg(url=http.url)
        failed = await send("webhook", leg, make_page(), make_ctx(tmp_path))
        http.status = 200
        delivered = await send("webhook", leg, make_page(), make_ctx(tmp_path))
    assert failed.status == "failed"
    assert (failed.reason or "").startswith("HTTP 500: upstream exploded")
    assert len(failed.reason or "") < 250
    assert delivered.status == "delivered"


async def test_webhook_slower_than_the_timeout_fails(tmp_path: Path) -> None:
    with HttpServer(delay_s=30) as http:
        ctx = make_ctx(tmp_path, timeout_s=0.5)
        result = await send("webhook", WebhookLeg(url=http.url), make_page(), ctx)
        http.wait_for_requests(1)
    assert result.status == "failed"
    assert result.reason == "timed out after 0.5s"


async def test_webhook_token_variable_missing_is_unavailable(tmp_path: Path) -> None:
    with HttpServer() as http:
        leg = WebhookLeg(url=http.url, token=SecretRef(env="NTFY_TOKEN"))
        result = await send("webhook", leg, make_page(), make_ctx(tmp_path, {}))
        assert http.requests == []
    assert result.status == "unavailable"
    assert "NTFY_TOKEN" in (result.reason or "")


# --- imessage ------------------------------------------------------------------------


async def test_imessage_off_macos_is_unavailable(tmp_path: Path) -> None:
    leg = IMessageLeg(to=["+15550100"])
    result = await send("imessage", leg, make_page(), make_ctx(tmp_path, platform="linux"))
    assert result.status == "unavailable"
    assert "macOS" in (result.reason or "")


async def test_imessage_passes_text_and_recipient_as_arguments(tmp_path: Path) -> None:
    osascript = fake_command(tmp_path / "osascript", "printf '%s\\0' \"$@\" > $LOG/$$.args")
    leg = IMessageLeg(to=["+15550100", "owner@icloud.com"], command=str(osascript))
    page = make_page('agent3 "quoted" & hung')
    result = await send("imessage", leg, page, make_ctx(tmp_path, platform="darwin"))
    assert result.status == "delivered", result
    runs = calls(tmp_path, "args")
    assert sorted(argv[-1] for argv in runs) == ["+15550100", "owner@icloud.com"]
    for argv in runs:
        script, text = "\n".join(argv[:-2]), argv[-2]
        assert text == f"{page.title()}\n{page.text()}"
        assert 'tell application "Messages"' in script
        assert "item 1 of argv" in script and "item 2 of argv" in script
        assert page.subject not in script


async def test_imessage_script_failure_fails_with_its_message(tmp_path: Path) -> None:
    osascript = fake_command(
        tmp_path / "osascript",
        "echo 'first line' >&2\necho 'execution error: Messages got an error (-1728)' >&2\nexit 1",
    )
    leg = IMessageLeg(to=["+15550100"], command=str(osascript))
    result = await send("imessage", leg, make_page(), make_ctx(tmp_path, platform="darwin"))
    assert result.status == "failed"
    assert "Messages got an error (-1728)" in (result.reason or "")
    assert "first line" not in (result.reason or "")


async def test_imessage_command_missing_is_unavailable(tmp_path: Path) -> None:
    leg = IMessageLeg(to=["+15550100"], command=str(tmp_path / "no-osascript"))
    result = await send("imessage", leg, make_page(), make_ctx(tmp_path, platform="darwin"))
    assert result.status == "unavailable"


# --- desktop -------------------------------------------------------------------------


async def test_desktop_sentinel_lists_open_incidents_and_goes_away(tmp_path: Path) -> None:
    sentinel = tmp_path / "deep" / "OWNER-PAGE.txt"
    leg = DesktopLeg(path=sentinel, notify=False)
    page = make_page()
    result = await send("desktop", leg, page, make_ctx(tmp_path))
    assert result.status == "delivered", result
    text = sentinel.read_text()
    assert text.startswith("netsky needs you: 2 open incidents")
    assert f"- {INCIDENT} [critical] agent3 is hung (since T1)" in text
    assert f"ack: netskyctl ack {OTHER}" in text
    assert page.ack_command in text and page.body in text
    assert [p.name for p in sentinel.parent.iterdir()] == ["OWNER-PAGE.txt"]  # no tmp left

    cleared = make_page(kind="all-clear", open_incidents=())
    result = await send("desktop", leg, cleared, make_ctx(tmp_path))
    assert result.status == "delivered", result
    assert not sentinel.exists()
    write_sentinel(sentinel, cleared)  # removing a missing sentinel is fine


async def test_desktop_default_path_is_in_home(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    result = await send("desktop", DesktopLeg(notify=False), make_page(), ctx)
    assert result.status == "delivered", result
    assert INCIDENT in (ctx.home / "OWNER-PAGE.txt").read_text()


async def test_desktop_unwritable_sentinel_fails(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    leg = DesktopLeg(path=tmp_path / "file" / "OWNER-PAGE.txt", notify=False)
    result = await send("desktop", leg, make_page(), make_ctx(tmp_path))
    assert result.status == "failed"


def notify_env(tmp_path: Path, script: str, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir / "notify-send", script)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}


async def test_desktop_notifies_with_notify_send_when_a_display_exists(tmp_path: Path) -> None:
    env = notify_env(tmp_path, "printf '%s\\0' \"$@\" > $LOG/$$.args", DISPLAY=":0")
    page = make_page()
    result = await send("desktop", DesktopLeg(), page, make_ctx(tmp_path, env))
    assert result.status == "delivered"
    assert result.reason is None
    [argv] = calls(tmp_path / "bin", "args")
    assert argv[-2:] == [page.title(), page.text()]
    assert "critical" in argv


async def test_desktop_without_a_display_still_delivers(tmp_path: Path) -> None:
    env = notify_env(tmp_path, "printf '%s\\0' \"$@\" > $LOG/$$.args")
    result = await send("desktop", DesktopLeg(), make_page(), make_ctx(tmp_path, env))
    assert result.status == "delivered"
    assert result.reason == "sentinel written; no desktop notification (no display)"
    assert calls(tmp_path / "bin", "args") == []
    assert (tmp_path / "home" / "OWNER-PAGE.txt").exists()


async def test_desktop_failed_notification_still_delivers(tmp_path: Path) -> None:
    env = notify_env(tmp_path, "echo 'cannot reach the bus' >&2; exit 1", WAYLAND_DISPLAY="w-0")
    result = await send("desktop", DesktopLeg(), make_page(), make_ctx(tmp_path, env))
    assert result.status == "delivered"
    assert "cannot reach the bus" in (result.reason or "")


# --- tmux ----------------------------------------------------------------------------

OWNER_STATUS = '"#{=21:pane_title}" %H:%M'


def tmux(socket: str, *args: str) -> str:
    out = subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.removesuffix("\n")


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A tmux server on a private socket with one detached session ``t``; killed after."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    socket = f"netsky-test-{secrets.token_hex(4)}"
    socket_path: Path | None = None
    try:
        tmux(socket, "new-session", "-d", "-s", "t", "-x", "80", "-y", "20", "sleep 600")
        socket_path = Path(tmux(socket, "display-message", "-p", "#{socket_path}"))
        tmux(socket, "set-option", "-g", "status-right", OWNER_STATUS)
        yield socket
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)


def user_option(socket: str, name: str) -> str | None:
    out = subprocess.run(
        ["tmux", "-L", socket, "show-options", "-gv", name], capture_output=True, text=True
    )
    return out.stdout.removesuffix("\n") if out.returncode == 0 else None


async def test_tmux_marks_the_status_line_and_restores_it(tmp_path: Path, tmux_socket: str) -> None:
    ctx = make_ctx(tmp_path, dict(os.environ), tmux_socket=tmux_socket)
    result = await send("tmux", TmuxLeg(), make_page(), ctx)
    assert result.status == "delivered", result
    assert result.reason == "status line marked; no attached clients"
    assert tmux(tmux_socket, "show-options", "-gv", "status-right") == (
        "#{@netsky-page}" + OWNER_STATUS
    )
    assert "netsky: 2 open" in (user_option(tmux_socket, "@netsky-page") or "")
    # A second page updates the count without stacking markers.
    await send("tmux", TmuxLeg(), make_page(open_incidents=OPEN[:1]), ctx)
    assert tmux(tmux_socket, "show-options", "-gv", "status-right").count("@netsky-page") == 1
    assert "netsky: 1 open" in (user_option(tmux_socket, "@netsky-page") or "")

    cleared = make_page(kind="all-clear", open_incidents=())
    result = await send("tmux", TmuxLeg(), cleared, ctx)
    assert result.status == "delivered", result
    assert tmux(tmux_socket, "show-options", "-gv", "status-right") == OWNER_STATUS
    assert user_option(tmux_socket, "@netsky-page") is None
    assert user_option(tmux_socket, "@netsky-status-right-saved") is None


async def test_tmux_refresh_marker_follows_acks(tmp_path: Path, tmux_socket: str) -> None:
    ctx = make_ctx(tmp_path, dict(os.environ), tmux_socket=tmux_socket)
    await refresh_marker(ctx, list(OPEN))
    assert tmux(tmux_socket, "show-options", "-gv", "status-right").startswith("#{@netsky-page}")
    await refresh_marker(ctx, [])
    assert tmux(tmux_socket, "show-options", "-gv", "status-right") == OWNER_STATUS
    # No server: nothing raised.
    await refresh_marker(make_ctx(tmp_path, tmux_socket=f"netsky-test-{secrets.token_hex(4)}"), [])


@pytest.fixture
def attached_client(tmux_socket: str, tmp_path: Path) -> Iterator[Path]:
    """A client attached to session ``t`` through script(1); yields the file that
    records what its terminal showed."""
    if shutil.which("script") is None:
        pytest.skip("script(1) is not installed")
    screen = tmp_path / "screen"
    client = subprocess.Popen(
        ["script", "-qfc", f"tmux -L {tmux_socket} attach -t t", str(screen)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: tmux(tmux_socket, "list-clients", "-F", "#{client_name}") != "")
        yield screen
    finally:
        client.kill()
        client.wait(timeout=10)


async def test_tmux_shows_the_message_on_an_attached_client(
    tmp_path: Path, tmux_socket: str, attached_client: Path
) -> None:
    page = make_page("agent3 #S is hung")
    ctx = make_ctx(tmp_path, dict(os.environ), tmux_socket=tmux_socket)
    result = await send("tmux", TmuxLeg(), page, ctx)
    assert result.status == "delivered", result
    assert result.reason is None
    wait_until(lambda: page.title().encode() in attached_client.read_bytes())


async def test_tmux_without_a_server_is_unavailable(tmp_path: Path) -> None:
    socket = f"netsky-test-{secrets.token_hex(4)}"
    ctx = make_ctx(tmp_path, dict(os.environ), tmux_socket=socket)
    result = await send("tmux", TmuxLeg(), make_page(), ctx)
    assert result.status == "unavailable"
    assert result.reason == f"no tmux server on socket {socket}"


# --- timeouts and python -m netskyd.escalation.legs ------------------------------------------


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_a_hanging_command_and_its_children_are_killed_at_the_deadline(
    tmp_path: Path,
) -> None:
    osascript = fake_command(tmp_path / "osascript", "sleep 600 &\necho $! > $LOG/pid\nwait")
    leg = IMessageLeg(to=["+15550100"], command=str(osascript))
    ctx = make_ctx(tmp_path, platform="darwin", timeout_s=1.0)
    result = await send("imessage", leg, make_page(), ctx)
    assert result.status == "failed"
    assert result.reason == "timed out after 1s"
    grandchild = int((tmp_path / "pid").read_text())
    wait_until(lambda: not running(grandchild))


def run_legsend(request: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netskyd.escalation.legs"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )


def test_module_runs_a_leg_from_stdin(tmp_path: Path) -> None:
    with HttpServer() as http:
        page = make_page()
        request = {
            "name": "ntfy",
            "leg": {"type": "webhook", "url": http.url + "/netsky", "format": "text"},
            "page": page.to_json(),
            "timeout_s": 10,
            "home": str(tmp_path),
            "tmux_socket": None,
        }
        done = run_legsend(request)
        [req] = http.wait_for_requests(1)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["leg"] == "ntfy"
    assert result["status"] == "delivered"
    assert result["duration_ms"] >= 0
    assert (req.method, req.path) == ("POST", "/netsky")
    assert req.header("Title") == page.title()

    # The server is gone: a failed leg is still a result, and exit status 0.
    refused = run_legsend(request)
    assert refused.returncode == 0, refused.stderr
    assert json.loads(refused.stdout)["status"] == "failed"


@pytest.mark.parametrize(
    "request_text",
    ["not json", "[]", '{"name": "x"}', '{"name": "x", "leg": {"type": "pager"}, "page": {}}'],
)
def test_module_rejects_a_bad_request(request_text: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netskyd.escalation.legs"],
        input=request_text,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "bad request" in done.stderr


# --- one module per leg kind ---------------------------------------------------------------


def test_every_leg_type_has_a_module_with_a_sender() -> None:
    for name in LEG_TYPES:
        assert name in KINDS, f"leg type {name!r} has no line in netskyd.escalation.legs.KINDS"
        assert inspect.iscoroutinefunction(getattr(KINDS[name], "send", None)), name
    assert set(KINDS) == set(LEG_TYPES)


def test_the_email_leg_module_leaves_the_stdlib_email_package_alone() -> None:
    assert email_kind.__name__ == "netskyd.escalation.legs.email"
    assert email_kind.EmailMessage is email.message.EmailMessage
    assert "netskyd" not in Path(email.message.__file__ or "").parts
