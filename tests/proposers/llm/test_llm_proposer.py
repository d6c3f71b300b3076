"""The LLM proposer against the scripted fake server with the real openai client.

Covers: streamed and plain answers, the SDK's retries, unreadable answers (ProposalError with the raw
text), the repair prompt (the failed check's evidence), the budget, the ensemble draw, reflections,
the bounded prompt, the tolerant parser, that the API key never shows up in an event or an error, and
one short search through the real graph (propose -> check -> repair -> screen).
"""
from __future__ import annotations

import json
import traceback
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from lossforge.proposers.llm.proposer import (
    BudgetExhausted,
    LLMProposer,
    LLMProposerSettings,
    ModelChoice,
    ProposalError,
)
from lossforge.proposers.llm.prompts import describe_outcome, proposal_messages
from lossforge.settings.llm import PromptLimits
from lossforge.proposers.llm.parser import parse_proposal
from lossforge.proposers.base import ArchiveView, ProposalContext, Proposer
from lossforge.llm.client import LLMClient, LLMError
from lossforge.llm.cost import Budget
from lossforge.settings.llm import BudgetLimits, Price, PriceTable
from lossforge.llm.fake_server import FakeServer
from lossforge.candidate.checks import run_checks
from lossforge.trainer.losses import library_code
from tests.support import SCALAR_CODE, SIGMOID_CODE

KEY_ENV = "LOSSFORGE_TEST_KEY"
KEY = "sk-test-SECRET123"



def answer(name: str = "smooth_sigmoid", code: str = SIGMOID_CODE, thought: str = "Add a squared softplus.") -> str:
    return json.dumps({"thought": thought, "name": name, "code": code})


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def make(server: FakeServer, *, events: list | None = None, budget: Budget | None = None, **settings: Any) -> LLMProposer:
    settings.setdefault("models", [ModelChoice(name="model-a", temperature=0.6)])
    client = LLMClient(server.base_url, api_key_env=KEY_ENV, max_retries=2, timeout=10)
    emitter = (lambda kind, **data: events.append({"kind": kind, **data})) if events is not None else (lambda *a, **k: None)
    return LLMProposer(client, LLMProposerSettings(**settings), budget=budget, seed=7, emitter=emitter)


def evaluated(i: int, name: str, fitness: float, code: str | None = None) -> ArchiveView:
    return ArchiveView(id=i, name=name, code=code or library_code(name), status="evaluated", fitness=fitness,
                       reflection=f"note on {name}")


CONTEXT = ProposalContext(
    step=3,
    seed=1,
    beta=0.05,
    best=[evaluated(1, "dpo", 0.4), evaluated(2, "ipo", 0.3)],
    recent=[evaluated(2, "ipo", 0.3)],
    failures=[ArchiveView(id=4, name="bad_one", code="def bad_one():\n    return 1", status="rejected",
                          check_summary="failed check 'signature': takes 0 arguments")],
    hints=["try a hinge on the margin"],
)


# -- proposing ---------------------------------------------------------------------------------------


def test_a_streamed_json_answer_becomes_a_proposal_and_its_tokens_are_emitted() -> None:
    events: list[dict] = []
    text = answer()
    with FakeServer([text]) as server:
        proposal = make(server, events=events).propose(CONTEXT)
    assert proposal.name == "smooth_sigmoid" and proposal.code == SIGMOID_CODE.strip("\n")
    assert proposal.thought == "Add a squared softplus." and proposal.operator == "llm" and proposal.parent_ids == []
    tokens = [e for e in events if e["kind"] == "token"]
    assert len(tokens) > 3 and "".join(e["text"] for e in tokens) == text
    assert {(e["purpose"], e["step"], e["model"]) for e in tokens} == {("propose", 3, "model-a")}
    call = next(e for e in events if e["kind"] == "llm_call")
    assert call["prompt_tokens"] > 100 and call["completion_tokens"] == len(text.split()) and call["budget"]["calls"] == 1

    body = server.chat_requests[0].body
    assert body["stream"] is True and body["temperature"] == 0.6
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["thought", "name", "code"]
    prompt = server.chat_requests[0].prompt_text()
    for needle in ("beta` is a Python float, 0.05", "try a hinge on the margin", "#1 dpo: fitness 0.4000",
                   "takes 0 arguments", "note on dpo", "reward gain", "KL budget"):
        assert needle in prompt


def test_without_structured_output_a_fenced_block_is_read() -> None:
    reply = "I will try a squared softplus.\n```python\n" + SIGMOID_CODE + "```\n"
    with FakeServer([reply]) as server:
        proposal = make(server, structured_output=False, stream=False).propose(CONTEXT)
    assert "response_format" not in server.chat_requests[0].body and "stream" not in server.chat_requests[0].body
    assert proposal.name == "smooth_sigmoid" and "squared softplus" in proposal.thought


@pytest.mark.parametrize("fault", [{"kind": "rate_limit", "retry_after": 0.01},
                                   {"kind": "server_error", "retry_after": 0.01}])
def test_rate_limits_and_server_errors_are_retried(fault: dict) -> None:
    with FakeServer([fault, answer()]) as server:
        proposal = make(server).propose(CONTEXT)
    assert proposal.name == "smooth_sigmoid" and len(server.chat_requests) == 2


def test_a_malformed_answer_raises_a_proposal_error_with_the_raw_text() -> None:
    with FakeServer([{"kind": "bad_json"}]) as server:
        proposer = make(server)
        with pytest.raises(ProposalError) as caught:
            proposer.propose(CONTEXT)
    assert caught.value.raw.startswith('{"thought": "I will try a margin loss"')
    assert "no readable" in str(caught.value) and proposer.budget.state.calls == 1  # a paid call is charged


@pytest.mark.parametrize("stream", [True, False])
def test_a_garbage_body_raises_a_proposal_error_with_the_body(stream: bool) -> None:
    with FakeServer([{"kind": "garbage", "body": "<html>502 from a proxy</html>"}]) as server:
        with pytest.raises(ProposalError) as caught:
            make(server, stream=stream).propose(CONTEXT)
    assert "502 from a proxy" in caught.value.raw


def test_endpoint_failures_are_llm_errors() -> None:
    with FakeServer([{"kind": "server_error", "retry_after": 0.01}] * 3) as server:
        with pytest.raises(LLMError, match="HTTP 500"):
            make(server).propose(CONTEXT)


# -- repair --------------------------------------------------------------------------------------------


def test_the_repair_prompt_shows_the_failed_check_evidence_and_asks_for_a_diagnosis() -> None:
    report = run_checks(SCALAR_CODE, beta=0.05)
    assert not report.passed and report.failed_check == "shape"
    failed = ArchiveView(id=9, name="scalar_loss", code=SCALAR_CODE, status="rejected",
                         check_summary=report.summary(), reflection="it reduced over the batch")
    context = CONTEXT.model_copy(update={"repair_of": failed, "step": 4})
    with FakeServer([answer(thought="The .mean() collapsed the batch; return per-pair losses.")]) as server:
        proposer = make(server)
        assert isinstance(proposer, Proposer) and proposer.supports_repair is True
        proposal = proposer.propose(context)
    prompt = server.chat_requests[0].prompt_text()
    evidence = next(c for c in report.checks if not c.passed).evidence
    assert evidence in prompt and "returned a scalar" in prompt
    assert "(-F.logsigmoid(beta * margin)).mean()" in prompt and "diagnose the failure" in prompt
    assert "it reduced over the batch" in prompt
    assert proposal.operator == "llm-repair" and proposal.parent_ids == [9]


# -- budget --------------------------------------------------------------------------------------------


def test_the_budget_stops_at_the_right_call_and_sends_nothing_after() -> None:
    step = {"text": answer(), "prompt_tokens": 1000, "completion_tokens": 500}
    prices = PriceTable(models={"model-a": Price(input=10.0, output=30.0)})  # 0.01 + 0.015 = $0.025 a call
    budget = Budget(BudgetLimits(max_usd=0.06), prices)
    with FakeServer([step] * 5) as server:
        proposer = make(server, budget=budget)
        for i in range(3):  # $0.025, $0.050 (< 0.06, may go on), $0.075 (over: the last call allowed)
            proposer.propose(CONTEXT.model_copy(update={"step": i}))
        with pytest.raises(BudgetExhausted, match=r"\$0\.0750 spent, limit \$0\.0600"):
            proposer.propose(CONTEXT.model_copy(update={"step": 3}))
        with pytest.raises(BudgetExhausted):
            proposer.reflect("anything")
    assert len(server.chat_requests) == 3
    assert budget.state.usd == pytest.approx(0.075) and budget.state.calls == 3


def test_a_call_limit_counts_reflections_too() -> None:
    with FakeServer([answer(), "The margin term helped; try a smaller weight next."] * 2) as server:
        proposer = make(server, budget=Budget(BudgetLimits(max_calls=2)))
        proposer.propose(CONTEXT)
        assert proposer.reflect("summary") == "The margin term helped; try a smaller weight next."
        with pytest.raises(BudgetExhausted, match="2 calls"):
            proposer.propose(CONTEXT)
    assert len(server.chat_requests) == 2


# -- ensemble and reflection ---------------------------------------------------------------------------


def test_the_ensemble_draws_by_weight_deterministically_with_each_models_temperature() -> None:
    models = [ModelChoice(name="big", weight=1.0, temperature=0.2), ModelChoice(name="small", weight=3.0, temperature=1.1)]
    with FakeServer([answer()] * 2) as server:
        proposer = make(server, models=models)
        picks = [proposer.pick_model(ProposalContext(step=s, seed=1)).name for s in range(400)]
        assert picks == [proposer.pick_model(ProposalContext(step=s, seed=1)).name for s in range(400)]
        assert 0.65 < picks.count("small") / 400 < 0.85
        for step in (picks.index("big"), picks.index("small")):
            proposer.propose(CONTEXT.model_copy(update={"step": step, "seed": 1}))
    sent = [(r.body["model"], r.body["temperature"]) for r in server.chat_requests]
    assert sent == [("big", 0.2), ("small", 1.1)]


def test_reflection_is_streamed_short_and_about_the_outcome() -> None:
    events: list[dict] = []
    view = ArchiveView(id=5, name="smooth_sigmoid", code=SIGMOID_CODE, status="evaluated", fitness=0.52)
    summary = describe_outcome(view, best_before=0.4, result={"final_kl": 1.25})
    assert "new best" in summary and "+0.1200" in summary and "1.250 nats" in summary
    with FakeServer(["The squared softplus   term\nhelped.  " + "More. " * 400]) as server:
        text = make(server, events=events, reflection_model="critic", max_reflection_chars=100).reflect(summary, step=5)
    assert text.startswith("The squared softplus term helped.") and len(text) <= 100
    body = server.chat_requests[0].body
    assert body["model"] == "critic" and "response_format" not in body and summary in server.chat_requests[0].prompt_text()
    assert {e["purpose"] for e in events if e["kind"] == "token"} == {"reflect"}


# -- prompt bounds and parsing -------------------------------------------------------------------------


def test_the_prompt_is_bounded_whatever_the_archive_holds() -> None:
    long_code = SIGMOID_CODE + "\n".join(f"# padding line {i} " + "x" * 60 for i in range(300))
    views = [evaluated(i, f"cand_{i}", fitness=i / 100, code=long_code.replace("smooth_sigmoid", f"cand_{i}")) for i in range(200)]
    context = ProposalContext(step=200, best=views[-16:], recent=views[-16:], failures=views[:4],
                              excluded_ids=[199], pinned_ids=[3], hints=["h" * 2000] * 10)
    limits = PromptLimits(max_chars=9000, max_code_chars=600)
    user = proposal_messages(context, limits)[1]["content"]
    assert len(user) <= 9000
    assert "#198 cand_198" in user and "#199 " not in user and "#3 cand_3" in user and "pinned by the user" in user
    assert "not shown" in user
    assert proposal_messages(context, limits) == proposal_messages(context, limits)  # deterministic


@pytest.mark.parametrize(
    "text, how",
    [
        ('{"thought": "t", "name": "Hinge Loss", "code": "def hinge(a):\\n    return a"}', "json"),
        ('Here you go:\n```json\n{"thought": "t",\n "name": "n",\n "code": "def g(x):\n    return x",}\n```', "fenced_json"),
        ("Sure! {'thought': 'py dict', 'name': 'q', 'code': 'def q(a):\\n    return a'} Hope it helps.", "loose_json"),
        ("Idea: a hinge.\n```python\nimport torch\ndef hinge_x(a, b, c, d, beta):\n    return a\n```", "fenced_code"),
        ('{"thought": "t", "name": "n", "code": "```python\\ndef fenced(a):\\n    return a\\n```"}', "json"),
        ("import torch\n\ndef bare(a, b, c, d, beta):\n    return a - b", "bare_code"),
    ],
)
def test_the_parser_tolerates_common_answer_shapes(text: str, how: str) -> None:
    parsed = parse_proposal(text)
    assert parsed.how == how and "def " in parsed.code and not parsed.code.startswith("```")
    assert parsed.name.isidentifier() and parsed.name == parsed.name.lower()


@pytest.mark.parametrize("text", ["", "I cannot help with that.", '{"thought": "only a thought"}', "def broken(:\n  pass"])
def test_the_parser_refuses_answers_without_a_function(text: str) -> None:
    with pytest.raises(ProposalError) as caught:
        parse_proposal(text)
    assert caught.value.raw == text


# -- reasoning models ----------------------------------------------------------------------------------

DRAFT = answer(name="scalar_loss", code=SCALAR_CODE, thought="Average over the batch.")
FINAL = answer(thought="One loss per pair.")


def think(reasoning: str, final: str = FINAL) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{final}"


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "step",
    [
        # a draft proposal inside the reasoning (it was evaluated as the candidate before)
        {"text": think(f"A first draft:\n```json\n{DRAFT}\n```\nNo: .mean() collapses the batch.")},
        # reasoning that mentions JSON braces before a valid answer (it failed to parse before)
        {"text": think("The answer must be a JSON object {thought, name, code}; keep it simple.")},
        # DeepSeek-R1: the output begins inside the reasoning, only the closing tag is there
        {"text": f"The answer must be a JSON object {{thought, name, code}}.\n</think>\n{FINAL}"},
        # the reasoning in its own field (DeepSeek, vLLM; OpenRouter calls it "reasoning")
        {"text": FINAL, "reasoning": f"Draft: {DRAFT}"},
        {"text": FINAL, "reasoning": f"Draft: {DRAFT}", "reasoning_field": "reasoning"},
    ],
    ids=["draft-in-think", "json-words-in-think", "r1-no-opening-tag", "reasoning_content", "reasoning"],
)
def test_the_reasoning_is_shown_and_kept_but_never_read_as_the_proposal(stream: bool, step: dict) -> None:
    events: list[dict] = []
    with FakeServer([step]) as server:
        proposal = make(server, events=events, stream=stream).propose(CONTEXT)
    assert proposal.name == "smooth_sigmoid" and proposal.code == SIGMOID_CODE.strip("\n")
    (shown,) = [e for e in events if e["kind"] == "reasoning"]
    assert shown["purpose"] == "propose" and shown["step"] == 3 and shown["chars"] == len(shown["text"]) > 20
    assert "JSON object" in shown["text"] or "scalar_loss" in shown["text"]
    assert FINAL not in shown["text"]
    # stored with the proposal: the answer's thought first, then the reasoning marked as a note
    assert proposal.thought.startswith("One loss per pair.\n\nModel reasoning (")
    assert shown["text"] in proposal.thought and "not read as the proposal" in proposal.thought
    tokens = [e for e in events if e["kind"] == "token"]
    streamed = "".join(e["text"] for e in tokens)
    assert shown["text"].split()[0] in streamed and '"One loss per pair."' in streamed  # both reach the TUI
    call = next(e for e in events if e["kind"] == "llm_call")
    assert call["reasoning_chars"] == len(shown["text"]) and call["finish_reason"] == "stop"
    if stream and "reasoning" in step:  # a separate field: each token event says which channel it is
        assert {e["channel"] for e in tokens} == {"reasoning", "answer"}
        assert "".join(e["text"] for e in tokens if e["channel"] == "reasoning") == step["reasoning"]


@pytest.mark.parametrize("stream", [True, False])
def test_an_answer_that_is_only_reasoning_is_refused_saying_so(stream: bool) -> None:
    with FakeServer(["<think>I could return " + DRAFT + " but let me think more about"]) as server:
        proposer = make(server, stream=stream)
        with pytest.raises(ProposalError, match="holds only reasoning .* no final answer") as caught:
            proposer.propose(CONTEXT)
    assert "scalar_loss" in caught.value.raw and caught.value.raw.startswith("<think>")  # the evidence is kept
    assert proposer.budget.state.calls == 1


@pytest.mark.parametrize(
    "text, where",
    [(f"<think>{DRAFT}", "a <think> block that is never closed"), (f"<think>{DRAFT}</think>\n  ", "reasoning"),
     (f"{DRAFT}</think>", "reasoning")],
)
def test_the_parser_never_reads_a_proposal_from_reasoning_alone(text: str, where: str) -> None:
    with pytest.raises(ProposalError, match=rf"holds only reasoning \(\d+ characters in {where}\)") as caught:
        parse_proposal(text)
    assert caught.value.raw == text


def test_a_reflection_with_reasoning_keeps_only_the_reflection() -> None:
    events: list[dict] = []
    with FakeServer([{"text": "Per-pair losses train; try a softer margin.", "reasoning": "Fitness rose by 0.12."}]) as server:
        text = make(server, events=events).reflect("summary", step=4)
    assert text == "Per-pair losses train; try a softer margin."
    assert [e["text"] for e in events if e["kind"] == "reasoning"] == ["Fitness rose by 0.12."]


# -- truncated answers ---------------------------------------------------------------------------------


def cut(text: str, **step: Any) -> dict:
    """A step the server cuts at the request's token limit, as a real server does."""
    return {"text": text, "cut_to_max_tokens": True, **step}


@pytest.mark.parametrize("stream", [True, False])
def test_a_cut_off_answer_is_asked_again_with_twice_the_limit(stream: bool) -> None:
    events: list[dict] = []
    words = len(FINAL.split())  # the answer needs this many tokens (the fake server counts words)
    with FakeServer([cut(FINAL)] * 2) as server:
        proposer = make(server, events=events, stream=stream,
                        models=[ModelChoice(name="model-a", max_tokens=words - 10)])
        proposal = proposer.propose(CONTEXT)
    assert proposal.name == "smooth_sigmoid" and proposal.code == SIGMOID_CODE.strip("\n")
    requests = server.chat_requests
    assert [r.body["max_tokens"] for r in requests] == [words - 10, 2 * (words - 10)]
    assert "cut off at the limit of" not in requests[0].prompt_text()
    assert f"cut off at the limit of {words - 10} tokens" in requests[1].prompt_text()
    (truncated,) = [e for e in events if e["kind"] == "truncated"]
    assert truncated["max_tokens"] == words - 10 and truncated["retry_max_tokens"] == 2 * (words - 10)
    assert truncated["completion_tokens"] == words - 10 and not truncated["in_reasoning"]
    assert "cut off at the token limit" in truncated["message"]
    assert [e["finish_reason"] for e in events if e["kind"] == "llm_call"] == ["length", "stop"]
    assert proposer.budget.state.calls == 2  # both tries are charged


def test_an_answer_cut_off_every_time_fails_saying_it_was_cut_off() -> None:
    events: list[dict] = []
    with FakeServer([cut(FINAL, reasoning="word " * 200)] * 3) as server:
        proposer = make(server, events=events, truncation_retries=2, max_tokens_ceiling=100,
                        models=[ModelChoice(name="model-a", max_tokens=40)])
        with pytest.raises(ProposalError) as caught:
            proposer.propose(CONTEXT)
    message = str(caught.value)
    assert "cut off at the token limit while the model was still reasoning" in message
    assert "max_tokens 40, 80, 100" in message and "gave up after 3 tries" in message
    assert "max_tokens_ceiling" in message and "shape" not in message and "JSON" not in message
    assert [r.body["max_tokens"] for r in server.chat_requests] == [40, 80, 100]  # bounded by the ceiling
    assert [e["retry_max_tokens"] for e in events if e["kind"] == "truncated"] == [80, 100, None]
    assert all(e["in_reasoning"] for e in events if e["kind"] == "truncated")
    assert caught.value.raw.startswith("<think>\nword word")
    assert proposer.budget.state.calls == 3


def test_a_cut_off_answer_is_never_parsed_even_when_a_prefix_would_parse() -> None:
    # a fenced block cut mid-function: the prefix parses as Python and used to be checked as the candidate
    prose = "Idea: a squared softplus.\n```python\n" + SIGMOID_CODE
    prefix = prose[: prose.index("    return")]
    with FakeServer([{"text": prefix + "    return -F.logsig", "finish_reason": "length"}]) as server:
        with pytest.raises(ProposalError, match="cut off"):
            make(server, truncation_retries=0, structured_output=False).propose(CONTEXT)
    assert parse_proposal(prefix).how == "fenced_code"  # what the parser alone would have accepted


def test_without_a_token_limit_the_retry_asks_for_twice_what_was_produced() -> None:
    with FakeServer([{"text": FINAL[:40], "finish_reason": "length", "completion_tokens": 300}, FINAL]) as server:
        proposal = make(server, models=[ModelChoice(name="model-a", max_tokens=None)]).propose(CONTEXT)
    assert proposal.name == "smooth_sigmoid"
    assert "max_tokens" not in server.chat_requests[0].body and server.chat_requests[1].body["max_tokens"] == 600


def test_a_budget_that_runs_out_stops_the_retries() -> None:
    with FakeServer([cut(FINAL)] * 3) as server:
        proposer = make(server, budget=Budget(BudgetLimits(max_calls=1)), models=[ModelChoice(name="model-a", max_tokens=20)])
        with pytest.raises(BudgetExhausted):
            proposer.propose(CONTEXT)
    assert len(server.chat_requests) == 1


def test_a_cut_off_reflection_is_kept_and_marked() -> None:
    events: list[dict] = []
    said = "The margin term helped a lot because the policy moved less from the reference than DPO's did at the same beta."
    with FakeServer([cut(said, reasoning="short")]) as server:
        text = make(server, events=events, reflection_max_tokens=16).reflect("summary")
    assert text == " ".join(said.split()[:15]) + "..."  # 16 tokens: 1 of reasoning, 15 of the reflection
    assert len(server.chat_requests) == 1
    (truncated,) = [e for e in events if e["kind"] == "truncated"]
    assert truncated["purpose"] == "reflect" and truncated["retry_max_tokens"] is None and "kept" in truncated["message"]


# -- the key stays secret ------------------------------------------------------------------------------


class _State(TypedDict, total=False):
    step: int
    outcomes: list


def test_the_api_key_is_in_no_event_and_no_error_of_a_graph_run() -> None:
    script = [
        {"kind": "rate_limit", "retry_after": 0.01}, answer(),               # retried, then fine
        {"kind": "server_error", "status": 401, "echo_headers": True},       # a server that leaks headers
        {"kind": "garbage", "body": "<html>oops</html>"},                    # unreadable body
        {"kind": "bad_json"},                                                # unreadable content
        "A short reflection.",
    ]
    with FakeServer(script) as server:
        client = LLMClient(server.base_url, api_key_env=KEY_ENV, max_retries=1, timeout=10)
        proposer = LLMProposer(client, LLMProposerSettings(models=[ModelChoice(name="model-a")]), seed=0)

        def node(state: _State) -> _State:
            outcomes = []
            for step in range(4):
                try:
                    outcomes.append(proposer.propose(CONTEXT.model_copy(update={"step": step})).name)
                except Exception as error:  # noqa: BLE001 - what the search node records
                    outcomes.append("".join(traceback.format_exception(error)))
            outcomes.append(proposer.reflect("summary"))
            return {"outcomes": outcomes}

        graph = StateGraph(_State)
        graph.add_node("propose", node)
        graph.add_edge(START, "propose")
        graph.add_edge("propose", END)
        events: list[dict] = []
        outcomes: list[str] = []
        for mode, chunk in graph.compile().stream({"step": 0}, stream_mode=["custom", "values"]):
            if mode == "custom":
                events.append(chunk)
            else:
                outcomes = chunk.get("outcomes", outcomes)
    assert any(KEY in json.dumps(r.headers) for r in server.requests)  # the server did receive it
    assert outcomes[0] == "smooth_sigmoid" and outcomes[-1] == "A short reflection."
    assert "LLMError" in outcomes[1] and "ProposalError" in outcomes[2] and "ProposalError" in outcomes[3]
    assert {"token", "llm_call"} <= {e["kind"] for e in events}
    everything = json.dumps(events) + json.dumps(outcomes)
    assert KEY not in everything and "SECRET" not in everything


def test_the_api_key_is_in_no_error_message() -> None:
    errors: list[BaseException] = []
    with FakeServer([{"kind": "server_error", "status": 401, "echo_headers": True},
                     {"kind": "garbage", "body": "<pre>Authorization: Bearer " + KEY + "</pre>"}]) as server:
        proposer = make(server)
        for _ in range(2):
            try:
                proposer.propose(CONTEXT)
            except Exception as error:  # noqa: BLE001
                errors.append(error)
    assert [type(e) for e in errors] == [LLMError, ProposalError]
    for error in errors:
        text = "".join(traceback.format_exception(error)) + repr(error) + str(getattr(error, "raw", ""))
        assert KEY not in text


# -- through the real search graph ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_search_repairs_a_rejected_llm_proposal(tmp_path, tiny_run_config) -> None:
    from lossforge.rundir.archive import Archive
    from lossforge.agent.runner import run_search

    script = [
        answer(name="scalar_loss", code=SCALAR_CODE, thought="Average the DPO loss."),
        {"match": "Repair this candidate", "text": answer(thought="The .mean() reduced the batch; fixed.")},
    ]
    config = tiny_run_config.model_copy(update={"search": tiny_run_config.search.model_copy(update={"generations": 1})})
    events: list[dict] = []
    with FakeServer(script) as server:
        client = LLMClient(server.base_url, api_key_env=KEY_ENV, max_retries=1, timeout=10)
        proposer = LLMProposer(client, LLMProposerSettings(models=[ModelChoice(name="model-a")]), seed=0)
        summary = run_search(tmp_path, config, proposer=proposer, on_event=events.append)
    assert summary.evaluated == 1
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    first, second = archive.all()[:2]
    assert first.status == "rejected" and first.failed_check == "shape"
    assert second.repair_of == first.id and second.status == "evaluated" and second.operator == "llm-repair"
    assert "returned a scalar" in server.chat_requests[1].prompt_text()
    assert any(e["kind"] == "token" for e in events) and KEY not in json.dumps(events)


# -- configuration and construction --------------------------------------------------------------------


def test_the_config_section_validates_prices_and_unknown_keys() -> None:
    from pydantic import ValidationError

    from lossforge.settings.llm import LLMProposerConfig

    with pytest.raises(ValidationError, match=r"no price"):
        LLMProposerConfig.model_validate({"models": [{"name": "gpt-x"}], "budget": {"max_usd": 5}})
    with pytest.raises(ValidationError, match="temprature"):
        LLMProposerConfig.model_validate({"models": [{"name": "gpt-x", "temprature": 0.5}]})
    with pytest.raises(ValidationError, match="unique"):
        LLMProposerConfig.model_validate({"models": [{"name": "a"}, {"name": "a"}]})
    config = LLMProposerConfig.model_validate({
        "models": [{"name": "gpt-x", "weight": 2}], "reflection_model": "critic",
        "prices": {"models": {"gpt-x": {"input": 1, "output": 2}}, "default": {"input": 5, "output": 5}},
        "budget": {"max_usd": 5},
    })
    assert config.settings().model_names() == ["gpt-x", "critic"] and "base_url" not in config.settings().model_dump()


def test_the_factory_resumes_a_saved_budget_and_reports_every_charge() -> None:
    from lossforge.proposers.llm.proposer import make_llm_proposer
    from lossforge.settings.llm import LLMProposerConfig

    saved: list[dict] = []
    with FakeServer([answer()]) as server:
        config = LLMProposerConfig(base_url=server.base_url, api_key_env=KEY_ENV, models=[ModelChoice(name="model-a")],
                                   budget=BudgetLimits(max_calls=2))
        proposer = make_llm_proposer(config, seed=3, on_budget_change=lambda s: saved.append(s.model_dump()),
                                     emitter=lambda *a, **k: None)
        proposer.propose(CONTEXT)
        assert saved[-1]["calls"] == 1
        resumed = make_llm_proposer(config, budget_state={**saved[-1], "calls": 2}, emitter=lambda *a, **k: None)
        with pytest.raises(BudgetExhausted):
            resumed.propose(CONTEXT)
    assert len(server.chat_requests) == 1 and KEY not in repr(proposer.client)
