"""Where one discovery-bench screen spends its CPU: cProfile of a DPO screen on the bench's world (seed 0).

Usage: .venv/bin/python scripts/profile_screen.py [CACHE_DIR]
Screens once to warm up, then profiles one screen with the end-of-screen accuracy pass switched on (as
before the bench turned it off) and prints the functions by cumulative time: training is
``completion_logps`` (forward) and ``backward``, evaluation ``_evaluate``, the accuracy pass
``_final_margins``.
"""
from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

from lossforge.bench.discovery.config import BENCH_SCREEN, BENCH_WORLD
from lossforge.settings.proxy import apply_overrides
from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task
from lossforge.trainer.proxy.screen import screen


def main() -> None:
    cache_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/lossforge").expanduser()
    task = load_task(BENCH_WORLD, 0, cache_dir)
    settings = apply_overrides(BENCH_SCREEN, {"final_accuracy": True})
    screen(LIBRARY["dpo"], task, settings)
    profile = cProfile.Profile()
    profile.enable()
    screen(LIBRARY["dpo"], task, settings)
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(r"screen\.py|model\.py|backward|optimizer")


if __name__ == "__main__":
    main()
