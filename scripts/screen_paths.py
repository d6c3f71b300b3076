"""The reward-KL path of DPO, DiscoPOP and SLiC on one world seed: the default screen with 16 checkpoints.

Usage: .venv/bin/python scripts/screen_paths.py [SEED] [BETA] > paths.txt
Prints, per loss, the final implicit-reward accuracy and margin (nats) over the training pairs, the
final KL and reward gain, and the path as (step, KL, reward gain) triples. One torch thread.
"""
from __future__ import annotations

import sys

from lossforge.config import RunConfig
from lossforge.settings.proxy import apply_overrides
from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task
from lossforge.trainer.proxy.screen import screen


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    beta = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    config = RunConfig()
    task = load_task(config.proxy.world, seed, config.resolved_cache_dir())
    settings = apply_overrides(config.proxy.screen, {"threads": 1, "checkpoints": 16, "beta": beta})
    print(f"seed {seed}, beta {beta}, screen {settings.model_dump()}")
    for loss in ("dpo", "discopop", "slic"):
        result = screen(LIBRARY[loss], task, settings)
        print(f"{loss}: accuracy {result.preference_accuracy:.3f}, margin {result.margin_mean:.3f} ± {result.margin_std:.3f} (spread), "
              f"final KL {result.final_kl:.3f}, final gain {result.final_reward_gain:.3f}")
        print("   ", [(p.step, round(p.kl, 3), round(p.reward_gain, 3)) for p in result.path])


if __name__ == "__main__":
    main()
