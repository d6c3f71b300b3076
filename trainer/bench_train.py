"""``lossforge bench train`` and ``lossforge train``: bodies for the CLI (cli/ wires them).

``bench_train()`` times, on the tiny model of ``trainer.tiny_fixture`` (CPU or the GPU there is), the
candidate-loss trainer (``CandidateDPOTrainer`` with ``library_code("dpo")``) against TRL's built-in
``loss_type="sigmoid"`` on the same model, data and seed (median of ``repeats`` timed runs after one
warm-up), and the reference-log-prob cache: the precompute time of a cold job against the load of a
warm one. Steps/s and tokens/s count optimizer steps and the non-padding tokens TRL counts
(``num_tokens``). It says nothing about big-model throughput: the tiny model measures overhead.
"""
from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def bench_train(steps: int = 20, batch_size: int = 8, rows: int = 256, repeats: int = 3) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    from lossforge.candidate.namespace import load_candidate
    from lossforge.trainer.losses import library_code
    from lossforge.trainer.ref_cache import RefLogpCache
    from lossforge.trainer.tiny_fixture import write_preference_jsonl, write_tiny_model
    from lossforge.trainer.job_config import JobConfig
    from lossforge.trainer.trl_job import _trainer_class, build_dpo_config, load_preference_splits, ref_cache_keys

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_tiny_model(root / "model")
        data = write_preference_jsonl(root / "prefs.jsonl", rows)
        cfg = JobConfig(model=str(model), dataset=str(data), max_steps=steps, batch_size=batch_size,
                        learning_rate=1e-3, precision="fp32", seed=0, precompute_ref=False, ref_cache_dir=None,
                        save_model=False)
        train, evals, how = load_preference_splits(cfg)
        tok = AutoTokenizer.from_pretrained(str(model))
        fn = load_candidate(library_code("dpo")).fn

        def one(kind: str) -> dict[str, float]:
            args = build_dpo_config(cfg, root / kind)
            if kind == "trl_sigmoid":
                tr = DPOTrainer(model=str(model), args=args, train_dataset=train, processing_class=tok)
            else:
                tr = _trainer_class()(model=str(model), args=args, train_dataset=train, processing_class=tok,
                                      candidate_fn=fn)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs; stdout is the JSON
                tr.train()
            secs = time.perf_counter() - t0
            tokens = max(h.get("num_tokens", 0) for h in tr.state.log_history)
            return {"seconds": secs, "steps_per_s": steps / secs, "tokens_per_s": tokens / secs}

        out: dict[str, Any] = {"device": "cuda" if torch.cuda.is_available() else "cpu", "steps": steps,
                               "batch_pairs": batch_size, "rows": rows, "repeats": repeats,
                               "torch_threads": torch.get_num_threads()}
        for kind in ("trl_sigmoid", "candidate"):
            one(kind)  # warm-up
            runs = [one(kind) for _ in range(repeats)]
            out[kind] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out["candidate_overhead"] = out["candidate"]["seconds"] / out["trl_sigmoid"]["seconds"] - 1.0

        # The reference cache: a cold job computes (TRL's precompute), a warm one loads.
        pre_cfg = cfg.model_copy(update={"precompute_ref": True, "ref_cache_dir": str(root / "refcache")})
        cache_keys = ref_cache_keys(pre_cfg, how)
        timings = {}
        for phase in ("cold", "warm"):
            cache = RefLogpCache(root / "refcache")
            t0 = time.perf_counter()
            tr = _trainer_class()(model=str(model), args=build_dpo_config(pre_cfg, root / phase), train_dataset=train,
                                  eval_dataset=evals, processing_class=tok, candidate_fn=fn, ref_cache=cache,
                                  ref_cache_keys=cache_keys)
            timings[phase] = {"trainer_init_seconds": time.perf_counter() - t0,
                              "ref_seconds": sum(e.get("seconds_to_compute", 0.0) for e in tr.ref_cache_events),
                              "hits": sum(e["hit"] for e in tr.ref_cache_events)}
        out["ref_cache"] = {**timings, "seconds_saved_per_job": timings["cold"]["trainer_init_seconds"]
                            - timings["warm"]["trainer_init_seconds"],
                            "precompute_seconds_cold": timings["cold"]["ref_seconds"]}
        return out


def train_command(loss: Path, config: Path) -> int:
    """Body of ``lossforge train --loss FILE --config job.toml``: 0 ok, 1 job failed, 2 usage error."""
    import json
    import sys
    import tomllib

    from pydantic import ValidationError

    from lossforge.trainer.job_config import JobConfig
    from lossforge.trainer.trl_job import run_job

    try:
        code = Path(loss).read_text()
        raw = tomllib.loads(Path(config).read_text())
        cfg = JobConfig.model_validate(raw.get("job", raw))  # a [job] table, or the keys at top level
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    job_dir = Path(cfg.output_dir or f"runs/train-{Path(loss).stem}")
    result = run_job(cfg, code, job_dir)
    print(json.dumps(result.model_dump(exclude={"check_report"}), indent=2, default=str))
    if not result.ok:
        print(f"training failed: {result.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # python -m lossforge.trainer.bench_train
    import json

    print(json.dumps(bench_train(), indent=2))
