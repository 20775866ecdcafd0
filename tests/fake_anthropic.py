"""A fake Anthropic Messages API on 127.0.0.1, enough to drive the real Claude Code CLI offline.

Usage::

    with FakeAnthropic([ToolUse("Bash", {"command": "ls"}), Text("done")]) as api:
        env["ANTHROPIC_BASE_URL"] = api.url
        ...
        assert api.message_requests[0].body["messages"]

Shapes (Claude Code 2.1.197 as observed; tests/screens/claude-code-2.1.197/README.md):

* At start Claude Code sends ``HEAD /`` (any answer will do; 404 here) and one streaming
  ``POST /v1/messages?beta=true`` without tools (a side request); with an OAuth token also a
  non-streaming ``max_tokens: 1`` quota probe. Each user turn is a streaming request *with*
  ``tools``: only those consume the script, in order (``Text("ok")`` once it is used up);
  side requests get ``Text(side_reply)``.
* Streaming answers are Server-Sent Events: ``message_start``, ``ping``, per content block
  ``content_block_start`` / ``content_block_delta`` (``text_delta`` word by word, or one
  ``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (``stop_reason``
  ``end_turn`` or ``tool_use``) and ``message_stop``. Without ``stream`` the same message is
  one JSON object. ``/v1/messages/count_tokens`` answers ``{"input_tokens": 10}``; anything
  else is a 404 with an Anthropic-style error body.
* :class:`UsageLimit` is a 429 ``rate_limit_error`` with the unified rate-limit headers the
  CLI reads (functions ``Fda``/``Oda``/``vBn`` of the 2.1.197 bundle, found by grepping the
  binary for ``anthropic-ratelimit-unified``): ``-status`` (allowed / allowed_warning /
  rejected), ``-reset`` (epoch seconds), ``-representative-claim`` (five_hour, seven_day,
  seven_day_opus, seven_day_sonnet, ...), ``-fallback``, ``-overage-status``,
  ``-overage-disabled-reason``. Claude Code only turns them into "You've hit your session
  limit · resets 8:50am (UTC)" (and opens /rate-limit-options) when it believes it is logged
  in to claude.ai: run it with ``CLAUDE_CODE_OAUTH_TOKEN=<anything>`` and *no*
  ``ANTHROPIC_API_KEY``. With an API key the same 429 prints
  "API Error: Request rejected (429) · This request would exceed your rate limit."
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

_NOT_FOUND = {"type": "error", "error": {"type": "not_found_error", "message": "not found"}}
_LIMITED = {"type": "rate_limit_error", "message": "This request would exceed your rate limit."}


@dataclass(frozen=True)
class Text:
    """An assistant text reply. ``delay_s`` stalls before the first byte (the spinner shows;
    its timer appears after ~15 s without tokens); ``chunk_delay_s`` paces the streamed words
    so the ``↓ N tokens`` counter moves."""

    text: str
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class ToolUse:
    """A tool_use block, e.g. ``ToolUse("Bash", {"command": "ls", "description": "List"})``,
    ``ToolUse("Write", {"file_path": "/abs/f.txt", "content": "x"})`` (``Edit`` needs a
    ``Read`` of the file first), ``ToolUse("WebFetch", {"url": u, "prompt": p})`` or
    ``ToolUse("AskUserQuestion", {"questions": [{"question", "header", "multiSelect",
    "options": [{"label", "description"}, ...]}]})``; ``text`` is said before it."""

    name: str
    input: dict[str, Any]
    text: str = ""
    delay_s: float = 0.0


@dataclass(frozen=True)
class UsageLimit:
    """A 429 usage-limit rejection; ``reset_at`` is epoch seconds (default: now + 2 h)."""

    reset_at: int | None = None
    claim: str = "five_hour"
    status: str = "rejected"
    extra_headers: dict[str, str] = field(default_factory=dict)


Reply = Text | ToolUse | UsageLimit


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def limit_headers(reply: UsageLimit) -> dict[str, str]:
    """The headers of a :class:`UsageLimit` answer."""
    reset = reply.reset_at or int(time.time()) + 7200
    prefix = "anthropic-ratelimit-unified-"
    return {
        prefix + "status": reply.status,
        prefix + "reset": str(reset),
        prefix + "representative-claim": reply.claim,
        prefix + "fallback": "unavailable",
        prefix + "overage-status": "rejected",
        prefix + "overage-disabled-reason": "org_level_disabled",
        "retry-after": str(max(1, reset - int(time.time()))),
        "x-should-retry": "false",
        **reply.extra_headers,
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _record(self) -> Request:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, self.path, headers, body)
        with self.server.lock:
            self.server.requests.append(req)
        return req

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._record()
        self._json(404, _NOT_FOUND)

    do_HEAD = do_GET  # noqa: N815 - stdlib name

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        req = self._record()
        path = self.path.split("?", 1)[0]
        body = req.body if isinstance(req.body, dict) else {}
        if path.endswith("/v1/messages/count_tokens"):
            self._json(200, {"input_tokens": 10})
        elif path.endswith("/v1/messages"):
            reply = self.server.next_reply() if body.get("tools") else Text(self.server.side)
            self._messages(body, reply)
        else:
            self._json(404, _NOT_FOUND)

    def _messages(self, body: dict[str, Any], reply: Reply) -> None:
        if isinstance(reply, UsageLimit):
            self._json(429, {"type": "error", "error": _LIMITED}, limit_headers(reply))
            return
        time.sleep(reply.delay_s)
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        if isinstance(reply, ToolUse):
            tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
            blocks.append(
                {"type": "tool_use", "id": tool_id, "name": reply.name, "input": reply.input}
            )
        stop = "tool_use" if isinstance(reply, ToolUse) else "end_turn"
        model = str(body.get("model") or "claude-sonnet-4-5")
        head = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant"}
        usage = {"input_tokens": 12, "output_tokens": 8, "cache_read_input_tokens": 0}
        msg: dict[str, Any] = {**head, "model": model, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            self._json(200, {**msg, "content": blocks, "stop_reason": stop})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        self._event("message_start", message=start)
        self._event("ping")
        pause = reply.chunk_delay_s if isinstance(reply, Text) else 0.0
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                empty = {"type": "text", "text": ""}
                self._event("content_block_start", index=i, content_block=empty)
                words = block["text"].split(" ")
                for n, word in enumerate(words):
                    piece = word if n == len(words) - 1 else word + " "
                    delta = {"type": "text_delta", "text": piece}
                    self._event("content_block_delta", index=i, delta=delta)
                    time.sleep(pause)
            else:
                self._event("content_block_start", index=i, content_block={**block, "input": {}})
                partial = json.dumps(block["input"])
                delta = {"type": "input_json_delta", "partial_json": partial}
                self._event("content_block_delta", index=i, delta=delta)
            self._event("content_block_stop", index=i)
        end = {"stop_reason": stop, "stop_sequence": None}
        self._event("message_delta", delta=end, usage={"output_tokens": 8})
        self._event("message_stop")

    def _event(self, kind: str, **data: Any) -> None:
        payload = json.dumps({"type": kind, **data})
        self.wfile.write(f"event: {kind}\ndata: {payload}\n\n".encode())
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: list[Reply], side: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.script = list(script)
        self.side = side
        self.requests: list[Request] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # Claude Code drops idle keep-alive connections; nothing to report.

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else Text("ok")


class FakeAnthropic:
    """Context manager running the fake API in a thread; ``url`` is the ANTHROPIC_BASE_URL."""

    def __init__(self, script: list[Reply] | None = None, side_reply: str = "Session") -> None:
        self._server = _Server(script or [], side_reply)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        with self._server.lock:
            return list(self._server.requests)

    @property
    def message_requests(self) -> list[Request]:
        """Main-loop /v1/messages requests (those carrying tools), oldest first."""
        return [r for r in self.requests if isinstance(r.body, dict) and r.body.get("tools")]

    def add(self, *replies: Reply) -> None:
        """Append replies to the script while running."""
        with self._server.lock:
            self._server.script.extend(replies)

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
