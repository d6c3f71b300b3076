"""Score the proxy on the DiscoPOP paper's other IMDb rows (the test set), read once after calibration.

Usage: .venv/bin/python scripts/fidelity_testset.py RAW_CSV [CONFIG_TOML] [BETAS] > result.json
RAW_CSV is the authors' raw data (SakanaAI/DiscoPOP, scripts/plotting/imdb_results_2.csv: columns loss,
beta, reward, kl_divergence, seed); rows are averaged over seeds, and every comparison the calibration
rows (shared/data/published/discopop_imdb_calibration.csv) already saw is left out of the score.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from lossforge.config import load_config
from lossforge.trainer.proxy.fidelity import PAPER_TO_LIBRARY, PublishedRow, default_published_path, load_published, run_fidelity


def main() -> None:
    raw = Path(sys.argv[1])
    config = load_config(Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    betas = [float(b) for b in sys.argv[3].split(",")] if len(sys.argv) > 3 else None
    groups: dict[tuple[str, float], list[tuple[float, float]]] = {}
    with raw.open() as handle:
        for row in csv.DictReader(handle):
            loss = row["loss"].strip().lower()
            if loss not in PAPER_TO_LIBRARY or not all(row[k].strip() for k in ("beta", "reward", "kl_divergence")):
                continue  # a loss the library lacks, or a run without a measurement
            groups.setdefault((loss, float(row["beta"])), []).append((float(row["reward"]), float(row["kl_divergence"])))
    rows = [
        PublishedRow(loss=loss, beta=beta, reward=statistics.fmean(r for r, _ in v), kl=statistics.fmean(k for _, k in v))
        for (loss, beta), v in sorted(groups.items())
        if betas is None or beta in betas
    ]
    calibration = {(r.loss, r.beta) for r in load_published(default_published_path())}
    result = run_fidelity(
        config.proxy, rows, [0, 1], config.resolved_cache_dir(), speed_seeds=0,
        scored=lambda c: not ((c.a, c.beta) in calibration and (c.b, c.beta) in calibration),
        progress=lambda message: print(message, file=sys.stderr),
    )
    json.dump(result, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
