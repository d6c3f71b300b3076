"""The LLM layer: an OpenAI-compatible client, token costs and budgets, and a scripted fake server.

* ``lossforge.llm.client``: a thin wrapper over the official ``openai`` SDK pointed at any
  OpenAI-compatible ``base_url`` (OpenAI, vLLM, Ollama, ...). Chat completions, streamed or not, return
  text plus token usage; the SDK's own retry/backoff handles 429, 5xx and timeouts. The API key is read
  from an environment variable named in the configuration and never logged, returned or put in an error.
* ``lossforge.llm.reasoning``: a reasoning model's reasoning (``<think>`` blocks) set apart from its
  answer, for whole texts and streams; the client returns the two separately.
* ``lossforge.llm.cost``: token usage -> US dollars from a price table, and a serialisable ``Budget``.
* ``lossforge.llm.fake_server``: a real HTTP server on loopback that answers from a script (text answers,
  reasoning, cut-off answers and faults), used by the tests and for a user's dry run without an API key.

Nothing here imports torch or LangGraph; ``openai`` is imported by ``client`` only.
"""
