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
  results. The long tools (`screen_loss`, `compare_losses`) send MCP progress notifications when the
  client asks for progress (a progress token). Blocking work runs in worker threads, so the server
  keeps answering while a screen runs.
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
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Sequence

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as McpToolError
from pydantic import Field

from lossforge.tools import api
from lossforge.tools.context import ToolContext, ToolError as LossforgeToolError, ToolSettings

logger = logging.getLogger(__name__)

__all__ = ["build_server", "serve", "main", "BearerTokenMiddleware", "DEFAULT_TOKEN_ENV", "CONFIG_ENV"]

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

Code = Annotated[str, Field(description=api._CODE_DESC)]
Beta = Annotated[float, Field(description=api._BETA_DESC)]
Seeds = Annotated[list[int], Field(description="Proxy world seeds (each >= 0).")]
Betas = Annotated[list[float], Field(description="betas to screen at, each in (0, 10].")]
RunDir = Annotated[str, Field(description="A lossforge run directory (it holds archive.sqlite).")]


def _doc(fn: Any) -> str:
    import inspect

    return inspect.cleandoc(fn.__doc__ or "")


def build_server(context: ToolContext) -> Any:
    """An `MCPServer` whose tools call `lossforge.tools.api` with `context`."""
    server = MCPServer("lossforge", instructions=INSTRUCTIONS, version=_version(), log_level="WARNING")

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(lambda: fn(*args, context=context, **kwargs))
        except LossforgeToolError as error:  # anticipated: the message is written for the caller
            raise McpToolError(str(error)) from error
        except Exception as error:  # noqa: BLE001 - a bug of ours: say what, keep serving
            logger.exception("tool %s failed", getattr(fn, "__name__", fn))
            raise McpToolError(f"internal error: {type(error).__name__}: {error}") from error

    def progress_reporter(ctx: Context) -> Any:
        def report(done: float, total: float, message: str) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, done, total, message)
            except Exception:  # noqa: BLE001 - progress is best effort; a gone client must not fail the tool
                pass

        return report

    @server.tool(description=_doc(api.check_loss))
    async def check_loss(code: Code, beta: Beta = 0.1) -> api.CheckLossResult:
        return await call(api.check_loss, code, beta)

    @server.tool(description=_doc(api.screen_loss))
    async def screen_loss(ctx: Context, code: Code, seeds: Seeds = [0], betas: Betas = [0.1]) -> api.ScreenLossResult:  # noqa: B006
        return await call(api.screen_loss, code, seeds, betas, progress=progress_reporter(ctx))

    @server.tool(description=_doc(api.compare_losses))
    async def compare_losses(
        ctx: Context,
        codes: Annotated[dict[str, str], Field(description="Losses to compare: a short name -> its source code.")],
        seeds: Seeds = [0],  # noqa: B006
        betas: Betas = [0.1],  # noqa: B006
    ) -> api.CompareLossesResult:
        return await call(api.compare_losses, codes, seeds, betas, progress=progress_reporter(ctx))

    @server.tool(description=_doc(api.plot_loss))
    async def plot_loss(code: Code, beta: Beta = 0.1) -> api.PlotResult:
        return await call(api.plot_loss, code, beta)

    @server.tool(description=_doc(api.archive_top))
    async def archive_top(run_dir: RunDir, k: Annotated[int, Field(description="How many candidates.")] = 10) -> api.ArchiveTopResult:
        return await call(api.archive_top, run_dir, k)

    @server.tool(description=_doc(api.archive_get))
    async def archive_get(run_dir: RunDir, candidate_id: Annotated[int, Field(description="The candidate's id.")]) -> api.CandidateDetail:
        return await call(api.archive_get, run_dir, candidate_id)

    @server.tool(description=_doc(api.propose_from))
    async def propose_from(
        run_dir: RunDir,
        hint: Annotated[str | None, Field(description="Optional guidance added to the proposer's hints.")] = None,
    ) -> api.ProposalResult:
        return await call(api.propose_from, run_dir, hint)

    @server.tool(description=_doc(api.submit_training))
    async def submit_training(
        code: Code,
        job_config: Annotated[dict[str, Any] | None, Field(
            description="TRL JobConfig fields on top of the server's base job, e.g. {\"beta\": 0.05, \"max_steps\": 200}.")] = None,
    ) -> api.SubmitTrainingResult:
        return await call(api.submit_training, code, job_config)

    @server.tool(description=_doc(api.job_status))
    async def job_status(job_id: Annotated[str, Field(description="The job_id returned by submit_training.")]) -> api.JobStatusResult:
        return await call(api.job_status, job_id)

    @server.tool(description=_doc(api.judge))
    async def judge(
        job_id: Annotated[str | None, Field(description="A succeeded training job's id (or give answers).")] = None,
        benchmark: Annotated[str, Field(description="'mt-bench' or 'arena-hard'.")] = "mt-bench",
        answers: Annotated[dict[str, list[str]] | None, Field(
            description="Answers to grade instead of a job: question id -> [answer per turn].")] = None,
    ) -> api.JudgeResult:
        return await call(api.judge, job_id, benchmark, answers)

    return server


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
