"""The proxy held against the DiscoPOP paper's real measurements: do published losses order as they did on GPT-2?

The DiscoPOP paper (Lu et al., NeurIPS 2024, arXiv:2406.08414, Fig. 5/8, App. B.3) trained GPT-2
(gpt2-imdb) with each loss on IMDb preference pairs for 3 epochs at several betas and measured, at the
end of training, the sentiment reward and KL(policy || reference). `run_fidelity` trains the same losses
on the proxy at the same betas, on several world seeds, and compares the two with a statistic defined
before any calibration:

* **KL at equal beta.** For each beta and each pair of losses, the order of their final KL. A pair whose
  published KLs differ by less than ``KL_TIE`` (relative) is a tie and is not scored.
* **Reward at matched KL.** For each pair of losses whose published endpoints (one per beta) overlap in
  KL, the published order of reward at the middle of the overlap (linear interpolation between a loss's
  two endpoints); a difference below ``REWARD_TIE`` is a tie and is not scored. On the proxy, at each
  beta, the loss that ends at the lower KL is read at its endpoint and the other on its measured path
  where it first reaches that KL (no fitted curve: what was measured).

``agreement`` is the share of scored comparisons whose proxy order (the sign of the mean over world
seeds) equals the published one; each comparison also carries its standard error over seeds, so a
proxy order that is inside the noise is visible as such.

What it guarantees
------------------
* The published rows are read from the CSV as shipped (``# `` comment lines give the source) and the
  loss names are mapped to the library's explicitly (``PAPER_TO_LIBRARY``); an unknown name is an error.
* Screens are deterministic for a seed (the proxy is), so the whole bench is.
"""
from __future__ import annotations

import csv
import itertools
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task
from lossforge.settings.proxy import ProxyConfig, apply_overrides
from lossforge.trainer.proxy.fitness import Z_WIN, reward_at_kl
from lossforge.trainer.proxy.heldout import stat
from lossforge.trainer.proxy.screen import ScreenResult, screen

__all__ = [
    "KL_TIE",
    "PAPER_TO_LIBRARY",
    "REWARD_TIE",
    "PublishedRow",
    "default_published_path",
    "load_published",
    "paper_comparisons",
    "run_fidelity",
]

#: The paper's loss names -> the library's.
PAPER_TO_LIBRARY = {
    "dpo": "dpo",
    "slic": "slic",
    "hinge": "slic",
    "lrml": "discopop",
    "discopop": "discopop",
    "padll": "padll",
    "aqfl": "aqfl",
    "cell": "cell",
    "dbaql": "dbaql",
    "kto": "kto_pair",
    "kto_pair": "kto_pair",
    "ipo": "ipo",
    "aql": "aql",
    "pfl": "pfl",
}
KL_TIE = 0.10  # published KLs within 10% of their mean: a tie
REWARD_TIE = 0.002  # published rewards (P(positive)) within 0.002 at matched KL: a tie


class PublishedRow(BaseModel):
    """One published endpoint: a loss trained at one beta, its final reward and KL."""

    loss: str
    beta: float
    reward: float
    kl: float


class Comparison(BaseModel):
    """One ordered comparison of two losses, published and on the proxy (a minus b)."""

    kind: str  # "kl at equal beta" | "reward at matched kl"
    beta: float
    a: str
    b: str
    paper_difference: float
    paper_order: int  # +1: a above b, -1: below, 0: a tie (not scored)
    proxy_difference: float | None = None  # mean over seeds
    proxy_stderr: float | None = None  # standard error over seeds (paired)
    proxy_order: int | None = None
    significant: bool | None = None  # |mean| > Z_WIN standard errors
    agrees: bool | None = None


def default_published_path() -> Path:
    """The calibration CSV next to the repository (``../shared/data/published``), where the data is kept."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "published" / "discopop_imdb_calibration.csv"


def load_published(path: Path) -> list[PublishedRow]:
    """The rows of a published reward-KL CSV (columns loss, beta, reward, kl; ``#`` lines are comments).

    Raises FileNotFoundError (with where the file is expected) and ValueError (a row or loss name that
    cannot be read).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass --published with the DiscoPOP CSV (shared/data/published/discopop_imdb_calibration.csv)")
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = []
    for number, record in enumerate(csv.DictReader(lines), start=2):
        try:
            row = PublishedRow(loss=record["loss"].strip().lower(), beta=float(record["beta"]), reward=float(record["reward"]), kl=float(record["kl"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: data row {number - 1} {record}: expected loss,beta,reward,kl ({error})") from None
        if row.loss not in PAPER_TO_LIBRARY:
            raise ValueError(f"{path}: unknown loss {row.loss!r}; known: {', '.join(sorted(PAPER_TO_LIBRARY))}")
        rows.append(row)
    return rows


def _sign(value: float, tie: float) -> int:
    return 0 if abs(value) < tie else (1 if value > 0 else -1)


def _interpolate(points: list[tuple[float, float]], kl: float) -> float:
    """The published frontier of one loss (its endpoints across betas, sorted by KL) read at `kl`, linear
    between the two endpoints around it (`kl` lies within their range)."""
    ordered = sorted(points)
    for (k0, r0), (k1, r1) in zip(ordered, ordered[1:]):
        if k0 <= kl <= k1:
            return r0 if k1 == k0 else r0 + (kl - k0) * (r1 - r0) / (k1 - k0)
    raise ValueError(f"KL {kl} outside the endpoints {ordered}")


def paper_comparisons(rows: list[PublishedRow]) -> list[Comparison]:
    """The published orders: KL at equal beta for every pair, reward at matched KL where endpoints overlap."""
    by_loss: dict[str, dict[float, PublishedRow]] = {}
    for row in rows:
        by_loss.setdefault(row.loss, {})[row.beta] = row
    betas = sorted({row.beta for row in rows})
    out: list[Comparison] = []
    for beta in betas:
        present = [loss for loss in by_loss if beta in by_loss[loss]]
        for a, b in itertools.combinations(present, 2):
            ka, kb = by_loss[a][beta].kl, by_loss[b][beta].kl
            difference = ka - kb
            order = _sign(difference / ((ka + kb) / 2), KL_TIE)
            out.append(Comparison(kind="kl at equal beta", beta=beta, a=a, b=b, paper_difference=difference, paper_order=order))
    for a, b in itertools.combinations(by_loss, 2):
        pa = [(r.kl, r.reward) for r in by_loss[a].values()]
        pb = [(r.kl, r.reward) for r in by_loss[b].values()]
        if len(pa) < 2 or len(pb) < 2:
            continue
        low, high = max(min(p[0] for p in pa), min(p[0] for p in pb)), min(max(p[0] for p in pa), max(p[0] for p in pb))
        if low >= high:
            continue  # the endpoints do not overlap in KL: no matched-KL reading without extrapolation
        middle = (low + high) / 2
        difference = _interpolate(pa, middle) - _interpolate(pb, middle)
        for beta in betas:  # the proxy reads the comparison at each beta
            if beta in by_loss[a] and beta in by_loss[b]:
                out.append(
                    Comparison(
                        kind="reward at matched kl", beta=beta, a=a, b=b, paper_difference=difference, paper_order=_sign(difference, REWARD_TIE)
                    )
                )
    return out


def _matched_gain(result_a: ScreenResult, result_b: ScreenResult) -> float:
    """a's reward gain minus b's at the smaller of their final KLs: the loss that ends lower is read at its
    endpoint, the other on its path where it first reaches that KL (as the paper compares endpoints)."""
    path_a = [(p.kl, p.reward_gain) for p in result_a.path]
    path_b = [(p.kl, p.reward_gain) for p in result_b.path]
    if result_a.final_kl <= result_b.final_kl:
        other = reward_at_kl(path_b, result_a.final_kl)
        return result_a.final_reward_gain - (result_b.final_reward_gain if other is None else other)
    other = reward_at_kl(path_a, result_b.final_kl)
    return (result_a.final_reward_gain if other is None else other) - result_b.final_reward_gain


def _stat(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, standard error) of `values` as the held-out evaluation computes them (`heldout.stat`)."""
    summary = stat(values)
    return summary.mean, summary.stderr


def run_fidelity(
    config: ProxyConfig,
    rows: list[PublishedRow],
    seeds: list[int],
    cache_dir: Path,
    beta_scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
    speed_factor: float = 0.7,
    speed_seeds: int = 2,
    scored: Callable[[Comparison], bool] | None = None,
) -> dict[str, Any]:
    """Screen each published loss at each published beta on every seed, and score the agreement.

    The proxy's beta is the published beta times `beta_scale` (1: the same beta). Returns a JSON-ready
    dict: ``rows`` (published endpoint next to the proxy's final KL and reward gain, mean and standard
    error over seeds), ``comparisons``, ``agreement`` (share of scored comparisons in the published
    order), ``checks`` (the headline findings), ``speed`` (each loss's fitness with the learning rate
    times `speed_factor` on the first `speed_seeds` seeds, against the same at the full rate: the same
    frontier walked slower must read the same) and ``seconds``. `scored` picks the comparisons that count
    in ``agreement`` (default: all; e.g. only those a calibration did not see). Raises KeyError for a
    published loss the library lacks.
    """
    started = time.perf_counter()
    losses = sorted({row.loss for row in rows})
    missing = [loss for loss in losses if PAPER_TO_LIBRARY[loss] not in LIBRARY]
    if missing:
        raise KeyError(f"the loss library lacks {missing}")
    betas = sorted({row.beta for row in rows})
    results: dict[tuple[str, float], list[ScreenResult]] = {}
    for seed in seeds:
        task = load_task(config.world, seed, cache_dir)
        for beta in betas:
            settings = apply_overrides(config.screen, {"beta": beta * beta_scale})
            for loss in losses:
                if not any(r.loss == loss and r.beta == beta for r in rows):
                    continue
                result = screen(LIBRARY[PAPER_TO_LIBRARY[loss]], task, settings)
                results.setdefault((loss, beta), []).append(result)
                if progress:
                    progress(f"seed {seed} beta {beta} {loss}: final KL {result.final_kl}, gain {result.final_reward_gain}")
    speed: list[dict[str, Any]] = []
    for seed in seeds[:speed_seeds]:
        task = load_task(config.world, seed, cache_dir)
        for beta in betas:
            settings = apply_overrides(config.screen, {"beta": beta * beta_scale, "lr": config.screen.lr * speed_factor})
            for loss in losses:
                runs = results.get((loss, beta))
                if not runs:
                    continue
                slow = screen(LIBRARY[PAPER_TO_LIBRARY[loss]], task, settings)
                fast = runs[seeds.index(seed)]
                speed.append({"loss": loss, "beta": beta, "seed": seed, "fitness": fast.fitness, "fitness_slower": slow.fitness,
                              "final_kl": fast.final_kl, "final_kl_slower": slow.final_kl})
                if progress:
                    progress(f"seed {seed} beta {beta} {loss} at lr x{speed_factor}: fitness {slow.fitness} (x1: {fast.fitness})")
    speed_summary = {}
    for loss in losses:
        differences = [r["fitness_slower"] - r["fitness"] for r in speed if r["loss"] == loss and None not in (r["fitness"], r["fitness_slower"])]
        if differences:
            speed_summary[loss] = {"mean_difference": statistics.fmean(differences), "max_abs_difference": max(map(abs, differences)), "n": len(differences)}
    out_rows = []
    for row in rows:
        runs = results[(row.loss, row.beta)]
        finished = [r for r in runs if r.fitness is not None]
        kl = _stat([r.final_kl for r in finished])
        gain = _stat([r.final_reward_gain for r in finished])
        fitness = _stat([r.fitness for r in finished])
        out_rows.append(
            {
                **row.model_dump(),
                "library_loss": PAPER_TO_LIBRARY[row.loss],
                "proxy_beta": row.beta * beta_scale,
                "proxy_final_kl": kl[0],
                "proxy_final_kl_stderr": kl[1],
                "proxy_final_reward_gain": gain[0],
                "proxy_final_reward_gain_stderr": gain[1],
                "proxy_fitness": fitness[0],
                "proxy_fitness_stderr": fitness[1],
                "degenerate": [r.degenerate for r in runs if r.degenerate],
                "n": len(runs),
            }
        )
    comparisons = paper_comparisons(rows)
    for comparison in comparisons:
        runs_a, runs_b = results[(comparison.a, comparison.beta)], results[(comparison.b, comparison.beta)]
        pairs = [(ra, rb) for ra, rb in zip(runs_a, runs_b) if ra.fitness is not None and rb.fitness is not None]
        if not pairs:
            continue
        if comparison.kind == "kl at equal beta":
            differences = [ra.final_kl - rb.final_kl for ra, rb in pairs]
        else:
            differences = [_matched_gain(ra, rb) for ra, rb in pairs]
        mean, stderr = _stat(differences)
        comparison.proxy_difference, comparison.proxy_stderr = mean, stderr
        comparison.proxy_order = 1 if mean > 0 else -1 if mean < 0 else 0
        comparison.significant = stderr is not None and abs(mean) > Z_WIN * stderr
        counted = scored is None or scored(comparison)
        comparison.agrees = None if comparison.paper_order == 0 or not counted else comparison.proxy_order == comparison.paper_order
    scored = [c for c in comparisons if c.agrees is not None]
    agreement = sum(c.agrees for c in scored) / len(scored) if scored else None

    def _find(kind: str, a: str, b: str, beta: float) -> Comparison | None:
        for c in comparisons:
            if c.kind == kind and c.beta == beta and {c.a, c.b} == {a, b}:
                return c
        return None

    def _holds(kind: str, a: str, b: str, beta: float, want: int, allow_tie: bool) -> bool | None:
        """Whether a's proxy difference against b has the sign `want` (a tie within noise counts when allowed)."""
        c = _find(kind, a, b, beta)
        if c is None or c.proxy_difference is None:
            return None
        difference = c.proxy_difference if c.a == a else -c.proxy_difference
        if allow_tie and c.proxy_stderr is not None and abs(difference) <= Z_WIN * c.proxy_stderr:
            return True
        return difference * want > 0

    checks: dict[str, Any] = {}
    for beta in betas:
        checks[f"discopop on or above dpo's frontier at beta {beta}"] = _holds("reward at matched kl", "lrml", "dpo", beta, +1, allow_tie=True)
        checks[f"slic ends at lower kl than dpo at beta {beta}"] = _holds("kl at equal beta", "slic", "dpo", beta, -1, allow_tie=False)
        checks[f"discopop ends at lower kl than dpo at beta {beta}"] = _holds("kl at equal beta", "lrml", "dpo", beta, -1, allow_tie=False)
    return {
        "statistic": (
            "share of scored comparisons (published ties excluded) whose proxy order, the sign of the mean over "
            f"world seeds, equals the published one; KL ties: within {KL_TIE:.0%}; reward ties: within {REWARD_TIE}"
        ),
        "agreement": agreement,
        "scored": len(scored),
        "agreeing": sum(c.agrees for c in scored),
        "checks": checks,
        "seeds": seeds,
        "beta_scale": beta_scale,
        "screen": config.screen.model_dump(),
        "world": config.world.model_dump(),
        "rows": out_rows,
        "comparisons": [c.model_dump() for c in comparisons],
        "speed": {"lr_factor": speed_factor, "by_loss": speed_summary, "rows": speed},
        "seconds": round(time.perf_counter() - started, 1),
    }
