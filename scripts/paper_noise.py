"""The paper's own noise on the calibration comparisons: bootstrap the authors' seeds per row.

Usage: .venv/bin/python scripts/paper_noise.py RAW_CSV [RESAMPLES] > noise.json
RAW_CSV is the authors' raw data (SakanaAI/DiscoPOP, scripts/plotting/imdb_results_2.csv: columns loss,
beta, reward, kl_divergence, seed). The rows of the calibration losses and betas (those of
shared/data/published/discopop_imdb_calibration.csv) are resampled over seeds with replacement and read
with the bench's own `paper_comparisons`; for each reward-at-matched-KL comparison it prints the
published difference, its bootstrap standard deviation and the share of resamples with the same sign.
"""
from __future__ import annotations

import csv
import json
import random
import statistics
import sys

from lossforge.trainer.proxy.fidelity import PAPER_TO_LIBRARY, PublishedRow, default_published_path, load_published, paper_comparisons


def _comparisons(sample: dict[tuple[str, float], list[tuple[float, float]]]) -> dict[tuple, float]:
    rows = [PublishedRow(loss=loss, beta=beta, kl=statistics.fmean(kl for kl, _ in runs), reward=statistics.fmean(r for _, r in runs))
            for (loss, beta), runs in sample.items()]
    return {(c.kind, c.a, c.b): c.paper_difference for c in paper_comparisons(rows) if c.kind == "reward at matched kl"}


def main() -> None:
    raw, resamples = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    calibration = {(r.loss, r.beta) for r in load_published(default_published_path())}
    by_row: dict[tuple[str, float], list[tuple[float, float]]] = {}
    with open(raw) as handle:
        for record in csv.DictReader(handle):
            loss = record["loss"].strip().lower()
            loss = "slic" if PAPER_TO_LIBRARY.get(loss) == "slic" else loss
            key = (loss, float(record["beta"]))
            if key in calibration:
                by_row.setdefault(key, []).append((float(record["kl_divergence"]), float(record["reward"])))
    full = _comparisons(by_row)
    rng = random.Random(0)
    draws = [_comparisons({k: [rng.choice(v) for _ in v] for k, v in by_row.items()}) for _ in range(resamples)]
    out = []
    for key, value in full.items():
        values = [d[key] for d in draws if key in d]  # a resample whose endpoints do not overlap has none
        out.append({"kind": key[0], "a": key[1], "b": key[2], "paper_difference": value,
                    "bootstrap_sd": statistics.stdev(values), "same_sign": sum((v > 0) == (value > 0) for v in values) / len(values),
                    "resamples": len(values)})
    json.dump({"seeds_per_row": {f"{k[0]}@{k[1]}": len(v) for k, v in sorted(by_row.items())}, "comparisons": out}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
