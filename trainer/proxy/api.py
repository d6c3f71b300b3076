"""The proxy's entry points for callers outside this package: screen a loss by settings, or in a sandbox.

`screen_with_settings` is a module-level, picklable function of plain arguments, so a sandbox backend
can run it in an isolated child with the candidate's compiled function as the first argument: the
candidate never runs in the search's own process. The child loads the cached world from disk (built
beforehand by `prepare`), so no child ever pays for the SFT stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lossforge.trainer.proxy.build import ProxyTask, load_task
from lossforge.settings.proxy import ProxyConfig, ScreenConfig, WorldConfig
from lossforge.trainer.proxy.screen import LossFn, ScreenResult, screen


def prepare(config: ProxyConfig, seed: int, cache_dir: Path) -> ProxyTask:
    """Build (or load) the world of `seed` so that screens can start at once."""
    return load_task(config.world, seed, cache_dir)


def screen_with_settings(
    loss_fn: LossFn, world: dict[str, Any], screen_settings: dict[str, Any], seed: int, cache_dir: str
) -> dict[str, Any]:
    """Screen `loss_fn` on the world of `seed`; plain dicts in and out (picklable across processes)."""
    task = load_task(WorldConfig(**world), seed, Path(cache_dir))
    return screen(loss_fn, task, ScreenConfig(**screen_settings)).model_dump()


def screen_result(data: dict[str, Any]) -> ScreenResult:
    return ScreenResult.model_validate(data)
