"""A fake OpenAI Responses API that drives the real Codex CLI (0.169) offline.

``with FakeOpenAI([Text("hi"), ShellCall("touch x"), UsageLimit()]) as api:`` serves on
127.0.0.1 (port 0). Codex 0.169 ignores ``OPENAI_BASE_URL``; point it here with the
config key ``openai_base_url = "<api.url>"`` (``-c openai_base_url=...`` or config.toml).
Each user turn's ``POST /v1/responses`` takes the next reply of the script (then
``Text("ok")``); ``api.requests`` records ``(method, path, json body or None)`` of all.

Shapes (codex-rs/codex-api/src/sse/responses.rs, codex-rs/core/src/api_bridge.rs and
codex-rs/core/src/error.rs in github.com/openai/codex; checked against codex-cli 0.169.0):

- Codex first tries a WebSocket (``GET /v1/responses`` + Upgrade); 426 sends it to HTTP
  (a 404 makes it retry the socket and fail the turn).
- Success is ``text/event-stream`` of ``event: <type>`` + ``data: <json>``: Codex acts on
  ``response.created``, ``response.output_item.added``, ``response.output_text.delta``,
  ``response.output_item.done`` (the finished item) and ``response.completed``
  (``{"response": {"id", "usage"}}``; a stream without it counts as broken and is retried).
- Codex also asks on its own, e.g. for a thread title (``x-codex-turn-metadata`` in
  ``client_metadata`` has ``thread_source`` other than ``user``, or ``text.format`` is a
  JSON schema): those get a canned answer and do not consume the script.
- Tools: 0.169's default model (gpt-6.1-sol) runs in "code mode": the only tool is the
  freeform ``exec`` (JavaScript) inside an ``additional_tools`` input item, and shell and
  apply_patch are ``tools.exec_command({cmd})`` / ``tools.apply_patch(patch)`` inside it.
  ``ShellCall``/``PatchCall`` send that ``custom_tool_call``, or a direct ``exec_command``
  ``function_call`` / ``apply_patch`` ``custom_tool_call`` when no ``exec`` tool is offered.
  ``ShellCall`` asks for ``sandbox_permissions: "require_escalated"`` so that the default
  ``on-request`` policy shows the approval dialog; ``apply_patch`` asks only outside the
  writable roots, e.g. under ``--sandbox read-only``.
- ``UsageLimit`` is HTTP 429 ``{"error": {"type": "usage_limit_reached", "resets_at":
  <unix s>, "plan_type"?}}``: "You’ve hit your usage limit. ... Try again at <time>.", not
  retried. ``RateLimit`` is a 429 with code ``rate_limit_exceeded``: Codex shows "exceeded
  retry limit, last status: 429 Too Many Requests".
- ``Stall`` opens the stream, then waits ``seconds`` (or until ``release()``) before its
  text, so the busy screen can be captured. Anything else is 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ShellCall:
    command: str
    escalate: bool = True
    why: str = "Do you want to run this command?"


@dataclass(frozen=True)
class PatchCall:
    patch: str  # "*** Begin Patch\n*** Add File: x\n+line\n*** End Patch\n"


@dataclass(frozen=True)
class UsageLimit:
    resets_in_s: int = 3600
    plan_type: str | None = None  # None, "plus", "pro", "team", "free", ...


@dataclass(frozen=True)
class RateLimit:
    message: str = "Rate limit reached. Please try again in 20s."


@dataclass(frozen=True)
class Stall:
    seconds: float
    text: str = "done"


Reply = Text | ShellCall | PatchCall | UsageLimit | RateLimit | Stall
Request = tuple[str, str, Any]
NOT_FOUND = {"error": {"message": "not found", "type": "not_found"}}
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}


def _sse(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def _tools(body: Any) -> dict[str, str]:
    """Tool name -> type ("function"/"custom"), from ``tools`` and ``additional_tools``."""
    found: dict[str, str] = {}

    def walk(tools: Any) -> None:
        for t in tools if isinstance(tools, list) else []:
            if isinstance(t, dict):
                found.setdefault(str(t.get("name")), str(t.get("type")))
                walk(t.get("tools"))

    if isinstance(body, dict):
        walk(body.get("tools"))
        for item in body.get("input") or []:
            if isinstance(item, dict) and item.get("type") == "additional_tools":
                walk(item.get("tools"))
    return found


def _side_reply(body: Any) -> str | None:
    """The canned answer to a request Codex makes on its own (thread title), else None."""
    if not isinstance(body, dict):
        return None
    try:
        meta = json.loads(body.get("client_metadata", {}).get("x-codex-turn-metadata", "{}"))
        source = meta.get("thread_source")
    except (ValueError, AttributeError):
        source = None
    fmt = body.get("text", {}).get("format")
    if source in (None, "user") and not fmt:
        return None
    props = (fmt or {}).get("schema", {}).get("properties", {})
    return json.dumps({k: "Fake title" for k in props}) if props else "ok"


def _tool_call(reply: ShellCall | PatchCall, n: int, tools: dict[str, str]) -> dict[str, Any]:
    """The output item calling the shell or apply_patch tool, in the form ``tools`` offers."""
    call = {"id": f"call_{n}", "call_id": f"call_{n}", "status": "completed"}
    code_mode = tools.get("exec") == "custom"
    if isinstance(reply, ShellCall):
        args: dict[str, Any] = {"cmd": reply.command}
        if reply.escalate:
            args |= {"sandbox_permissions": "require_escalated", "justification": reply.why}
        if not code_mode or tools.get("exec_command") == "function":
            fc = {"type": "function_call", "name": "exec_command", "arguments": json.dumps(args)}
            return call | fc
        js = f"const r = await tools.exec_command({json.dumps(args)});\ntext(r.output);"
    else:
        if not code_mode or tools.get("apply_patch") == "custom":
            return call | {"type": "custom_tool_call", "name": "apply_patch", "input": reply.patch}
        js = f"text(await tools.apply_patch({json.dumps(reply.patch)}));"
    return call | {"type": "custom_tool_call", "name": "exec", "input": js}


def _limit_error(reply: UsageLimit | RateLimit) -> dict[str, Any]:
    if isinstance(reply, RateLimit):
        return {
            "error": {"type": "requests", "code": "rate_limit_exceeded", "message": reply.message}
        }
    err: dict[str, Any] = {
        "type": "usage_limit_reached",
        "message": "The usage limit has been reached",
        "resets_at": int(time.time()) + reply.resets_in_s,
        "resets_in_seconds": reply.resets_in_s,
    }
    if reply.plan_type is not None:
        err["plan_type"] = reply.plan_type
    return {"error": err}


class FakeOpenAI:
    """Scripted Responses API server; use as a context manager."""

    def __init__(self, script: Sequence[Reply] = ()) -> None:
        self.script: list[Reply] = list(script)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._turns = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def responses(self) -> list[Any]:
        """Bodies of the ``POST /v1/responses`` requests received so far."""
        with self._lock:
            return [b for m, p, b in self.requests if m == "POST" and p.endswith("/responses")]

    def release(self) -> None:
        """End every current and future ``Stall`` now."""
        self._release.set()

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self) -> Reply:
        with self._lock:
            self._turns += 1
            return self.script.pop(0) if self.script else Text("ok")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _record(self) -> Any:
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size) if size else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with api._lock:
                    api.requests.append((self.command, self.path, body))
                return body

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _is_responses(self) -> bool:
                return self.path.split("?")[0].endswith("/responses")

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                if self._is_responses():  # the WebSocket upgrade: refuse, so Codex uses HTTP
                    self._json(426, {"error": {"message": "use HTTP", "type": "upgrade"}})
                else:
                    self._json(404, NOT_FOUND)

            def do_POST(self) -> None:  # noqa: N802
                body = self._record()
                side = _side_reply(body)
                if not self._is_responses():
                    self._json(404, NOT_FOUND)
                elif side is not None:
                    self._stream(Text(side), 0, {})
                elif isinstance(reply := api._next(), UsageLimit | RateLimit):
                    self._json(429, _limit_error(reply))
                else:
                    self._stream(reply, api._turns, _tools(body))

            def _stream(
                self, reply: Text | ShellCall | PatchCall | Stall, n: int, tools: Any
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                rid = f"resp_{n}"
                self._send("response.created", response={"id": rid, "status": "in_progress"})
                if isinstance(reply, Stall):
                    api._release.wait(reply.seconds)
                    reply = Text(reply.text)
                if isinstance(reply, Text):
                    mid = f"msg_{n}"
                    item: dict[str, Any] = {"type": "message", "id": mid, "role": "assistant"}
                    started = item | {"status": "in_progress", "content": []}
                    self._send("response.output_item.added", output_index=0, item=started)
                    at = {"item_id": mid, "output_index": 0, "content_index": 0}
                    self._send("response.output_text.delta", **at, delta=reply.text)
                    text = {"type": "output_text", "text": reply.text, "annotations": []}
                    item |= {"status": "completed", "content": [text]}
                else:
                    item = _tool_call(reply, n, tools)
                self._send("response.output_item.done", output_index=0, item=item)
                done = {"id": rid, "status": "completed", "usage": USAGE}
                self._send("response.completed", response=done)
                self.close_connection = True

            def _send(self, kind: str, **fields: Any) -> None:
                try:
                    self.wfile.write(_sse(kind, **fields))
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True

        return Handler
