"""The TRL job: the candidate-loss trainer against TRL's built-in losses, the reference cache, run_job."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("trl")

from lossforge.candidate.namespace import load_candidate  # noqa: E402
from lossforge.trainer.losses import TRL_CONFIG, library_code  # noqa: E402
from lossforge.trainer.tiny_fixture import write_preference_jsonl, write_tiny_model  # noqa: E402
from lossforge.trainer.job_config import JobConfig  # noqa: E402
from lossforge.trainer.trl_job import (  # noqa: E402
    _trainer_class, build_dpo_config, load_preference_splits, run_job,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_model(root / "model"), write_preference_jsonl(root / "prefs.jsonl", 32)


def _config(tiny: tuple[Path, Path], **kw) -> JobConfig:
    base = dict(model=str(tiny[0]), dataset=str(tiny[1]), max_steps=4, batch_size=4, learning_rate=1e-2,
                precision="fp32", warmup_ratio=0.0, lr_scheduler_type="constant", seed=0, eval_fraction=0.25,
                precompute_ref=False, ref_cache_dir=None, save_model=False)
    base.update(kw)
    return JobConfig(**base)


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("name", ["dpo", "discopop"])
def test_candidate_trainer_reproduces_trl_step_for_step(tiny, tmp_path, name):
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    cfg = _config(tiny)
    train, _evals, _ = load_preference_splits(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    loss_type = {"dpo": "sigmoid", "discopop": "discopop"}[name]
    trl_trainer = DPOTrainer(model=cfg.model, train_dataset=train, processing_class=tok,
                             args=build_dpo_config(cfg, tmp_path / "trl", loss_type=[loss_type], **TRL_CONFIG[name]))
    trl_trainer.train()
    ours = _trainer_class()(model=cfg.model, train_dataset=train, processing_class=tok,
                            args=build_dpo_config(cfg, tmp_path / "ours"),
                            candidate_fn=load_candidate(library_code(name)).fn)
    ours.train()
    want, got = _losses(trl_trainer), _losses(ours)
    assert len(want) == 4 and got == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert len(set(round(x, 6) for x in want)) > 1  # the policy moved: the later steps are a real comparison
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert [h[key] for h in ours.state.log_history if key in h] == pytest.approx(
            [h[key] for h in trl_trainer.state.log_history if key in h], rel=1e-5, abs=1e-7)


def test_precomputed_reference_matches_live_reference(tiny, tmp_path):
    """The precompute path (what the cache feeds) trains exactly like the live reference model path."""
    from transformers import AutoTokenizer

    cfg = _config(tiny)
    train, _e, _ = load_preference_splits(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    fn = load_candidate(library_code("dpo")).fn
    live = _trainer_class()(model=cfg.model, train_dataset=train, processing_class=tok,
                            args=build_dpo_config(cfg, tmp_path / "a"), candidate_fn=fn)
    live.train()
    pre = _trainer_class()(model=cfg.model, train_dataset=train, processing_class=tok, candidate_fn=fn,
                           args=build_dpo_config(cfg, tmp_path / "b", precompute_ref_log_probs=True))
    assert pre.ref_model is None
    pre.train()
    assert _losses(pre) == pytest.approx(_losses(live), rel=1e-5, abs=1e-6)


def test_ref_cache_created_once_then_reused_without_reference_model(tiny, tmp_path):
    import trl.trainer.dpo_trainer as dpo_mod

    cache_dir = tmp_path / "refcache"
    cfg = _config(tiny, precompute_ref=True, ref_cache_dir=str(cache_dir), save_model=True)
    code = library_code("dpo")
    ref_calls = {"n": 0}
    loads = {"n": 0}
    real_ref = dpo_mod.DPOTrainer.compute_ref_log_probs
    real_create = dpo_mod.create_model_from_path

    def counting_ref(self, *a, **k):
        ref_calls["n"] += 1
        return real_ref(self, *a, **k)

    def counting_create(*a, **k):
        loads["n"] += 1
        return real_create(*a, **k)

    with mock.patch.object(dpo_mod.DPOTrainer, "compute_ref_log_probs", counting_ref), \
            mock.patch.object(dpo_mod, "create_model_from_path", counting_create):
        first = run_job(cfg, code, tmp_path / "job1")
        assert first.ok, first.error
        assert ref_calls["n"] > 0 and loads["n"] == 1  # the policy only: no separate reference model
        files = sorted(cache_dir.glob("*.pt"))
        assert len(files) == 2 and all(not e["hit"] for e in first.ref_cache["events"])
        mtimes = [f.stat().st_mtime_ns for f in files]

        ref_calls["n"] = loads["n"] = 0
        second = run_job(cfg, code, tmp_path / "job2")
        assert second.ok, second.error
        assert ref_calls["n"] == 0  # the reference was neither run ...
        assert loads["n"] == 1 and second.ref_cache["ref_model_loaded"] is False  # ... nor loaded
        assert all(e["hit"] for e in second.ref_cache["events"]) and second.ref_cache["seconds_saved"] > 0
        assert sorted(cache_dir.glob("*.pt")) == files and [f.stat().st_mtime_ns for f in files] == mtimes
    # Same training: the cached reference gives the same numbers as the computed one.
    assert second.train_loss == pytest.approx(first.train_loss, rel=1e-6)
    assert second.eval_accuracy == first.eval_accuracy and second.eval_pairs == 8
    assert second.eval_margin == pytest.approx(first.eval_margin, rel=1e-5, abs=1e-7)
    for name in ("result.json", "metrics.json", "train.log", "model/config.json"):
        assert (tmp_path / "job2" / name).exists()


def test_ref_cache_key_changes_with_the_triple(tiny, tmp_path):
    from lossforge.trainer.ref_cache import RefCacheKey

    base = dict(model=str(tiny[0]), revision=None, dtype="float32", dataset=str(tiny[1]), dataset_config=None,
                split="train", rows="r", tokenizer=str(tiny[0]), max_length=64, truncation_mode="keep_start")
    k = RefCacheKey.build(**base).digest
    assert RefCacheKey.build(**base).digest == k
    assert RefCacheKey.build(**{**base, "max_length": 32}).digest != k
    assert RefCacheKey.build(**{**base, "dtype": "bfloat16"}).digest != k
    other = write_preference_jsonl(tmp_path / "other.jsonl", 32, seed=1)
    assert RefCacheKey.build(**{**base, "dataset": str(other)}).digest != k


def test_run_job_fails_with_the_check_report(tiny, tmp_path):
    bad = "import torch\n\ndef bad(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, " \
          "reference_rejected_logps, beta):\n    return (policy_chosen_logps - policy_rejected_logps).sum()\n"
    result = run_job(_config(tiny), bad, tmp_path / "job")
    assert not result.ok and "failed the checks" in result.error and "shape" in result.error
    assert result.check_report is not None and result.check_report["passed"] is False
    assert (tmp_path / "job" / "result.json").exists()


def test_job_config_rejects_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        JobConfig(model="m", dataset="d", lerning_rate=1e-3)
