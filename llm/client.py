"""A thin client for OpenAI-compatible chat completions: text plus usage, streamed or not.

``LLMClient(base_url, api_key_env=...)`` wraps ``openai.OpenAI``. ``chat(messages, model=...)`` returns a
``ChatResult`` (the answer's text, the model's reasoning, ``Usage``, finish reason, seconds); with
``stream=True`` (the default) each piece of the answer is also handed to ``on_token`` as it arrives, and
each piece of reasoning to ``on_reasoning``.

What it guarantees
------------------
* Retries are the SDK's: HTTP 408/409/429/5xx, connection errors and timeouts are retried up to
  ``max_retries`` times with its backoff (honouring ``Retry-After``); nothing here adds a second layer.
* The API key is read from the environment variable *named* in the settings, handed to the SDK (which
  sends it only as ``Authorization: Bearer ...``) and never stored on this object, logged, returned or
  put in an exception: every message this module raises passes through ``redact``, which removes the
  key, and SDK exceptions are not chained (their request objects carry the headers).
* Every failure is an ``LLMError`` (``status`` set for HTTP errors); an answer whose body cannot be
  parsed is an ``LLMResponseError`` carrying the raw (redacted) body in ``raw``.
* Reasoning is never part of ``ChatResult.text``: the ``reasoning_content`` / ``reasoning`` fields of the
  message or of the streamed deltas (DeepSeek, vLLM, SGLang, OpenRouter) and ``<think>...</think>``
  blocks in the content (including a content that begins inside the reasoning, DeepSeek-R1's template)
  go to ``ChatResult.reasoning`` (``llm.reasoning``); ``ChatResult.content`` keeps the content exactly as
  sent. A ``<think>`` block is handed to ``on_reasoning``, not ``on_token`` (one exception, when streaming:
  text before an orphan ``</think>`` is recognised as reasoning only at that tag, after it went to
  ``on_token``; ``ChatResult`` is exact).
* ``ChatResult.truncated`` is True when the server stopped at the token limit (``finish_reason ==
  "length"``): the answer is incomplete, and ``text`` is empty when the model was still reasoning.
* Usage: the server's figures when it sends them (streaming asks for them with
  ``stream_options.include_usage`` unless ``stream_usage=False``); otherwise an estimate of one token per
  four characters, marked ``estimated=True``, so a budget never sees a free call.

What it does not do
-------------------
* No tools, images or ``n > 1``; no asyncio. It is thread-safe to share across threads (the SDK is).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, Mapping

from pydantic import BaseModel

from lossforge.errors import LossforgeError
from lossforge.llm.reasoning import REASONING_FIELDS, ReasoningStream, split_reasoning

__all__ = ["ChatResult", "LLMClient", "LLMError", "LLMResponseError", "Usage", "estimate_tokens", "redact"]

TokenCallback = Callable[[str], None]
Message = Mapping[str, Any]


class Usage(BaseModel):
    """Tokens one call used, and the model they are priced by."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(BaseModel):
    """The answer of one chat completion.

    ``text`` is the final answer only; ``reasoning`` the model's reasoning (its reasoning field, then
    its ``<think>`` blocks, joined by a blank line; "" for other models); ``content`` the message
    content exactly as the server sent it (``<think>`` tags included).
    """

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    seconds: float = 0.0
    reasoning: str = ""
    content: str = ""

    @property
    def truncated(self) -> bool:
        """The server stopped at the token limit (``finish_reason == "length"``): the answer is incomplete."""
        return self.finish_reason == "length"

    def transcript(self) -> str:
        """Reasoning (in a ``<think>`` block) and answer, as one text: the evidence of an unusable answer."""
        if not self.reasoning:
            return self.text
        return f"<think>\n{self.reasoning}\n</think>\n{self.text}"


class LLMError(LossforgeError, RuntimeError):
    """A chat call that failed after the SDK's retries; the message never contains the API key."""

    def __init__(self, message: str, *, status: int | None = None, raw: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.raw = raw


class LLMResponseError(LLMError):
    """The server answered, but not with a chat completion this client can read; ``raw`` has the body."""


def estimate_tokens(text: str) -> int:
    """About one token per four characters (at least one for non-empty text)."""
    return 0 if not text else max(1, (len(text) + 3) // 4)


_SECRETS: set[str] = set()


def redact(text: str | None) -> str:
    """``text`` with every API key this process has loaded replaced by ``***``.

    Longer keys first: with one key a prefix of another (``sk-test`` and ``sk-test-SECRET``), replacing
    the short one first would leave the rest of the long one in the text.
    """
    if not text:
        return text or ""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


class LLMClient:
    """Chat completions against one OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 4,
        stream_usage: bool = True,
        max_tokens_field: str = "max_tokens",
        default_headers: Mapping[str, str] | None = None,
        http_client: Any = None,
    ) -> None:
        import openai  # the optional dependency: lossforge[llm]

        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise LLMError(
                    f"the environment variable {api_key_env} is not set; export your API key there "
                    "(or set api_key_env to the variable that holds it)"
                )
            _SECRETS.add(key)
        else:  # local servers (vLLM, Ollama) accept any key
            key = "not-needed"
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.stream_usage = stream_usage
        self.max_tokens_field = max_tokens_field  # OpenAI's reasoning models want "max_completion_tokens"
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=dict(default_headers or {}),
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "LLMClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """The model ids the endpoint lists."""
        try:
            return [m.id for m in self._client.models.list()]
        except Exception as error:  # noqa: BLE001 - translated, never chained
            raise self._translate(error) from None

    def chat(
        self,
        messages: Iterable[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = True,
        on_token: TokenCallback | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        on_reasoning: TokenCallback | None = None,
    ) -> ChatResult:
        """One chat completion.

        Pieces of the answer go to ``on_token`` and pieces of the model's reasoning to ``on_reasoning``
        as they arrive when streaming (once each, whole, without streaming). Raises ``LLMError`` (HTTP
        status, connection, timeout after the SDK's retries) or ``LLMResponseError`` (a body that is not
        a chat completion). A truncated answer is returned, not raised: see ``ChatResult.truncated``.
        """
        messages = [dict(m) for m in messages]
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs[self.max_tokens_field] = max_tokens
        if response_format is not None:
            kwargs["response_format"] = response_format
        if seed is not None:
            kwargs["seed"] = seed
        if extra_body:
            kwargs["extra_body"] = extra_body
        started = time.perf_counter()
        try:
            if stream:
                content, field, usage, finish, served_model = self._stream(kwargs, on_token, on_reasoning)
            else:
                content, field, usage, finish, served_model = self._once(kwargs, on_token, on_reasoning)
        except LLMError:
            raise
        except Exception as error:  # noqa: BLE001 - translated, never chained
            raise self._translate(error) from None
        split = split_reasoning(content)
        reasoning = "\n\n".join(part for part in (field.strip(), split.reasoning) if part)
        if usage is None:
            prompt = "\n".join(str(m.get("content", "")) for m in messages)
            usage = Usage(model=model, prompt_tokens=estimate_tokens(prompt),
                          completion_tokens=estimate_tokens(content + field), estimated=True)
        return ChatResult(text=split.answer, reasoning=reasoning, content=content, usage=usage,
                          model=served_model or model, finish_reason=finish, seconds=time.perf_counter() - started)

    def _once(
        self, kwargs: dict[str, Any], on_token: TokenCallback | None, on_reasoning: TokenCallback | None
    ) -> tuple[str, str, Usage | None, str | None, str]:
        response = self._client.chat.completions.create(**kwargs)
        if isinstance(response, str):  # the SDK returns the body as text when it is not JSON
            raise LLMResponseError(f"the server at {self.base_url} sent a body that is not a chat completion",
                                   raw=redact(response[:4000]))
        if not getattr(response, "choices", None):
            raise LLMResponseError("the server sent a chat completion without choices",
                                   raw=redact(_dump(response)))
        choice = response.choices[0]
        content = (choice.message.content if choice.message is not None else None) or ""
        field = _reasoning_field(choice.message)
        split = split_reasoning(content)  # the whole answer at once: the exact split goes to the callbacks
        for callback, text in ((on_reasoning, field), (on_reasoning, split.reasoning), (on_token, split.answer)):
            if callback is not None and text:
                callback(text)
        return content, field, _usage(response.usage, kwargs["model"]), choice.finish_reason, response.model or ""

    def _stream(
        self, kwargs: dict[str, Any], on_token: TokenCallback | None, on_reasoning: TokenCallback | None
    ) -> tuple[str, str, Usage | None, str | None, str]:
        if self.stream_usage:
            kwargs = {**kwargs, "stream_options": {"include_usage": True}}
        pieces = ReasoningStream(on_token, on_reasoning)
        field_parts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        served = ""
        stream = self._client.chat.completions.create(stream=True, **kwargs)
        if isinstance(stream, str):
            raise LLMResponseError("the server did not stream a chat completion", raw=redact(stream[:4000]))
        with stream:
            content_type = stream.response.headers.get("content-type", "")
            if "event-stream" not in content_type:
                body = stream.response.read().decode("utf-8", "replace")
                raise LLMResponseError(
                    f"the server at {self.base_url} did not stream (content type {content_type or 'none'!r})",
                    raw=redact(body[:4000]),
                )
            chunks = 0
            for chunk in stream:
                chunks += 1
                served = getattr(chunk, "model", None) or served
                if getattr(chunk, "usage", None) is not None:
                    usage = _usage(chunk.usage, kwargs["model"])
                for choice in getattr(chunk, "choices", None) or []:
                    thinking = _reasoning_field(choice.delta)
                    if thinking:
                        field_parts.append(thinking)
                        if on_reasoning is not None:
                            on_reasoning(thinking)
                    piece = choice.delta.content if choice.delta is not None else None
                    if piece:
                        pieces.feed(piece)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        if chunks == 0:
            raise LLMResponseError(f"the server at {self.base_url} sent an empty stream", raw="")
        pieces.close()
        return pieces.text, "".join(field_parts), usage, finish, served

    # -- errors ------------------------------------------------------------------------------------
    def _translate(self, error: BaseException) -> LLMError:
        openai = self._openai
        where = f"the LLM endpoint {self.base_url}"
        if isinstance(error, json.JSONDecodeError):
            return LLMResponseError(f"{where} sent a body that is not valid JSON ({error.msg})",
                                    raw=redact(str(error.doc)[:4000]))
        if isinstance(error, openai.APITimeoutError):
            return LLMError(f"{where} timed out after {self.max_retries} retries (timeout {self.timeout:g} s)")
        if isinstance(error, openai.APIConnectionError):
            return LLMError(f"could not connect to {where} after {self.max_retries} retries")
        if isinstance(error, openai.APIStatusError):
            body = error.body if error.body is not None else ""
            detail = body if isinstance(body, str) else json.dumps(body, default=str)
            return LLMError(
                redact(f"{where} answered HTTP {error.status_code}: {error.message}")[:2000],
                status=error.status_code,
                raw=redact(detail)[:4000],
            )
        if isinstance(error, openai.APIResponseValidationError):
            return LLMResponseError(f"{where} sent an answer that does not validate", raw=redact(str(error))[:4000])
        return LLMError(redact(f"LLM call to {where} failed: {type(error).__name__}: {error}")[:2000])


def _reasoning_field(message: Any) -> str:
    """The reasoning a message or delta carries in its own field ("" when none); see ``REASONING_FIELDS``."""
    if message is None:
        return ""
    for name in REASONING_FIELDS:
        value = getattr(message, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _usage(raw: Any, model: str) -> Usage | None:
    if raw is None:
        return None
    prompt = getattr(raw, "prompt_tokens", None)
    completion = getattr(raw, "completion_tokens", None)
    if prompt is None and completion is None:
        return None
    return Usage(model=model, prompt_tokens=int(prompt or 0), completion_tokens=int(completion or 0))


def _dump(response: Any) -> str:
    try:
        return response.model_dump_json()[:4000]
    except Exception:  # noqa: BLE001
        return repr(response)[:4000]
