"""The LLM client against the scripted fake server, through the real openai SDK (retries included)."""
from __future__ import annotations

import json

import pytest

from lossforge.llm.client import LLMClient, LLMError, LLMResponseError
from lossforge.llm.fake_server import FakeServer

KEY_ENV = "LOSSFORGE_TEST_KEY"
KEY = "sk-test-SECRET123"
HELLO = [{"role": "user", "content": "say hello to the tests"}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def client_for(server: FakeServer, **kwargs) -> LLMClient:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("timeout", 10.0)
    return LLMClient(server.base_url, api_key_env=KEY_ENV, **kwargs)


def test_non_streaming_returns_text_and_server_usage() -> None:
    with FakeServer([{"text": "hello back", "prompt_tokens": 11, "completion_tokens": 2}]) as server:
        result = client_for(server).chat(HELLO, model="m1", stream=False, temperature=0.2, max_tokens=50)
    assert result.text == "hello back"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.model) == (11, 2, "m1")
    assert not result.usage.estimated and result.finish_reason == "stop"
    body = server.chat_requests[0].body
    assert body["model"] == "m1" and body["messages"] == HELLO
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50 and not body.get("stream")


def test_streaming_hands_every_piece_to_the_callback_and_reads_the_usage_chunk() -> None:
    answer = "a loss   that\nsaturates gently "
    pieces: list[str] = []
    with FakeServer([answer]) as server:
        result = client_for(server).chat(HELLO, model="m1", on_token=pieces.append)
    assert len(pieces) > 3 and "".join(pieces) == answer == result.text
    assert result.usage.completion_tokens == len(answer.split())
    assert result.usage.prompt_tokens == len(HELLO[0]["content"].split())
    body = server.chat_requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_streaming_without_usage_estimates_it() -> None:
    with FakeServer(["x" * 40]) as server:
        result = client_for(server, stream_usage=False).chat(HELLO, model="m1")
    assert "stream_options" not in server.chat_requests[0].body
    assert result.usage.estimated and result.usage.completion_tokens == 10


@pytest.mark.parametrize("stream", [False, True])
def test_rate_limit_then_success_is_retried_by_the_sdk(stream: bool) -> None:
    with FakeServer([{"kind": "rate_limit", "retry_after": 0.01}, "after the wait"]) as server:
        result = client_for(server).chat(HELLO, model="m1", stream=stream)
    assert result.text == "after the wait"
    requests = server.chat_requests
    assert [r.step for r in requests] == [0, 1]
    assert [r.headers["x-stainless-retry-count"] for r in requests] == ["0", "1"]


def test_server_error_then_success_with_the_sdk_default_backoff() -> None:
    with FakeServer([{"kind": "server_error"}, "recovered"]) as server:
        result = client_for(server).chat(HELLO, model="m1")
    assert result.text == "recovered" and len(server.chat_requests) == 2


def test_a_slow_answer_times_out_and_the_retry_succeeds() -> None:
    with FakeServer([{"kind": "slow", "seconds": 30, "text": "too late"}, "in time"]) as server:
        result = client_for(server, timeout=0.5, max_retries=1).chat(HELLO, model="m1", stream=False)
    assert result.text == "in time" and len(server.chat_requests) == 2


def test_errors_after_the_retries_are_llm_errors_with_the_status() -> None:
    with FakeServer([{"kind": "server_error", "retry_after": 0.01}] * 3) as server:
        with pytest.raises(LLMError) as caught:
            client_for(server, max_retries=2).chat(HELLO, model="m1")
    assert caught.value.status == 500 and "HTTP 500" in str(caught.value)
    assert len(server.chat_requests) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_garbage_body_is_a_response_error_carrying_the_raw_body(stream: bool) -> None:
    with FakeServer([{"kind": "garbage", "body": "<html>proxy says no</html>"}]) as server:
        with pytest.raises(LLMResponseError) as caught:
            client_for(server).chat(HELLO, model="m1", stream=stream)
    assert "proxy says no" in (caught.value.raw or "")


def test_the_key_is_sent_only_as_the_authorization_header() -> None:
    with FakeServer(["one", "two"]) as server:
        client = client_for(server)
        client.chat(HELLO, model="m1")
        client.chat(HELLO, model="m1", stream=False)
        assert client.models() == ["fake-model"]
        assert KEY not in repr(client) and KEY not in json.dumps(vars(client), default=str)
    assert len(server.requests) == 3
    for request in server.requests:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert KEY not in json.dumps(others) and KEY not in request.path
        assert KEY not in json.dumps(request.body)


def test_a_server_that_echoes_the_key_in_an_error_is_redacted() -> None:
    with FakeServer([{"kind": "server_error", "status": 401, "echo_headers": True}]) as server:
        with pytest.raises(LLMError) as caught:
            client_for(server).chat(HELLO, model="m1")
    assert KEY in json.dumps(server.requests[0].headers)  # the server did put it in its answer ...
    error = caught.value
    assert KEY not in str(error) and KEY not in (error.raw or "")  # ... and the client removed it
    assert error.__cause__ is None and error.status == 401 and "***" in str(error)


def test_a_key_that_starts_with_another_loaded_key_is_redacted_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossforge.llm.client import redact

    monkeypatch.setenv("LOSSFORGE_TEST_SHORT_KEY", KEY[:7])  # "sk-test": another client's key in this process
    LLMClient("http://127.0.0.1:9/v1", api_key_env="LOSSFORGE_TEST_SHORT_KEY")
    LLMClient("http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    shown = redact(f"Authorization: Bearer {KEY}; other {KEY[:7]}")
    assert shown == "Authorization: Bearer ***; other ***" and "SECRET" not in shown


def test_a_missing_key_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMError, match=KEY_ENV):
        LLMClient("http://127.0.0.1:9/v1", api_key_env=KEY_ENV)


def test_local_servers_need_no_key() -> None:
    with FakeServer(["fine"]) as server:
        result = LLMClient(server.base_url, api_key_env=None, max_retries=0).chat(HELLO, model="m1")
    assert result.text == "fine"


def test_the_token_limit_can_be_sent_as_max_completion_tokens() -> None:
    with FakeServer(["ok"]) as server:
        client_for(server, max_tokens_field="max_completion_tokens").chat(HELLO, model="o-model", max_tokens=64)
    body = server.chat_requests[0].body
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body


# -- reasoning models and truncated answers -------------------------------------------------------------

FINAL = '{"verdict": "A"}'


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # DeepSeek / vLLM, OpenRouter
def test_a_reasoning_field_is_reasoning_never_text(stream: bool, field: str) -> None:
    thinking = 'The user wants JSON like {"verdict": "B"}; but A is better.'
    answer: list[str] = []
    reasoning: list[str] = []
    with FakeServer([{"text": FINAL, "reasoning": thinking, "reasoning_field": field}]) as server:
        result = client_for(server).chat(HELLO, model="m1", stream=stream, on_token=answer.append,
                                         on_reasoning=reasoning.append)
    assert result.text == result.content == FINAL == "".join(answer)
    assert result.reasoning == thinking == "".join(reasoning)
    assert result.usage.completion_tokens == len(FINAL.split()) + len(thinking.split())  # reasoning is billed
    assert result.transcript() == f"<think>\n{thinking}\n</think>\n{FINAL}" and not result.truncated


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "content, reasoning, text",
    [
        (f"<think>\nDraft: {{\"verdict\": \"B\"}}\n</think>\n\n{FINAL}", 'Draft: {"verdict": "B"}', f"\n\n{FINAL}"),
        (f"Started inside the reasoning.</think>{FINAL}", "Started inside the reasoning.", FINAL),  # DeepSeek-R1
        ("<think>never closed, no answer", "never closed, no answer", ""),
    ],
)
def test_think_blocks_in_the_content_are_reasoning(stream: bool, content: str, reasoning: str, text: str) -> None:
    with FakeServer([content]) as server:
        result = client_for(server).chat(HELLO, model="m1", stream=stream)
    assert (result.text, result.reasoning, result.content) == (text, reasoning, content)


def test_streamed_reasoning_reaches_its_callback_before_the_answer() -> None:
    order: list[tuple[str, str]] = []
    content = "<think>first the idea</think>then the answer"
    with FakeServer([{"text": content, "reasoning": "field reasoning"}]) as server:
        client_for(server).chat(HELLO, model="m1", on_token=lambda p: order.append(("answer", p)),
                                on_reasoning=lambda p: order.append(("reasoning", p)))
    channels = [c for c, _ in order]
    assert channels == sorted(channels, key=lambda c: c == "answer")  # every reasoning piece comes first
    assert "".join(p for c, p in order if c == "reasoning") == "field reasoningfirst the idea"
    assert "".join(p for c, p in order if c == "answer") == "then the answer"


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_at_the_token_limit_is_returned_as_truncated(stream: bool) -> None:
    step = {"text": "one two three four five six", "reasoning": "r1 r2", "cut_to_max_tokens": True}
    with FakeServer([step, step]) as server:
        client = client_for(server)
        cut = client.chat(HELLO, model="m1", stream=stream, max_tokens=4)
        whole = client.chat(HELLO, model="m1", stream=stream, max_tokens=8)
    assert cut.truncated and cut.finish_reason == "length"
    assert (cut.reasoning, cut.text, cut.usage.completion_tokens) == ("r1 r2", "one two ", 4)
    assert not whole.truncated and whole.text == "one two three four five six"
    assert [r.body["max_tokens"] for r in server.chat_requests] == [4, 8]
