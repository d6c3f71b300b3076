"""The tool registry (`api.TOOLS`) is the one definition of every tool: the functions agree with their input
models, and the MCP server and the LangChain tools are generated from it (listed here through a real MCP
client, in process)."""
from __future__ import annotations

import typing

import anyio
from mcp import Client
from pydantic import BaseModel

from lossforge.tools import api
from lossforge.tools.context import ToolContext, ToolSettings
from lossforge.tools.mcp_server import build_server


def _context() -> ToolContext:
    return ToolContext(ToolSettings(), sandbox=object())  # the sandbox is never touched


def test_every_tool_function_takes_exactly_its_input_models_fields() -> None:
    assert list(api.TOOLS) == ["check_loss", "screen_loss", "compare_losses", "plot_loss", "archive_top", "archive_get",
                               "propose_from", "submit_training", "job_status", "judge"]
    for name, tool in api.TOOLS.items():
        assert tool.name == name
        assert tool.parameters() == list(tool.input.model_fields), name
        hints = typing.get_type_hints(tool.fn)
        assert "context" in hints and ("progress" in hints) == tool.progress, name
        assert tool.result is hints["return"] and issubclass(tool.result, BaseModel), name
        assert tool.description and tool.description == tool.description.strip(), name
        assert getattr(api, name) is tool.fn


def test_the_mcp_listing_is_the_registry() -> None:
    ctx = _context()

    async def listing() -> list:
        async with Client(build_server(ctx)) as client:
            return (await client.list_tools()).tools

    try:
        listed = anyio.run(listing)
    finally:
        ctx.close()
    assert [t.name for t in listed] == list(api.TOOLS)
    for mcp_tool in listed:
        tool = api.TOOLS[mcp_tool.name]
        schema = tool.input.model_json_schema()
        properties = mcp_tool.input_schema["properties"]
        assert list(properties) == list(schema["properties"]), tool.name
        assert sorted(mcp_tool.input_schema.get("required", [])) == sorted(schema.get("required", [])), tool.name
        for field, spec in properties.items():
            assert spec.get("description") == tool.input.model_fields[field].description, (tool.name, field)
        assert mcp_tool.description == tool.description
        assert mcp_tool.output_schema and mcp_tool.output_schema.get("title") == tool.result.__name__


def test_mcp_leaves_constraints_to_the_tools_so_bad_input_gets_their_message() -> None:
    ctx = _context()

    async def calls() -> tuple:
        async with Client(build_server(ctx)) as client:
            return (await client.call_tool("archive_top", {"run_dir": "nowhere", "k": 0}),
                    await client.call_tool("check_loss", {"code": "#", "beta": -1}))

    try:
        top, check = anyio.run(calls)
    finally:
        ctx.close()
    assert top.is_error and "invalid arguments: k: Input should be greater than or equal to 1" in top.content[0].text
    assert check.is_error and "invalid arguments: beta: Input should be greater than 0" in check.content[0].text


def test_langchain_tools_are_the_registrys() -> None:
    from lossforge.tools.langchain_tools import langchain_tools

    tools = langchain_tools(_context())
    assert [t.name for t in tools] == list(api.TOOLS)
    for lc_tool in tools:
        tool = api.TOOLS[lc_tool.name]
        assert lc_tool.args_schema is tool.input and lc_tool.description == tool.description
