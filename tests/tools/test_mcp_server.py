"""The MCP server as a subprocess, driven by the mcp SDK's real client over stdio and streamable HTTP."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import urllib.error
import urllib.request

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from lossforge.tools.mcp_server import HEARTBEAT_SECONDS, main, parse_host_port
from lossforge.trainer.losses import library_code
from tests.conftest import tiny_config_toml

pytestmark = pytest.mark.slow

MALICIOUS = {
    "import os": "import os\n\ndef evil(a, b, c, d, beta):\n    return os.system('id')\n",
    "open": "def evil(a, b, c, d, beta):\n    return open('/etc/passwd').read()\n",
    "torch.load": "import torch\n\ndef evil(a, b, c, d, beta):\n    return torch.load('/tmp/x.pt')\n",
}
EXPECTED_TOOLS = {"check_loss", "screen_loss", "compare_losses", "plot_loss", "archive_top", "archive_get",
                  "propose_from", "submit_training", "job_status", "judge"}


def _structured(result: Any) -> dict:
    assert not result.is_error, result.content
    return result.structured_content or json.loads(result.content[0].text)


async def _common_checks(client: Client) -> None:
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == EXPECTED_TOOLS
    assert set(listed["screen_loss"].input_schema["properties"]) == {"code", "seeds", "betas"}
    assert listed["screen_loss"].input_schema["required"] == ["code"]
    assert "mean_fitness" in json.dumps(listed["screen_loss"].output_schema)
    assert "fitness" in (listed["screen_loss"].description or "")

    good = _structured(await client.call_tool("check_loss", {"code": library_code("dpo")}))
    assert good["passed"] is True
    for what, code in MALICIOUS.items():
        rejected = _structured(await client.call_tool("check_loss", {"code": code}))
        assert rejected["passed"] is False, what
        assert rejected["failed_check"] == "policy", (what, rejected["summary"])
        screened = _structured(await client.call_tool("screen_loss", {"code": code}))
        assert screened["status"] == "rejected" and screened["runs"] == []
    plotted = await client.call_tool("plot_loss", {"code": MALICIOUS["open"]})
    assert plotted.is_error and "policy" in plotted.content[0].text
    # the server keeps serving after all that
    assert _structured(await client.call_tool("check_loss", {"code": library_code("ipo")}))["passed"] is True


def test_stdio_server_end_to_end(tiny_toml: Path, run_dir: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "lossforge.tools.mcp_server", "--config", str(tiny_toml)],
        cwd=str(Path(__file__).resolve().parents[2]),
    )

    async def scenario() -> None:
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        async with Client(params, read_timeout_seconds=180) as client:
            await _common_checks(client)

            screened = _structured(await client.call_tool(
                "screen_loss", {"code": library_code("dpo"), "seeds": [0], "betas": [0.1]}, progress_callback=on_progress))
            assert screened["status"] == "evaluated" and screened["passed_checks"]
            assert len(screened["runs"]) == 1 and screened["runs"][0]["fitness"] == screened["mean_fitness"]
            assert screened["mean_fitness"] is not None and screened["mean_fitness"] > 0
            assert progress and progress[-1][0] == progress[-1][1]  # reached total

            top = _structured(await client.call_tool("archive_top", {"run_dir": str(run_dir), "k": 3}))
            assert top["candidates"] and top["candidates"][0]["fitness"] is not None
            first = top["candidates"][0]
            detail = _structured(await client.call_tool("archive_get", {"run_dir": str(run_dir), "candidate_id": first["id"]}))
            assert detail["code"] == first["code"]
            proposal = _structured(await client.call_tool("propose_from", {"run_dir": str(run_dir)}))
            assert "def " in proposal["code"] and proposal["name"]

            for name, args, message in [("submit_training", {"code": library_code("dpo")}, "no base job is configured"),
                                        ("judge", {"job_id": "1"}, "not a job id")]:
                refused = await client.call_tool(name, args)
                assert refused.is_error and message in refused.content[0].text
            too_long = await client.call_tool("check_loss", {"code": "#" * 20_001})
            assert too_long.is_error and "limit is 20000" in too_long.content[0].text
            missing = await client.call_tool("archive_top", {"run_dir": str(run_dir / "nope")})
            assert missing.is_error and "not a lossforge run directory" in missing.content[0].text

    anyio.run(scenario)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tiny_toml: Path):
    port = _free_port()
    token = "s3cret-" + os.urandom(8).hex()
    env = dict(os.environ, TEST_MCP_TOKEN=token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossforge.tools.mcp_server", "--config", str(tiny_toml),
         "--http", f"127.0.0.1:{port}", "--token-env", "TEST_MCP_TOKEN"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        try:
            urllib.request.urlopen(url, timeout=1)
        except urllib.error.HTTPError:  # any HTTP answer (401 here) means it is up
            break
        except OSError:
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.2)
    try:
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_http_refuses_missing_and_wrong_tokens(http_server) -> None:
    url, token = http_server
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

    def post(extra: dict[str, str]) -> urllib.error.HTTPError:
        request = urllib.request.Request(url, data=body, headers={**headers, **extra}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        return refused.value

    assert post({}).code == 401
    wrong = post({"authorization": "Bearer nope"})
    assert wrong.code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert post({"authorization": token}).code == 401  # the token without "Bearer "
    assert post({"authorization": f"Bearer {token}x"}).code == 401

    async def refused_client() -> None:
        http = create_mcp_http_client(headers={"Authorization": "Bearer wrong"})
        async with http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                await client.list_tools()

    started = time.monotonic()
    with pytest.raises(BaseException) as refused:  # noqa: B017 - the SDK wraps the 401 in its own error types
        anyio.run(refused_client)
    assert refused.group_contains(MCPError) or isinstance(refused.value, MCPError), repr(refused.value)
    assert time.monotonic() - started < 30  # refused at once, not a timeout


def test_http_serves_with_the_token(http_server) -> None:
    url, token = http_server

    async def scenario() -> None:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http:
            async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120) as client:
                await _common_checks(client)

    anyio.run(scenario)


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    assert main(["--http", "127.0.0.1:8765", "--token-env", "NO_SUCH_TOKEN_VAR"]) == 2
    assert "NO_SUCH_TOKEN_VAR" in capsys.readouterr().err
    assert main(["--http", "no-port"]) == 2
    assert main(["--config", "/no/such/file.toml"]) == 2
    assert parse_host_port("[::1]:9000") == ("::1", 9000)


# --- progress while a long call runs, and cancellation --------------------------------------------------------

def _long_screen_toml(path: Path, cache_dir: Path, steps: int) -> Path:
    """The tiny proxy with a screen of `steps` training steps (the world, and so its cache, unchanged). A step
    takes about 0.05 s on 2 cores, so 300 steps are ~15 s and 2,000 steps ~100 s."""
    text = tiny_config_toml(cache_dir, generations=1)
    assert text.count("\nsteps = 12\n") == 1
    path.write_text(text.replace("\nsteps = 12\n", f"\nsteps = {steps}\n"))
    return path


def _stdio(config: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "lossforge.tools.mcp_server", "--config", str(config)],
                                 cwd=str(Path(__file__).resolve().parents[2]))


def test_a_long_call_sends_progress_at_least_every_10_seconds(tmp_path: Path) -> None:
    """A cold world build and a screen of 300 steps (~15-20 s) with no step reported inside it: heartbeats
    fill the gaps (before: one notification when the screen started and one when it ended)."""
    config = _long_screen_toml(tmp_path / "long.toml", tmp_path / "cold-cache", steps=300)
    assert HEARTBEAT_SECONDS <= 5

    async def scenario() -> tuple[float, float, list[tuple[float, float, float | None, str | None]]]:
        notes: list[tuple[float, float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            notes.append((time.monotonic(), done, total, message))

        async with Client(_stdio(config), read_timeout_seconds=300) as client:
            started = time.monotonic()
            screened = _structured(await client.call_tool(
                "screen_loss", {"code": library_code("dpo")}, progress_callback=on_progress))
            ended = time.monotonic()
        assert screened["status"] == "evaluated", screened
        return started, ended, notes

    started, ended, notes = anyio.run(scenario)
    times = [started] + [t for t, *_ in notes] + [ended]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert ended - started > 10, "the call was too short to show anything"
    assert max(gaps) <= 10, (max(gaps), notes)
    values = [done for _, done, _, _ in notes]
    assert all(b > a for a, b in zip(values, values[1:])), values  # MCP: progress strictly increases
    assert notes[-1][1] == notes[-1][2] == 2  # checks, then one screen: done
    beats = [message for *_, message in notes if message and "working" in message]
    assert beats and any("preparing the proxy world" in m or "checks passed" in m for m in beats), beats


def test_a_cancelled_screen_is_stopped_and_the_next_check_answers_at_once(tmp_path: Path, cache_dir: Path,
                                                                           run_dir: Path) -> None:
    """A 2,000-step screen (about 100 s here) cancelled a few seconds in: the next check_loss answers within
    20 s (before: it waited until the abandoned screen had finished in the sandbox)."""
    config = _long_screen_toml(tmp_path / "very-long.toml", cache_dir, steps=2000)  # the tiny world is cached (run_dir)

    async def scenario() -> tuple[float, dict, list[str | None]]:
        messages: list[str | None] = []
        screening = anyio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            messages.append(message)
            if message and "preparing the proxy world" in message:
                screening.set()

        async with Client(_stdio(config), read_timeout_seconds=300) as client:
            assert _structured(await client.call_tool("check_loss", {"code": library_code("dpo")}))["passed"]
            async with anyio.create_task_group() as tasks:
                async def screen() -> None:
                    await client.call_tool("screen_loss", {"code": library_code("dpo")}, progress_callback=on_progress)
                    raise AssertionError("the screen finished: it was meant to be cancelled")

                tasks.start_soon(screen)
                with anyio.fail_after(120):
                    await screening.wait()
                await anyio.sleep(4)  # the world is cached: the screen is running in the sandbox now
                tasks.cancel_scope.cancel()  # the client sends notifications/cancelled
            asked = time.monotonic()
            checked = _structured(await client.call_tool("check_loss", {"code": library_code("ipo")}))
            waited = time.monotonic() - asked
        return waited, checked, messages

    waited, checked, messages = anyio.run(scenario)
    assert checked["passed"] is True
    assert waited < 20, f"check_loss waited {waited:.1f} s behind the cancelled screen"
    assert not any(m and m.startswith("seed 0 beta") for m in messages)  # the screen never reported a result
