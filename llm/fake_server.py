"""A scripted OpenAI-compatible HTTP server on loopback, for tests and for a user's dry run.

It serves ``POST /v1/chat/completions`` (a JSON answer, or server-sent events when the request says
``"stream": true``) and ``GET /v1/models``, answering each chat request with the next *step* of a
script. A step is a text answer or a fault:

=================  =============================================================================
``text``           a normal answer with that content (the default kind of step)
``rate_limit``     HTTP 429 with a ``Retry-After`` header (``retry_after`` seconds, default 0.05)
``server_error``   HTTP 500 (or ``status``) with an OpenAI-style JSON error body
``slow``           waits ``seconds`` before answering with ``text`` (any step may set ``seconds``)
``garbage``        HTTP 200 whose body is not JSON (``body``, default ``"<html>upstream garbage``)
``bad_json``       a normal answer whose *content* is malformed JSON (``text`` or a default)
=================  =============================================================================

Any text answer may be a reasoning model's: ``reasoning`` is sent in the message's (or, streamed, the
deltas') ``reasoning_content`` field before the content, as DeepSeek's API and vLLM's reasoning parser
send it (``reasoning_field = "reasoning"``: OpenRouter's name); ``<think>...</think>`` is written in
``text`` itself, as a model served without a reasoning parser writes it. ``finish_reason`` is sent as
given (``"length"``: an answer cut off at the token limit); with ``cut_to_max_tokens`` the server cuts
the answer itself, as a real one does: when the request's ``max_tokens`` (or ``max_completion_tokens``)
is below the answer's word count, only that many words are sent (reasoning first, then content) and
``finish_reason`` is ``"length"``; a request with a larger limit gets the whole answer.

A step with ``match`` (a regular expression) only answers a request whose prompt (all message contents,
joined by newlines) matches it; the first unused step that fits answers. Usage figures are whitespace
word counts (the completion's counts the reasoning too) unless the step sets ``prompt_tokens`` /
``completion_tokens``. A streamed answer waits
``piece_seconds`` between its pieces (default 0), so a test can watch tokens arrive one by one; with
``hold_after=N`` it stops after N pieces until ``FakeServer.release()`` is called (a test can look at a
half-streamed answer without any timing). With ``loop=True`` the
script starts again when it runs out; otherwise an exhausted script answers HTTP 500 with
``x-should-retry: false`` and a message saying so.

What it guarantees
------------------
* It is a real server (``http.server`` in a daemon thread, port 0 = a free port), so the real ``openai``
  client and its retry logic are exercised end to end.
* Every request is recorded (method, path, headers, parsed JSON body, the step that answered) in arrival
  order, and ``requests`` returns a copy; the recording is thread-safe. ``max_in_flight`` is the largest
  number of chat requests it was handling at once (for tests of a client's concurrency limit).
* Streaming answers split the reasoning, then the content, at word boundaries into
  ``chat.completion.chunk`` events (the first carries the role; reasoning deltas carry ``content: null``
  as DeepSeek's do), then a chunk with ``finish_reason``, then, when ``stream_options.include_usage`` is
  set, a chunk with empty ``choices`` and the ``usage``, then ``data: [DONE]``.
* The command line (``python -m lossforge.llm.fake_server --script answers.json --port 8001``) prints
  one line per request (method, path, model, step) to stderr and never prints request headers, so an
  API key sent to it does not end up in a terminal or a log.

What it does not do
-------------------
* No authentication, no tool calls, no ``n > 1``; the ``response_format`` is recorded but not enforced.
* It is not for production traffic: HTTP/1.0, one connection per request.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, Field

from lossforge.settings.base import Strict

__all__ = ["FakeServer", "RecordedRequest", "Step", "load_script", "main"]

Fault = Literal["text", "rate_limit", "server_error", "slow", "garbage", "bad_json"]

DEFAULT_GARBAGE = "<html>upstream garbage \x00\x01 not json"
DEFAULT_BAD_JSON = '{"thought": "I will try a margin loss", "name": "broken", "code": "def broken(a, b'


class Step(Strict):
    """One scripted answer (see the module docstring for the kinds)."""

    kind: Fault = "text"
    text: str = ""
    status: int | None = None
    retry_after: float | None = None
    seconds: float = Field(0.0, ge=0)
    body: str | None = None
    match: str | None = None
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    finish_reason: str = "stop"
    piece_seconds: float = Field(0.0, ge=0, description="streamed answers: pause between pieces")
    hold_after: int | None = Field(None, ge=1, description="streamed answers: wait for release() after this many pieces")
    echo_headers: bool = False  # error faults only: put the request's headers in the error message (a leaky proxy)
    reasoning: str | None = Field(None, description="a reasoning model's reasoning, sent in its own field")
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    cut_to_max_tokens: bool = Field(False, description="cut the answer at the request's token limit (finish_reason 'length')")

    def content(self) -> str:
        if self.kind == "bad_json" and not self.text:
            return DEFAULT_BAD_JSON
        return self.text

    def answer_for(self, limit: int | None) -> tuple[str, str, str]:
        """(reasoning, content, finish_reason) sent to a request whose token limit is ``limit``."""
        reasoning, content = self.reasoning or "", self.content()
        if not self.cut_to_max_tokens or limit is None:
            return reasoning, content, self.finish_reason
        thought, said = _pieces(reasoning), _pieces(content)
        if len(thought) + len(said) <= limit:
            return reasoning, content, self.finish_reason
        if len(thought) >= limit:
            return "".join(thought[:limit]), "", "length"
        return reasoning, "".join(said[: limit - len(thought)]), "length"


class RecordedRequest(BaseModel):
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any = None  # parsed JSON, or the raw text when it was not JSON
    step: int | None = None  # index of the script step that answered, None for non-chat requests
    time: float = 0.0

    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return list(self.body["messages"])
        return []

    def prompt_text(self) -> str:
        """All message contents joined by newlines (the text ``Step.match`` is searched in)."""
        return "\n".join(_content_text(m.get("content")) for m in self.messages())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _pieces(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _count(text: str) -> int:
    return len(text.split())


def _token_limit(body: Any) -> int | None:
    """The completion token limit a request asks for (``max_completion_tokens`` or ``max_tokens``)."""
    if not isinstance(body, dict):
        return None
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_script(source: str | Path | Iterable[Any]) -> tuple[list[Step], bool]:
    """Steps from a JSON file path or a list; items are strings (text answers) or step objects.

    A file may hold a list, or ``{"steps": [...], "loop": true}``. Returns (steps, loop).
    """
    loop = False
    if isinstance(source, (str, Path)):
        data = json.loads(Path(source).read_text())
    else:
        data = list(source)
    if isinstance(data, dict):
        loop = bool(data.get("loop", False))
        data = data.get("steps", [])
    steps: list[Step] = []
    for item in data:
        if isinstance(item, Step):
            steps.append(item)
        elif isinstance(item, str):
            steps.append(Step(text=item))
        else:
            steps.append(Step.model_validate(item))
    return steps, loop


class FakeServer:
    """The scripted server; a context manager that starts it on enter and stops it on exit."""

    def __init__(
        self,
        script: str | Path | Iterable[Any] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        loop: bool | None = None,
        models: Iterable[str] = ("fake-model",),
        log: Any = None,
    ) -> None:
        steps, file_loop = load_script(script)
        self._steps = steps
        self._used = [False] * len(steps)
        self.loop = file_loop if loop is None else loop
        self.models = list(models)
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log = log
        self._in_flight = 0
        self.max_in_flight = 0  # the most chat requests handled at the same time

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FakeServer":
        if self._httpd is not None:
            return self
        handler = type("_Handler", (_Handler,), {"fake": self})
        httpd = ThreadingHTTPServer((self._host, self._port), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def add(self, *items: Any) -> None:
        """Append steps to the script (strings or step objects)."""
        steps, _ = load_script(items)
        with self._lock:
            self._steps.extend(steps)
            self._used.extend([False] * len(steps))

    def release(self) -> None:
        """Let every stream held by a step's ``hold_after`` (now or later) go on."""
        self._released.set()

    def remaining(self) -> int:
        with self._lock:
            return self._used.count(False)

    # -- internals ---------------------------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take(self, prompt: str) -> tuple[int | None, Step | None]:
        with self._lock:
            for attempt in range(2):
                for index, step in enumerate(self._steps):
                    if self._used[index]:
                        continue
                    if step.match is not None and re.search(step.match, prompt) is None:
                        continue
                    self._used[index] = True
                    return index, step
                if attempt == 0 and self.loop and self._steps:
                    self._used = [False] * len(self._steps)
                else:
                    break
        return None, None

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _say(self, line: str) -> None:
        if self._log is not None:
            print(line, file=self._log, flush=True)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    server_version = "lossforge-fake/1"

    def log_message(self, format: str, *args: Any) -> None:  # silence http.server's own access log
        return

    # -- helpers -----------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._send_bytes(status, data, "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to do
            pass

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers)

    def _read_body(self) -> tuple[Any, bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None, raw
        except ValueError:
            return raw.decode("utf-8", "replace"), raw

    # -- routes ------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        fake = self.fake
        fake._record(RecordedRequest(method="GET", path=self.path, headers=self._headers(), time=time.time()))
        fake._say(f"GET {self.path}")
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "lossforge"} for m in fake.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._error(404, f"no route for GET {self.path}", "not_found")

    def do_POST(self) -> None:  # noqa: N802
        self.fake._enter()
        try:
            self._post()
        finally:
            self.fake._leave()

    def _post(self) -> None:
        fake = self.fake
        body, _ = self._read_body()
        if not self.path.rstrip("/").endswith("/chat/completions"):
            fake._record(RecordedRequest(method="POST", path=self.path, headers=self._headers(), body=body, time=time.time()))
            self._error(404, f"no route for POST {self.path}", "not_found")
            return
        record = RecordedRequest(method="POST", path=self.path, headers=self._headers(), body=body, time=time.time())
        index, step = fake._take(record.prompt_text())
        record.step = index
        fake._record(record)
        model = body.get("model", "fake-model") if isinstance(body, dict) else "fake-model"
        fake._say(f"POST {self.path} model={model} step={index if index is not None else '-'}"
                  + (f" kind={step.kind}" if step is not None else " (script exhausted)"))
        if step is None:
            self._error(500, "fake server: the script has no step left for this request", "script_exhausted",
                        {"x-should-retry": "false"})
            return
        if step.seconds > 0 and fake._stopping.wait(step.seconds):
            return
        if step.kind in ("rate_limit", "server_error"):
            status = step.status or (429 if step.kind == "rate_limit" else 500)
            headers: dict[str, str] = {}
            retry_after = step.retry_after if step.retry_after is not None else (0.05 if step.kind == "rate_limit" else None)
            if retry_after is not None:
                headers["Retry-After"] = f"{retry_after:g}"
            message = "rate limit reached (scripted)" if step.kind == "rate_limit" else "internal error (scripted)"
            if step.echo_headers:
                message += " while handling headers " + json.dumps(record.headers)
            self._error(status, message, "rate_limit_error" if status == 429 else "server_error", headers)
            return
        if step.kind == "garbage":
            data = (step.body if step.body is not None else DEFAULT_GARBAGE).encode()
            self._send_bytes(step.status or 200, data, "application/json")
            return
        stream = isinstance(body, dict) and bool(body.get("stream"))
        prompt_tokens = step.prompt_tokens if step.prompt_tokens is not None else _count(record.prompt_text())
        limit = _token_limit(body)
        reasoning, content, finish = step.answer_for(limit)
        completion_tokens = (step.completion_tokens if step.completion_tokens is not None
                             else _count(reasoning) + _count(content))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        ident = f"chatcmpl-fake-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning:
                message[step.reasoning_field] = reasoning
            self._send_json(200, {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage,
            })
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._stream(ident, created, model, content, finish, usage if include_usage else None, step, reasoning)

    def _stream(self, ident: str, created: int, model: str, content: str, finish: str, usage: dict | None,
                step: Step, reasoning: str = "") -> None:
        def chunk(delta: dict, finish_reason: str | None = None, with_usage: dict | None = None, empty: bool = False) -> bytes:
            payload: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                                       "choices": [] if empty else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
            if with_usage is not None:
                payload["usage"] = with_usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            pieces = [(step.reasoning_field, p) for p in _pieces(reasoning)] + [("content", p) for p in _pieces(content)]
            for i, (field, piece) in enumerate(pieces or [("content", "")]):
                if i and step.piece_seconds > 0 and self.fake._stopping.wait(step.piece_seconds):
                    return
                if i and i == step.hold_after:
                    while not self.fake._released.wait(0.05):
                        if self.fake._stopping.is_set():
                            return
                delta: dict[str, Any] = {"content": piece} if field == "content" else {"content": None, field: piece}
                if i == 0:
                    delta = {"role": "assistant", **delta}
                self.wfile.write(chunk(delta))
                self.wfile.flush()
            self.wfile.write(chunk({}, finish))
            if usage is not None:
                self.wfile.write(chunk({}, with_usage=usage, empty=True))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}


def main(argv: list[str] | None = None) -> int:
    """Command line: serve a script until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m lossforge.llm.fake_server",
        description="Serve scripted answers on an OpenAI-compatible endpoint (a dry run without an API key).",
    )
    parser.add_argument("--script", required=True, type=Path,
                        help='JSON list of steps: strings (answers) or objects like {"kind": "rate_limit"}')
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--loop", action="store_true", help="start the script again when it runs out")
    parser.add_argument("--model", action="append", default=None, help="model ids listed by GET /v1/models")
    args = parser.parse_args(argv)
    server = FakeServer(args.script, host=args.host, port=args.port, loop=True if args.loop else None,
                        models=args.model or ["fake-model"], log=sys.stderr)
    server.start()
    print(f"fake OpenAI-compatible server on {server.base_url} ({len(server._steps)} steps"
          f"{', looping' if server.loop else ''}); Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
