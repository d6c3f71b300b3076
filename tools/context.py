"""The settings and shared resources behind the tool API: one `ToolContext` per server or agent.

What it guarantees
------------------
* `ToolSettings` is plain pydantic: the proxy configuration (world + screen), the cache directory of
  proxy worlds, the sandbox limits, and the input limits every tool enforces (code length, number of
  seeds / betas / losses). `ToolSettings.from_run_config` takes them from a `lossforge run` TOML file,
  so a server and a search share one configuration format.
* `ToolContext` owns at most one sandbox, created on first use and closed by `close()` (idempotent;
  also a context manager). Proxy worlds are prepared (built or loaded from `cache_dir`) in this process
  before any screen, once per seed per context. Thread-safe: tools may run from worker threads.
* `default_context()` is the lazily created process-wide context used when a tool is called without
  one; `close_default_context()` closes it (registered with `atexit`).
* Training and judging: `settings.training` (the launcher, the base job configuration, the jobs folder,
  the time limit) and `settings.judge` (an OpenAI-compatible judge endpoint, or None). The context's
  launcher is created on first use (`LocalLauncher` by default) with its jobs under `jobs_dir()`
  (default `work_dir()/jobs`), or passed in; `work_dir()` defaults to `cache_dir/tools`. Job state is on
  disk there, so a new context on the same folder finds the jobs of an earlier one.

What it does not guarantee
--------------------------
* Any isolation of its own: candidate code is only ever run through the sandbox.
"""
from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from lossforge.errors import LossforgeError
from lossforge.settings.base import Strict

from lossforge.settings.sandbox import SandboxConfig
from lossforge.settings.judge import JudgeEndpoint
from lossforge.settings.launcher import LauncherSettings
from lossforge.settings.proxy import ProxyConfig

__all__ = [
    "ToolError",
    "ToolInputError",
    "ToolUnavailable",
    "ToolSettings",
    "TrainingSettings",
    "ToolContext",
    "default_context",
    "close_default_context",
]


class ToolError(LossforgeError):
    """A tool could not do what was asked; the message says why and what to change."""


class ToolInputError(ToolError, ValueError):
    """The arguments are invalid or over a limit (e.g. code longer than `max_code_chars`)."""


class ToolUnavailable(ToolError):
    """The tool exists in the schema but the capability behind it has not landed in this version."""

    def __init__(self, tool: str, capability: str) -> None:
        self.tool = tool
        self.capability = capability
        super().__init__(
            f"{tool} is not available in this lossforge version: it needs {capability}, which is not "
            "implemented yet. Use check_loss and screen_loss (the CPU proxy) instead."
        )


class TrainingSettings(Strict):
    """How `submit_training` trains: where (launcher), what (the base job configuration), how long."""

    launcher: LauncherSettings = LauncherSettings()
    job: dict[str, Any] | None = Field(
        None, description="JobConfig fields every submission starts from (model, dataset, beta, ...)."
    )
    job_file: Path | None = Field(None, description="A TOML or JSON file of JobConfig fields (under `job`).")
    jobs_dir: Path | None = Field(None, description="Where job directories go (default: work_dir/jobs).")
    time_limit_s: float = Field(6 * 3600.0, gt=0, description="A job is killed after this many seconds.")


class ToolSettings(Strict):
    """What the tools run with. Every limit is checked before any work starts."""

    proxy: ProxyConfig = ProxyConfig()
    cache_dir: Path = Field(Path("~/.cache/lossforge"), description="Where proxy worlds are cached (shared with runs).")
    check_timeout: float = Field(10.0, gt=0, description="Seconds for the unit checks of one loss.")
    screen_timeout: float = Field(180.0, gt=0, description="Seconds for one proxy screen (one seed, one beta).")
    plot_timeout: float = Field(30.0, gt=0, description="Seconds to sample one loss curve.")
    memory_mb: int | None = Field(4096, ge=256, description="Address-space limit of a sandboxed child.")
    max_code_chars: int = Field(20_000, ge=100, description="Longest accepted loss source.")
    max_seeds: int = Field(8, ge=1)
    max_betas: int = Field(8, ge=1)
    max_losses: int = Field(8, ge=1, description="Most losses compare_losses takes (DPO, the reference, not counted).")
    max_top_k: int = Field(100, ge=1)
    output_dir: Path | None = Field(None, description="Where plot_loss writes PNGs (default: a temporary directory).")
    run_roots: list[Path] | None = Field(
        None, description="If set, archive tools only read run directories under one of these folders."
    )
    work_dir: Path | None = Field(None, description="Training jobs, answers and judgements (default: cache_dir/tools).")
    training: TrainingSettings = TrainingSettings()
    judge: JudgeEndpoint | None = Field(None, description="The LLM judge; None: judge falls back to the job's metrics.")
    sandbox: SandboxConfig | None = Field(
        None, description="The run config's [sandbox] (backend, isolation, docker); the timeouts and memory "
                          "limit above take precedence. None: the default isolated backend.")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser().resolve()

    @classmethod
    def from_run_config(cls, config: Any, **overrides: Any) -> "ToolSettings":
        """Settings from a `lossforge.config.RunConfig` (the `lossforge run` TOML)."""
        data: dict[str, Any] = {
            "proxy": config.proxy,
            "cache_dir": config.resolved_cache_dir(),
            "check_timeout": config.sandbox.check_timeout,
            "screen_timeout": config.sandbox.screen_timeout,
            "memory_mb": config.sandbox.memory_mb,
            "sandbox": config.sandbox,
        }
        train = getattr(config, "train", None)
        if train is not None:
            data["training"] = {"launcher": train.launcher, "job_file": train.job, "jobs_dir": train.jobs_dir,
                                "time_limit_s": train.time_limit_s}
            data["judge"] = train.judge
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)

    @classmethod
    def from_toml(cls, path: Path | str | None = None, **overrides: Any) -> "ToolSettings":
        """Settings from a `lossforge run` TOML file (its `[proxy.*]`, `[sandbox]` and `cache_dir`)."""
        from lossforge.config import load_config

        return cls.from_run_config(load_config(Path(path) if path else None), **overrides)


class ToolContext:
    """Settings plus the lazily created sandbox and the set of prepared proxy worlds.

    `sandbox`: pass any `lossforge.sandbox.protocol.Sandbox` (e.g. `InProcessSandbox` in unit tests);
    by default a `ProcessSandbox` is created on first use, and closed by `close()`. A sandbox passed in
    is closed too only when `own_sandbox=True`.
    """

    def __init__(self, settings: ToolSettings | None = None, *, sandbox: Any = None, own_sandbox: bool = False,
                 launcher: Any = None) -> None:
        self.settings = settings or ToolSettings()
        self._sandbox = sandbox
        self._own_sandbox = sandbox is None or own_sandbox
        self._launcher = launcher
        self.job_handles: dict[str, Any] = {}  # job key -> the launcher's handle, for jobs submitted here
        self._lock = threading.Lock()
        self._prepared: set[tuple[str, int]] = set()
        self._prepare_lock = threading.Lock()
        self._closed = False
        self._tmp: Any = None

    @property
    def sandbox(self) -> Any:
        """The sandbox of this context (created on first use)."""
        with self._lock:
            if self._closed:
                raise ToolError("this tool context is closed")
            if self._sandbox is None:
                from lossforge.sandbox.factory import sandbox_from_config

                configured = (self.settings.sandbox or SandboxConfig()).model_copy(
                    update={"check_timeout": self.settings.check_timeout, "memory_mb": self.settings.memory_mb})
                self._sandbox = sandbox_from_config(configured)
            return self._sandbox

    def prepare(self, seed: int) -> None:
        """Build or load the proxy world of `seed` (cached on disk; seconds for small worlds, once)."""
        world = self.settings.proxy.world
        key = (world.cache_key(seed), seed)
        with self._prepare_lock:
            if key in self._prepared:
                return
            from lossforge.trainer.proxy.api import prepare

            cache = self.settings.resolved_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            prepare(self.settings.proxy, seed, cache)
            self._prepared.add(key)

    def work_dir(self) -> Path:
        """Where training jobs, generated answers and judgements go (created on first use)."""
        path = Path(self.settings.work_dir or self.settings.resolved_cache_dir() / "tools").expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def jobs_dir(self) -> Path:
        """The launcher's root: one directory per job key."""
        configured = self.settings.training.jobs_dir
        return Path(configured).expanduser().resolve() if configured is not None else self.work_dir() / "jobs"

    @property
    def launcher(self) -> Any:
        """The training launcher of this context (created on first use from `settings.training.launcher`)."""
        with self._lock:
            if self._closed:
                raise ToolError("this tool context is closed")
            if self._launcher is None:
                from lossforge.trainer.launchers.factory import make_launcher

                try:
                    self._launcher = make_launcher(self.settings.training.launcher, self.jobs_dir())
                except ImportError as error:
                    raise ToolError(str(error)) from error
            return self._launcher

    def output_dir(self) -> Path:
        """Where plots go: `settings.output_dir`, else a temporary directory removed on `close()`."""
        if self.settings.output_dir is not None:
            path = Path(self.settings.output_dir).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            return path
        with self._lock:
            if self._tmp is None:
                import tempfile

                self._tmp = tempfile.TemporaryDirectory(prefix="lossforge-tools-")
            return Path(self._tmp.name)

    def close(self) -> None:
        """Close the sandbox (when this context owns it) and remove temporary plots; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sandbox, self._sandbox = self._sandbox, None
            tmp, self._tmp = self._tmp, None
        if sandbox is not None and self._own_sandbox:
            sandbox.close()
        if tmp is not None:
            tmp.cleanup()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ToolContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: ToolContext | None = None
_default_lock = threading.Lock()


def default_context() -> ToolContext:
    """The process-wide context with default settings, created on first use."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = ToolContext()
        return _default


def close_default_context() -> None:
    global _default
    with _default_lock:
        ctx, _default = _default, None
    if ctx is not None:
        ctx.close()


atexit.register(close_default_context)
