"""`langchain_tools()` inside a real LangGraph ReAct agent driven by a scripted chat model."""
from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import lossforge.tools
from lossforge.tools.context import ToolContext
from lossforge.trainer.losses import library_code


class ScriptedChatModel(BaseChatModel):
    """Answers with the next scripted message each time it is called (tool calls, then a final answer)."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "ScriptedChatModel":
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        turn = sum(isinstance(m, AIMessage) for m in messages)
        return ChatResult(generations=[ChatGeneration(message=self.script[turn])])


def test_langgraph_react_agent_uses_check_and_screen(tool_context: ToolContext) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

    tools = lossforge.tools.langchain_tools(tool_context)
    assert {t.name for t in tools} >= {"check_loss", "screen_loss", "compare_losses", "propose_from"}
    code = library_code("ipo")
    model = ScriptedChatModel(script=[
        AIMessage(content="", tool_calls=[{"name": "check_loss", "args": {"code": code}, "id": "call-1"}]),
        AIMessage(content="", tool_calls=[{"name": "screen_loss", "args": {"code": code, "seeds": [0]}, "id": "call-2"}]),
        AIMessage(content="", tool_calls=[{"name": "judge", "args": {"job_id": "x"}, "id": "call-3"}]),
        AIMessage(content="IPO passes the checks and screens fine."),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, tools)
    state = agent.invoke({"messages": [("user", "Is IPO a good loss on the proxy?")]})

    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.name for m in tool_messages] == ["check_loss", "screen_loss", "judge"]
    checked = json.loads(tool_messages[0].content)
    assert checked["passed"] is True
    screened = json.loads(tool_messages[1].content)
    assert screened["status"] == "evaluated" and screened["mean_fitness"] is not None
    assert tool_messages[1].artifact.mean_fitness == screened["mean_fitness"]  # the pydantic result rides along
    assert "not a job id" in tool_messages[2].content  # a tool's error is a message to the agent, not a crash
    assert state["messages"][-1].content == "IPO passes the checks and screens fine."
    # the model saw every tool result before its final answer
    assert sum(isinstance(m, ToolMessage) for m in model.seen[-1]) == 3


def test_importing_lossforge_tools_does_not_import_langchain() -> None:
    import subprocess
    import sys

    code = "import sys, lossforge.tools; print('langchain_core' in sys.modules, 'mcp' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr
