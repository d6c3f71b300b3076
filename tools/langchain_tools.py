"""The tool API as LangChain tools, for LangGraph / LangChain agents.

`langchain_tools(context=None)` returns one `StructuredTool` per entry of `lossforge.tools.api.TOOLS`
(same names, the `*Input` models as argument schemas, the functions' docstrings as descriptions). A tool
returns the result as JSON text for the model and the pydantic result as the message's artifact
(`response_format="content_and_artifact"`). Errors (bad arguments, limits, unavailable capabilities,
sandbox failures) come back to the agent as error messages (`handle_tool_error=True`), not exceptions
that end the run. Every tool shares `context` (default: the process-wide context), so one sandbox
serves them all.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from lossforge.tools import api
from lossforge.tools.context import ToolContext, ToolError, default_context

__all__ = ["langchain_tools"]


def _make(tool: api.Tool, context: ToolContext | None) -> StructuredTool:
    def run(**kwargs: Any) -> tuple[str, Any]:
        ctx = context if context is not None else default_context()
        try:
            result = tool.fn(**kwargs, context=ctx)
        except ToolError as error:
            raise ToolException(str(error)) from error
        return result.model_dump_json(), result

    run.__name__ = tool.name
    return StructuredTool.from_function(
        func=run,
        name=tool.name,
        description=tool.description,
        args_schema=tool.input,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=True,
    )


def langchain_tools(context: ToolContext | None = None, names: list[str] | None = None) -> list[BaseTool]:
    """LangChain tools over `lossforge.tools.api` (all of them, or those in `names`), sharing `context`."""
    unknown = sorted(set(names or ()) - set(api.TOOLS))
    if unknown:
        raise ValueError(f"unknown tools {unknown}; known: {sorted(api.TOOLS)}")
    return [_make(tool, context) for name, tool in api.TOOLS.items() if names is None or name in names]


class _CallableModule(types.ModuleType):
    """Importing this submodule rebinds `lossforge.tools.langchain_tools` (the package's lazy function) to
    the module; making the module callable keeps `lossforge.tools.langchain_tools(...)` working."""

    def __call__(self, context: ToolContext | None = None, names: list[str] | None = None) -> list[BaseTool]:
        return langchain_tools(context, names)


sys.modules[__name__].__class__ = _CallableModule
