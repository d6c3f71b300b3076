"""The tool API: plain typed functions over the sandbox, the proxy and the archive (reused by other agents).

* `lossforge.tools.api`: the functions (`check_loss`, `screen_loss`, `compare_losses`, `plot_loss`,
  `archive_top`, `archive_get`, `propose_from`, `submit_training`, `job_status`, `judge`) with pydantic
  input and result models, and `TOOLS`, the registry the servers are generated from (the code lives in
  `schemas`, `loss_tools`, `archive_tools` and `training_tools`); `lossforge.tools.core` is the check /
  screen code path the search shares; `lossforge.tools.shapes` samples and plots a loss's shape.
* `lossforge.tools.context`: `ToolSettings` (proxy, cache, sandbox, input limits, training, judge) and
  `ToolContext` (one sandbox and one training launcher per context).
* `lossforge.tools.mcp_server`: the MCP server (stdio, or streamable HTTP with a bearer token).
* `lossforge.tools.langchain_tools()`: the same functions as LangChain tools.

Imports are lazy: `import lossforge.tools` loads neither torch, mcp nor langchain.
"""
from __future__ import annotations

from typing import Any

__all__ = ["langchain_tools", "ToolContext", "ToolSettings", "ToolError", "ToolInputError", "ToolUnavailable"]

_CONTEXT_NAMES = {"ToolContext", "ToolSettings", "ToolError", "ToolInputError", "ToolUnavailable"}


def langchain_tools(context: Any = None, names: list[str] | None = None) -> list[Any]:
    """LangChain tools over the tool API (see `lossforge.tools.langchain_tools`); imports langchain on call."""
    from lossforge.tools.langchain_tools import langchain_tools as make

    return make(context, names)


def __getattr__(name: str) -> Any:
    if name in _CONTEXT_NAMES:
        from lossforge.tools import context

        return getattr(context, name)
    raise AttributeError(f"module 'lossforge.tools' has no attribute {name!r}")
