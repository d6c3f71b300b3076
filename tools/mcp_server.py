"""The tool API served over MCP with the official `mcp` SDK (`MCPServer`, mcp 2.x).

    python -m lossforge.tools.mcp_server [--config FILE.toml] [--cache-dir DIR]
                                         [--http HOST:PORT] [--token-env NAME]

What it guarantees
------------------
* stdio by default (the MCP client launches this command). With `--http HOST:PORT` it serves
  streamable HTTP at `http://HOST:PORT/mcp`, and every HTTP request must carry
  `Authorization: Bearer <token>`, where the token is read from the environment variable named by
  `--token-env` (default `LOSSFORGE_MCP_TOKEN`). A request without it or with another token gets 401;
  the server refuses to start over HTTP when the variable is unset or empty.
* Every tool of `lossforge.tools.api.TOOLS`, with the same names, argument schemas and structured
  results, generated from the registry (no tool is declared here): each tool's arguments are its
  input model's fields with their types, defaults and descriptions but not their constraints, so a
  bad argument reaches the tool's own validation and comes back with its `ToolInputError` text.
  Blocking work runs in worker threads, so the server keeps answering while a screen runs.
* Progress: when the client asks for it (a progress token), a call sends a notification at least every
  `HEARTBEAT_SECONDS` (5 s) while it runs: the long tools' steps (`screen_loss`, `compare_losses`:
  checks, world preparation, each screen) and, between them, "working, N s" heartbeats, so a cold
  world build or a long screen is never silent. Values strictly increase and end at the total.
* Cancellation: a call the client cancels (`notifications/cancelled`) ends at once; the sandbox
  children it started are killed (their process groups, as at a timeout) and it starts no further
  sandbox job or step, so the next call (e.g. `check_loss`) does not wait behind it. A proxy world
  being built when the call is cancelled (trusted code in this process, cached on disk) is finished
  in the background and reused by the next screen.
* Any failure of a tool (bad arguments, a limit exceeded, a capability not available, a sandbox error)
  comes back as a tool result with `isError` and a clear message; the server keeps serving. Candidate
  code only ever runs in the sandbox.
* The settings come from a `lossforge run` TOML (`--config`, or the file named by
  `LOSSFORGE_MCP_CONFIG`): its `[proxy.world]`, `[proxy.screen]`, `[sandbox]`, `cache_dir` and, for
  training and judging, `[train]` (`job`, `launcher`, `jobs_dir`, `time_limit_s`, `[train.judge]`). One
  `ToolContext` (one sandbox) per server, closed when the server stops.
"""
from __future__ import annotations

import argparse
import hmac
import inspect
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Sequence

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as McpToolError
from pydantic import Field

from lossforge.errors import LossforgeError
from lossforge.sandbox.cancel import Cancellation, cancellable
from lossforge.tools import api
from lossforge.tools.context import ToolContext, ToolError as LossforgeToolError, ToolSettings

logger = logging.getLogger(__name__)

__all__ = ["build_server", "serve", "main", "BearerTokenMiddleware", "DEFAULT_TOKEN_ENV", "CONFIG_ENV", "HEARTBEAT_SECONDS"]

DEFAULT_TOKEN_ENV = "LOSSFORGE_MCP_TOKEN"
CONFIG_ENV = "LOSSFORGE_MCP_CONFIG"

INSTRUCTIONS = """\
lossforge discovers preference-optimisation losses (the objective DPO, IPO, SLiC, KTO differ by).
A loss is Python source defining one function f(policy_chosen_logps, policy_rejected_logps,
reference_chosen_logps, reference_rejected_logps, beta) -> losses of shape (batch,), using only torch,
torch.nn.functional as F and math. Workflow: check_loss (milliseconds) -> screen_loss (seconds; proxy
fitness, higher is better, DPO ~1.06) -> compare_losses against DPO; plot_loss shows the loss's shape.
archive_top / archive_get read a search run; propose_from proposes a new loss from a run's archive.
Full training: submit_training (a TRL DPO job in the background; returns a job_id) -> poll job_status
until done -> judge(job_id) (an LLM judge's MT-Bench / Arena-Hard score, or the held-out preference
accuracy when the server has no judge endpoint).
"""

#: Seconds between the progress notifications a running call sends while nothing else reports progress
#: (at most 10 s apart, as the README promises).
HEARTBEAT_SECONDS = 5.0


class _CallProgress:
    """The progress of one tool call, sent to a client that asked for it (a progress token).

    The tool reports steps (``report``, from its worker thread); between steps a heartbeat (``beat``,
    every ``HEARTBEAT_SECONDS``) says it is still working. Sent values strictly increase, as MCP requires:
    a step sends ``done``, the k-th beat after it ``done + k / (k + 1)`` (below the next step); beats
    stop once ``done`` reaches ``total``. A client that went away does not fail the call.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.done = 0.0
        self.total: float | None = None
        self.message = "started"
        self.beats = 0
        self.sent = -1.0
        self.started = time.monotonic()
        self.lock = anyio.Lock()

    async def send(self, done: float | None = None, total: float | None = None, message: str | None = None) -> None:
        async with self.lock:
            if done is None:  # a heartbeat
                if self.total is not None and self.done >= self.total:
                    return
                self.beats += 1
                text = f"{self.message} (working, {time.monotonic() - self.started:.0f} s)"
            else:
                self.done, self.total, self.message, self.beats = float(done), total, message or self.message, 0
                text = self.message
            value = self.done + self.beats / (self.beats + 1)
            if value <= self.sent:
                return
            self.sent = value
            try:
                await self.ctx.report_progress(value, self.total, text)
            except Exception:  # noqa: BLE001 - progress is best effort; a gone client must not fail the tool
                pass

    def reporter(self, cancellation: Cancellation) -> Any:
        """The `progress(done, total, message)` callback for `lossforge.tools.api` (called from the worker
        thread). Raises `ToolCancelled` once the call is cancelled, so the tool stops at its next step."""

        def report(done: float, total: float, message: str) -> None:
            if cancellation.cancelled:
                raise ToolCancelled("the call was cancelled")
            try:
                anyio.from_thread.run(self.send, done, total, message)
            except ToolCancelled:
                raise
            except Exception:  # noqa: BLE001 - e.g. the event loop is shutting down
                pass

        return report


class ToolCancelled(LossforgeError):
    """Raised inside a cancelled call's worker thread to end its work early (nobody reads its result)."""


def build_server(context: ToolContext, *, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> Any:
    """An `MCPServer` whose tools call `lossforge.tools.api` with `context`.

    Every call runs in a worker thread. While it runs, a client that asked for progress gets the tool's
    own steps and, between them, a notification every `heartbeat_seconds` (a cold world build or a long
    screen is never silent). A call the client cancels (`notifications/cancelled`) returns at once; its
    sandbox jobs are killed and it starts no further sandbox job or step, so the next call does not wait
    behind it. Work outside the sandbox that is under way (building a proxy world, which is cached and
    reused) runs to its end in the background.
    """
    if heartbeat_seconds <= 0:
        raise ValueError("heartbeat_seconds must be positive")
    server = MCPServer("lossforge", instructions=INSTRUCTIONS, version=_version(), log_level="WARNING")

    async def call(ctx: Context, fn: Any, *args: Any, with_progress: bool = False, **kwargs: Any) -> Any:
        progress = _CallProgress(ctx)
        cancellation = Cancellation()
        if with_progress:
            kwargs["progress"] = progress.reporter(cancellation)

        def work() -> Any:
            with cancellable(cancellation):
                return fn(*args, context=context, **kwargs)

        async def heartbeat() -> None:
            while True:
                await anyio.sleep(heartbeat_seconds)
                await progress.send()

        result: Any = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:  # no exception of the tool crosses it (no ExceptionGroup)
            tasks.start_soon(heartbeat)
            try:
                result = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                cancellation.cancel()  # the client cancelled: kill the sandbox jobs, refuse further ones
                raise
            except Exception as error:  # noqa: BLE001 - mapped below
                failure = error
            finally:
                tasks.cancel_scope.cancel()
        if failure is None:
            return result
        if isinstance(failure, LossforgeToolError):  # anticipated: the message is written for the caller
            raise McpToolError(str(failure)) from failure
        logger.error("tool %s failed", getattr(fn, "__name__", fn), exc_info=failure)  # a bug of ours: keep serving
        raise McpToolError(f"internal error: {type(failure).__name__}: {failure}") from failure

    for tool in api.TOOLS.values():
        server.add_tool(_mcp_function(tool, call), name=tool.name, description=tool.description)
    return server


def _mcp_function(tool: api.Tool, call: Any) -> Any:
    """The async function `MCPServer.add_tool` registers for `tool`: `ctx: Context` and, as keywords, one
    parameter per field of the tool's input model (its type, default and description; not its constraints,
    which the tool checks itself), returning the tool's result model. It calls the tool through `call`."""

    async def run(ctx: Context, **arguments: Any) -> Any:
        return await call(ctx, tool.fn, with_progress=tool.progress, **arguments)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    annotations: dict[str, Any] = {"ctx": Context}
    for name, field in tool.input.model_fields.items():
        annotation = Annotated[field.annotation, Field(description=field.description)]
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
        annotations[name] = annotation
    annotations["return"] = tool.result
    run.__signature__ = inspect.Signature(parameters, return_annotation=tool.result)  # type: ignore[attr-defined]
    run.__annotations__ = annotations  # what find_context_parameter reads (typing.get_type_hints)
    run.__name__ = run.__qualname__ = tool.name
    run.__doc__ = tool.description
    return run


def _version() -> str:
    try:
        from lossforge.version import __version__

        return str(__version__)
    except Exception:  # noqa: BLE001
        return ""


class BearerTokenMiddleware:
    """ASGI middleware: HTTP requests without `Authorization: Bearer <token>` (exactly) get 401.

    Lifespan and other non-HTTP scopes pass through. The comparison is constant-time.
    """

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = b""
            for key, value in scope.get("headers") or []:
                if key.lower() == b"authorization":
                    given = value
                    break
            if not hmac.compare_digest(given, self._expected):
                body = b'{"error": "unauthorized", "error_description": "a valid bearer token is required"}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="lossforge"'),
                ]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def parse_host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') -> (host, port); ValueError with a clear message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8765 (got {text!r})")
    return host.strip("[]"), int(port)


def serve(http: str | None = None, token_env: str = DEFAULT_TOKEN_ENV, *, settings: ToolSettings | None = None,
          context: ToolContext | None = None) -> None:
    """Serve the tools until stopped: over stdio when `http` is None, else streamable HTTP on HOST:PORT
    (path /mcp) with the bearer token from the environment variable `token_env`. Closes the context's
    sandbox on the way out. Raises ValueError for a bad address or a missing token."""
    token = None
    address = None
    if http is not None:
        address = parse_host_port(http)
        token = os.environ.get(token_env, "")
        if not token:
            raise ValueError(f"serving over HTTP needs a bearer token: set the environment variable {token_env}")
    ctx = context or ToolContext(settings or ToolSettings())
    try:
        server = build_server(ctx)
        if address is None:
            server.run("stdio")
        else:
            anyio.run(_serve_http, server, address[0], address[1], token)
    finally:
        ctx.close()


async def _serve_http(server: Any, host: str, port: int, token: str) -> None:
    import uvicorn

    app = BearerTokenMiddleware(server.streamable_http_app(host=host), token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()


def settings_from(config: str | Path | None, cache_dir: str | Path | None = None) -> ToolSettings:
    """Settings from a run TOML (`config`, else $LOSSFORGE_MCP_CONFIG, else the defaults)."""
    path = config or os.environ.get(CONFIG_ENV) or None
    return ToolSettings.from_toml(path, cache_dir=Path(cache_dir).expanduser() if cache_dir else None)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lossforge.tools.mcp_server`: exit 0 after a clean stop, 2 for a usage error."""
    parser = argparse.ArgumentParser(prog="lossforge mcp", description="Serve lossforge's tools over MCP.")
    parser.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP (path /mcp) instead of stdio")
    parser.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                        help=f"environment variable holding the HTTP bearer token (default {DEFAULT_TOKEN_ENV})")
    parser.add_argument("--config", help=f"a lossforge run TOML for the proxy, sandbox and cache_dir (or ${CONFIG_ENV})")
    parser.add_argument("--cache-dir", help="where proxy worlds are cached (overrides the config)")
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args.config, args.cache_dir)
        if args.http is not None:
            parse_host_port(args.http)
            if not os.environ.get(args.token_env):
                raise ValueError(f"serving over HTTP needs a bearer token: set the environment variable {args.token_env}")
    except ValueError as error:  # ConfigError is a ValueError
        print(f"lossforge mcp: {error}", file=sys.stderr)
        return 2
    try:
        serve(args.http, args.token_env, settings=settings)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
