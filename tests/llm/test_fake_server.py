"""The scripted fake server: matching, looping, exhaustion, recording and its command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lossforge.llm.fake_server import FakeServer, load_script


def post(server: FakeServer, content: str, **extra) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=10)


def test_steps_with_a_pattern_answer_only_matching_prompts() -> None:
    script = [{"text": "for b", "match": "question B"}, {"text": "for a", "match": "question A"}, "anything"]
    with FakeServer(script) as server:
        answers = [post(server, q).json()["choices"][0]["message"]["content"] for q in ("question A", "question B", "other")]
    assert answers == ["for a", "for b", "anything"]
    assert [r.step for r in server.chat_requests] == [1, 0, 2]


def test_an_exhausted_script_says_so_unless_it_loops() -> None:
    with FakeServer(["only"]) as server:
        assert post(server, "x").status_code == 200
        response = post(server, "x")
    assert response.status_code == 500 and response.headers["x-should-retry"] == "false"
    assert "no step left" in response.json()["error"]["message"]
    with FakeServer(["one", "two"], loop=True) as server:
        texts = [post(server, "x").json()["choices"][0]["message"]["content"] for _ in range(3)]
    assert texts == ["one", "two", "one"]


def test_streaming_events_end_with_usage_and_done() -> None:
    with FakeServer(["three word answer"]) as server:
        response = post(server, "q", stream=True, stream_options={"include_usage": True})
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "three word answer"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_slow_stream_is_still_in_flight_after_its_first_piece() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True}
    with FakeServer([{"text": "one two three", "piece_seconds": 1.0}]) as server:
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=10) as response:
            lines = response.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data: "))[len("data: "):])
            assert first["choices"][0]["delta"]["content"] == "one "
            assert server._in_flight == 1  # the rest has not been sent yet
            rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    pieces = [json.loads(line[len("data: "):])["choices"] for line in rest[:-1]]
    assert "".join(c[0]["delta"].get("content", "") for c in pieces if c) == "two three"


def test_a_held_stream_waits_for_release() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True}
    with FakeServer([{"text": "one two three four", "hold_after": 2}]) as server:
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=10) as response:
            lines = (line for line in response.iter_lines() if line.startswith("data: "))
            first = [json.loads(next(lines)[len("data: "):])["choices"][0]["delta"]["content"] for _ in range(2)]
            assert first == ["one ", "two "] and server._in_flight == 1  # held: nothing more until released
            server.release()
            rest = list(lines)
    assert rest[-1] == "data: [DONE]"
    assert "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in rest[:-2]) == "three four"


def test_bad_json_content_and_models_listing() -> None:
    with FakeServer([{"kind": "bad_json"}], models=["a", "b"]) as server:
        content = post(server, "q").json()["choices"][0]["message"]["content"]
        listed = httpx.get(f"{server.base_url}/models", timeout=10).json()
    with pytest.raises(ValueError):
        json.loads(content)
    assert [m["id"] for m in listed["data"]] == ["a", "b"]


def test_script_files_accept_a_list_or_an_object(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(["hi", {"kind": "rate_limit"}]))
    (tmp_path / "b.json").write_text(json.dumps({"steps": ["hi"], "loop": True}))
    steps, loop = load_script(tmp_path / "a.json")
    assert [s.kind for s in steps] == ["text", "rate_limit"] and not loop
    assert load_script(tmp_path / "b.json")[1] is True


def test_the_command_line_serves_a_script_and_never_prints_headers(tmp_path: Path) -> None:
    script = tmp_path / "answers.json"
    script.write_text(json.dumps(["from the command line"]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lossforge.llm.fake_server", "--script", str(script), "--port", "0"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        banner = process.stderr.readline()
        base_url = re.search(r"(http://\S+/v1)", banner).group(1)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": "Bearer sk-test-SECRET123"}
        answer = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=10).json()
        assert answer["choices"][0]["message"]["content"] == "from the command line"
        line = process.stderr.readline()
        assert "POST /v1/chat/completions" in line and "step=0" in line
    finally:
        process.terminate()
        _, rest = process.communicate(timeout=10)
    assert "SECRET" not in banner + line + rest


def data_events(response: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_is_sent_in_its_own_field_streamed_and_not(field: str) -> None:
    step = {"text": "the answer", "reasoning": "thinking it over", "reasoning_field": field}
    with FakeServer([step, step]) as server:
        message = post(server, "q").json()["choices"][0]["message"]
        streamed = post(server, "q", stream=True, stream_options={"include_usage": True})
    assert message == {"role": "assistant", "content": "the answer", field: "thinking it over"}
    deltas = [c["choices"][0]["delta"] for c in data_events(streamed) if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get(field) or "" for d in deltas) == "thinking it over"
    assert all(d["content"] is None for d in deltas if d.get(field))  # as DeepSeek streams reasoning
    assert "".join(d.get("content") or "" for d in deltas) == "the answer"
    assert data_events(streamed)[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
def test_an_answer_is_cut_at_the_request_token_limit_when_scripted(limit_field: str) -> None:
    step = {"text": "a b c d", "reasoning": "r s t", "cut_to_max_tokens": True}
    with FakeServer([step, step, step, step]) as server:
        in_reasoning = post(server, "q", **{limit_field: 2}).json()
        in_answer = post(server, "q", stream=True, **{limit_field: 5})
        whole = post(server, "q", **{limit_field: 7}).json()
        unlimited = post(server, "q").json()
    choice = in_reasoning["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""
    assert choice["message"]["reasoning_content"] == "r s " and in_reasoning["usage"]["completion_tokens"] == 2
    chunks = data_events(in_answer)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "a b "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    for full in (whole, unlimited):
        assert full["choices"][0]["finish_reason"] == "stop" and full["choices"][0]["message"]["content"] == "a b c d"


def test_a_scripted_length_finish_is_sent_as_given() -> None:
    with FakeServer([{"text": '{"code": "def f(', "finish_reason": "length"}] * 2) as server:
        plain = post(server, "q").json()["choices"][0]
        streamed = data_events(post(server, "q", stream=True))
    assert plain["finish_reason"] == "length" and plain["message"]["content"] == '{"code": "def f('
    assert streamed[-1]["choices"][0]["finish_reason"] == "length"
