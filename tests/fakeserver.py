"""A small OpenAI-compatible chat-completions server for tests and benchmarks, on 127.0.0.1.

It answers `POST /v1/chat/completions` (and `/chat/completions`) and `GET /v1/models` the way
OpenAI does, and lets a test script the ways a real provider fails:

- `key`: the bearer key it accepts; anything else gets OpenAI's 401 body.
- `fail(status, times=N, retry_after=S, message=..., code=..., when=...)`: the next N completion
  requests (that `when(body)` accepts) get that status (429 with a `Retry-After` header, 500, 400 with
  `context_length_exceeded` ...); `fail_always(...)` for an outage, `heal()` to end it.
- `models`: whether `GET /v1/models` exists (False: 404 whatever the key, as on servers without
  the route); when it exists it checks the key like every route, and no fault applies to it.
- `latency`: seconds each answer takes (applied without holding other requests back).
- `reply`: a function `reply(request_json) -> dict | str` giving the assistant's content
  (a dict is sent as JSON text). When the request forces a tool call, the content is returned
  as that tool call's arguments instead, as a provider would.
- `requests`: the log of every request (path, headers, parsed body, arrival and answer times, and
  the `usage` the server billed: prompt tokens are characters / 4, completion tokens likewise);
  `max_in_flight()` is the most requests the server held at one moment.
- Like a provider, it honours `max_tokens` (or `max_completion_tokens`): a longer answer is cut
  to that many tokens with `finish_reason: "length"` and billed for that many.

Usage:
    with FakeServer(reply=lambda body: {"ok": True}, key="sk-good") as server:
        ... --api-base server.url ...
        assert len(server.requests) == 3

Run it by hand for benchmarks: `python tests/fakeserver.py --port 8000 --latency 0.5`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], "dict[str, Any] | str"]


@dataclass
class Fault:
    status: int
    message: str
    retry_after: float | None = None
    code: str | None = None
    when: Callable[[dict[str, Any]], bool] | None = None
    """Only requests whose JSON body this accepts get the fault (None: the next request)."""


@dataclass
class LoggedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    status: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    """What the server billed for its answer (empty for an error)."""
    finished: float | None = None
    """When the answer was sent (`time.monotonic()`), None while in flight."""

    @property
    def key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None


@dataclass
class FakeServer:
    reply: Reply = field(default=lambda body: {"ok": True})
    key: str | None = None
    latency: float = 0.0
    models: bool = True
    port: int = 0
    requests: list[LoggedRequest] = field(default_factory=list)

    def __post_init__(self):
        self._faults: deque[Fault] = deque()
        self._always: Fault | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- scripting ------------------------------------------------------------------------
    def fail(self, status: int, times: int = 1, *, retry_after: float | None = None, message: str | None = None,
             code: str | None = None, when: Callable[[dict[str, Any]], bool] | None = None) -> "FakeServer":
        """The next `times` completion requests (that `when` accepts, if given) get this error."""
        with self._lock:
            self._faults.extend(Fault(status, message or _default_message(status), retry_after, code, when)
                                for _ in range(times))
        return self

    def fail_always(self, status: int, *, retry_after: float | None = None, message: str | None = None) -> "FakeServer":
        self._always = Fault(status, message or _default_message(status), retry_after)
        return self

    def heal(self) -> "FakeServer":
        with self._lock:
            self._faults.clear()
        self._always = None
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def completions(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def max_in_flight(self, requests: list[LoggedRequest] | None = None) -> int:
        """The most of `requests` (default: all answered ones) the server was holding at one moment."""
        events = sorted((t, step) for r in (self.requests if requests is None else requests) if r.finished is not None
                        for t, step in ((r.at, 1), (r.finished, -1)))
        most = held = 0
        for _, step in events:
            held += step
            most = max(most, held)
        return most

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "FakeServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            """TCP_NODELAY, as uvicorn (vLLM), llama.cpp's server and Ollama set it. Without it the
            body, written after the headers, waited for the client's delayed ACK of the headers:
            about 40 ms more on every answer than `latency` says."""

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server._handle(self, {})

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                server._handle(self, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answering ------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        entry = LoggedRequest(handler.path, {k.lower(): v for k, v in handler.headers.items()}, body, time.monotonic())
        with self._lock:
            self.requests.append(entry)
        if self.latency:
            time.sleep(self.latency)
        status, payload, headers = self._answer(entry)
        entry.status = status
        data = json.dumps(payload).encode("utf-8")
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        entry.finished = time.monotonic()

    def _answer(self, entry: LoggedRequest) -> tuple[int, dict[str, Any], dict[str, str]]:
        if entry.path.rstrip("/").endswith("/models") and not self.models:
            return 404, _error(f"Unknown route {entry.path}", "invalid_request_error"), {}
        if self.key is not None and entry.key != self.key:
            shown = (entry.key or "")[:5] + "***"
            return 401, _error(f"Incorrect API key provided: {shown}. You can find your API key at "
                               "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"), {}
        if entry.path.rstrip("/").endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}, {}
        with self._lock:
            fault = next((f for f in self._faults if f.when is None or f.when(entry.body)), None)
            if fault is not None:
                self._faults.remove(fault)
            fault = fault or self._always
        if fault is not None:
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return fault.status, _error(fault.message, "server_error" if fault.status >= 500 else "invalid_request_error",
                                        fault.code), headers
        try:
            content = self.reply(entry.body)
        except Exception as exc:  # noqa: BLE001 - a broken reply function is the test's bug; show it as a 500
            return 500, _error(f"fake server reply failed: {exc!r}", "server_error"), {}
        payload = _completion(entry.body, content)
        entry.usage = payload["usage"]
        return 200, payload, {}


def _completion(body: dict[str, Any], content: "dict[str, Any] | str") -> dict[str, Any]:
    text = content if isinstance(content, str) else json.dumps(content)
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if cap is not None and len(text) // 4 > int(cap):
        text, finish = text[: int(cap) * 4], "length"
    prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4
    message: dict[str, Any] = {"role": "assistant", "content": text}
    tools = body.get("tools") or []
    if tools and body.get("tool_choice") not in (None, "none", "auto"):
        name = tools[0]["function"]["name"]
        message = {"role": "assistant", "content": None,
                   "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": text}}]}
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake-model"),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if message.get("tool_calls") and finish == "stop" else finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(text) // 4, "total_tokens": prompt + len(text) // 4},
    }


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _default_message(status: int) -> str:
    return {400: "Invalid request.", 404: "The model `fake-model` does not exist or you do not have access to it.",
            429: "Rate limit reached for requests.", 500: "The server had an error while processing your request.",
            503: "The engine is currently overloaded, please try again later."}.get(status, f"HTTP {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    server = FakeServer(reply=lambda body: {"lessons": []} if "lesson" in json.dumps(body) else {"ok": True},
                        key=args.key, latency=args.latency, port=args.port).start()
    print(f"fake OpenAI-compatible server on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
