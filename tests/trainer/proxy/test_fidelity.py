"""bench fidelity: the published rows read as shipped, the paper's orders, and a real run on the tiny world."""
from __future__ import annotations

from pathlib import Path

import pytest

from lossforge.trainer.proxy.fidelity import load_published, paper_comparisons, run_fidelity

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "published" / "discopop_imdb_calibration.csv"


def test_the_calibration_rows_and_the_papers_orders() -> None:
    rows = load_published(DATA)
    assert {(r.loss, r.beta) for r in rows} >= {("dpo", 0.05), ("lrml", 0.1), ("slic", 0.1), ("padll", 0.05)}
    orders = {(c.kind, c.beta, c.a, c.b): c.paper_order for c in paper_comparisons(rows)}
    assert orders[("kl at equal beta", 0.05, "dpo", "slic")] == 1  # 0.99 against 0.46
    assert orders[("kl at equal beta", 0.1, "dpo", "padll")] == 0  # 0.55 against 0.59: a tie, not scored
    assert orders[("reward at matched kl", 0.05, "dpo", "lrml")] == -1  # LRML above DPO's frontier
    assert orders[("reward at matched kl", 0.1, "dpo", "padll")] == 0  # level
    assert sum(o != 0 for o in orders.values()) == 17


def test_bad_published_files_are_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="--published"):
        load_published(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("# a comment\nloss,beta,reward,kl\nnot_a_loss,0.1,0.9,0.5\n")
    with pytest.raises(ValueError, match="unknown loss 'not_a_loss'"):
        load_published(bad)


@pytest.mark.slow
def test_a_run_scores_every_comparison_and_the_speed_rows(tiny_proxy, cache_dir) -> None:
    result = run_fidelity(tiny_proxy, load_published(DATA), [11], cache_dir, speed_seeds=1)
    assert result["scored"] == 17 and 0 <= result["agreeing"] <= 17
    assert result["agreement"] == pytest.approx(result["agreeing"] / 17)
    assert len(result["rows"]) == 8 and all(r["n"] == 1 for r in result["rows"])
    assert set(result["speed"]["by_loss"]) == {"dpo", "slic", "lrml", "padll"}
    assert all(isinstance(v, bool) or v is None for v in result["checks"].values())
