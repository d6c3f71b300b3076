"""`lossforge bench discovery`: proposers side by side on the proxy, at a fixed evaluation budget.

For each proposer (evolutionary, random search over the same expression language, and the LLM proposer
when asked for and an endpoint is configured) and each search seed, a real search runs: `run_search`,
the LangGraph graph with its SQLite checkpointer, the archive, the events and the isolated sandbox,
until it has `evaluations` evaluated candidates. Then:

* the library's best loss on the same seeds and settings (the bar to beat), screened like a candidate;
* best-so-far fitness against evaluations, mean and spread over seeds;
* the rejection funnel (proposed -> rejected by the checks -> duplicates -> screened -> degenerate);
* wall time per evaluated candidate, and the agent's own time per candidate (graph, checkpointing,
  archive, events: the loop's wall time minus the proposer, the checks and the screens) against the
  screen's; for the LLM, tokens and cost per evaluated candidate;
* held-out evaluation (``lossforge.trainer.proxy.heldout``): each search seed's best loss, the library
  best, DPO and DiscoPOP on world seeds and conditions no search saw, with mean, standard error and n.

What it guarantees
------------------
* The settings are fixed before any search (``BENCH_WORLD``, ``BENCH_SCREEN``, ``BENCH_FITNESS``,
  ``HeldOutConfig`` defaults) and written into the result; held-out seeds must differ from the search
  seeds, and no held-out condition may be one of the search's fitness settings (validated).
* Determinism: every fitness, curve, funnel count and held-out value is a function of the settings and
  the seeds (screens are deterministic and proposers are pure functions of (seed, step, archive));
  running searches in parallel changes only timings. Everything that depends on timing sits under keys
  named ``timing``.
* Candidate code runs only in the sandbox (searches, library bar and held-out screens alike).

What it does not guarantee
--------------------------
* Timings on a shared machine: other processes slow the screens; the load average at start and end is
  recorded next to the timings.

The package
-----------
``config`` (the settings and their loading), ``search`` (one search, the worlds, the library bar),
``stats`` (statistics over seeds, the deterministic view), ``run`` (the whole bench and its JSON). This
``__init__`` is the face: the names below are the bench's API.
"""
from __future__ import annotations

from lossforge.bench.discovery.config import (
    BENCH_FITNESS,
    BENCH_SCREEN,
    BENCH_WORLD,
    DiscoveryBenchConfig,
    load_bench_config,
)
from lossforge.bench.discovery.run import run_discovery_bench
from lossforge.bench.discovery.search import funnel_fractions
from lossforge.bench.discovery.stats import deterministic_view, with_library_baseline

__all__ = [
    "BENCH_FITNESS",
    "BENCH_SCREEN",
    "BENCH_WORLD",
    "DiscoveryBenchConfig",
    "load_bench_config",
    "run_discovery_bench",
    "deterministic_view",
    "funnel_fractions",
    "with_library_baseline",
]
