"""One GPU training job: TRL's DPOTrainer with a candidate loss plugged in.

``run_job(config, loss_code)`` is the full-fidelity stage of the cascade: it re-checks the candidate,
DPO-trains ``config.model`` on ``config.dataset`` with the candidate's loss, evaluates on a held-out split
and writes everything to the job directory. ``lossforge.trainer.job_main`` runs it in a subprocess for
the launchers. The job's configuration and result (``JobConfig``, ``JobResult``) are in
``lossforge.trainer.job_config``.

What it guarantees
------------------
* The candidate is loaded in this process only through ``candidate.namespace.load_candidate`` (the same
  AST allow-list and RestrictedPython compile as everywhere else), and ``candidate.checks.run_checks`` is
  run again, with the job's beta, before anything is loaded: a failing candidate ends the job with
  ``JobResult(ok=False, error=<the check summary>, check_report=...)`` and no training.
* ``CandidateDPOTrainer`` computes the policy's summed completion log-probs *by TRL's own code* (its
  ``_compute_loss``, fused LM head, ``completion_mask``, batch laid out ``[chosen; rejected]``), and the
  reference's by TRL's own ``compute_ref_log_probs`` or from the precomputed batch columns. Only the
  formula changes: ``loss = candidate_fn(chosen, rejected, ref_chosen, ref_rejected, beta).mean()``. So with
  ``library_code("dpo")`` the logged losses equal TRL's ``loss_type="sigmoid"`` step for step (tested), and
  TRL's metrics (``rewards/chosen|rejected|margins|accuracies``, ``logps/*``, ``logits/*``, entropy, token
  counts) are logged unchanged.
* A loss value that is not finite, or a candidate output that is not shape ``(batch,)``, stops training
  with ``DegenerateLossError`` (the job fails with that message): the search never scores a NaN run.
* The job directory receives ``model/`` (weights + tokenizer, unless ``save_model=false``),
  ``metrics.json`` (TRL's log history, eval metrics, timings, ref-cache use), ``train.log`` and
  ``result.json`` (the ``JobResult``), also for a failed job.
* ``progress.json`` in the job directory says where a running job is: ``phase`` (``checking``,
  ``loading``, ``training``, ``evaluating``, ``saving``, ``done``, ``failed``), ``step`` / ``max_steps``
  and the last logged training metrics; it is rewritten atomically at each phase and each logging step,
  so a status query (``tools.api.job_status``) can read it at any time.
* Fitness until an LLM judge is wired: held-out preference accuracy (share of eval pairs whose implicit
  reward margin ``beta * (chosen log-ratio - rejected log-ratio)`` is > 0) and the mean margin, computed
  exactly over all eval pairs (not as a mean of per-batch means).

How the loss is replaced (and why this way)
-------------------------------------------
TRL 1.x computes the loss inline in ``DPOTrainer._compute_loss`` (an ``if loss_type == ...`` chain), with
no hook between "log-probs ready" and "loss formula". Copying that ~300-line method would fork TRL's
log-prob extraction and metrics; instead the override (1) gets the reference log-probs first, from the
batch when precomputed or else through TRL's ``compute_ref_log_probs`` (which also handles a PEFT
adapter as the reference), and puts them in the batch, (2) calls TRL's ``_compute_loss`` unchanged with
the policy wrapped in a recorder that keeps the forward's output and with ``precompute_ref_logps`` set
so TRL reads the reference from the batch (no second reference forward); TRL logs all its metrics from
exactly the tensors the candidate sees, (3) rebuilds the summed log-probs from the recorded
``outputs.log_probs`` exactly as TRL does (``log_probs[:, -seq_len:].sum(1)``, then ``chunk(2)``) and
returns the candidate's loss (plus the MoE aux loss when TRL would add it). TRL's own sigmoid loss is
computed on the side and discarded (one ``logsigmoid`` over the batch). Options that change how TRL turns
log-probs into scores (``f_divergence_type``, ``ld_alpha``, ``use_weighting``, several loss types) are
refused, because the candidate defines the whole objective from the four log-prob vectors.

What it does not guarantee
--------------------------
* Supported TRL: ``job_config.TRL_SUPPORTED`` (``>=1.16,<1.17``). The override relies on private TRL methods
  (``_compute_loss``, ``_precompute_ref_logps``, the fused LM head's ``log_probs``); other versions are
  refused unless ``LOSSFORGE_ALLOW_ANY_TRL=1`` (then the equality tests are what tells you).
* No isolation of its own: ``run_job`` runs the (policy-restricted) candidate in this process. Launchers
  run it in a subprocess with a time limit.
* Multi-GPU data parallel (``accelerate launch``) is untested here; one process, one device.
* With precomputed reference log-probs TRL itself hashes the policy's parameters once at start-up
  (``hash_module``), which costs a pass over the weights on large models; the cache key here does not
  need it but TRL does it anyway.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from lossforge.trainer.job_config import DegenerateLossError, JobConfig, JobResult, check_trl_version

__all__ = ["CandidateDPOTrainer", "run_job", "load_preference_splits"]

log = logging.getLogger("lossforge.trainer.trl_job")


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class _ForwardRecorder:
    """Stands in for the policy model in TRL's ``_compute_loss``: forwards calls, keeps the first output."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.first: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._model(*args, **kwargs)
        if self.first is None:
            self.first = out
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _trainer_class():
    from trl import DPOTrainer

    class CandidateDPOTrainer(DPOTrainer):
        """DPOTrainer whose loss is ``candidate_fn(...).mean()``; see the module docstring for how.

        Extra keyword arguments: ``candidate_fn`` (the loaded candidate), ``ref_cache`` (a
        ``RefLogpCache`` or None) and ``ref_cache_keys`` (dataset name -> ``RefCacheKey``: "train",
        "eval"), used by the precompute path.
        """

        def __init__(self, *args: Any, candidate_fn: Callable[..., torch.Tensor], ref_cache: Any = None,
                     ref_cache_keys: dict[str, Any] | None = None, **kwargs: Any) -> None:
            check_trl_version()
            targs = kwargs.get("args")
            if targs is not None:
                if list(targs.loss_type) != ["sigmoid"] or targs.loss_weights not in (None, [1.0]):
                    raise ValueError("CandidateDPOTrainer replaces the loss: leave loss_type='sigmoid', no weights")
                if targs.f_divergence_type != "reverse_kl" or targs.ld_alpha is not None or targs.use_weighting:
                    raise ValueError("f_divergence_type, ld_alpha and use_weighting change the objective; the "
                                     "candidate defines the objective, so they are not supported")
            self.candidate_fn = candidate_fn
            self.ref_cache = ref_cache
            self.ref_cache_keys = dict(ref_cache_keys or {})
            self.ref_cache_events: list[dict[str, Any]] = []
            self.eval_margins: list[torch.Tensor] = []
            super().__init__(*args, **kwargs)

        # -- reference log-probs: the on-disk cache in front of TRL's precompute -------------------
        def _precompute_ref_logps(self, dataset, name, batch_size):  # noqa: ANN001
            key = self.ref_cache_keys.get(name)
            if self.ref_cache is None or key is None:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            from lossforge.trainer.ref_cache import RefLogps, row_lengths

            lengths = row_lengths(dataset)
            entry = self.ref_cache.load(key, lengths)
            if entry is not None:
                self.ref_cache_events.append({"split": name, "hit": True, "rows": len(dataset),
                                              "seconds_saved": entry.seconds_to_compute,
                                              "file": str(self.ref_cache.path(key))})
                dataset = dataset.add_column("ref_chosen_logps", entry.chosen.tolist())
                return dataset.add_column("ref_rejected_logps", entry.rejected.tolist())
            start = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            seconds = time.perf_counter() - start
            entry = RefLogps(torch.tensor(out["ref_chosen_logps"]), torch.tensor(out["ref_rejected_logps"]),
                             lengths, seconds)
            path = self.ref_cache.store(key, entry)
            self.ref_cache_events.append({"split": name, "hit": False, "rows": len(dataset),
                                          "seconds_to_compute": seconds, "file": str(path)})
            return out

        # -- the loss ------------------------------------------------------------------------------
        def _compute_loss(self, model, inputs, return_outputs):  # noqa: ANN001
            precomputed = self.precompute_ref_logps
            if precomputed:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_model = self.ref_model if self.ref_model is not None else self.model
                ref_chosen, ref_rejected = self.compute_ref_log_probs(ref_model, inputs)
                inputs = {**inputs, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
            recorder = _ForwardRecorder(model)
            self.precompute_ref_logps = True  # TRL reads the reference from the batch: no second forward
            try:
                result = super()._compute_loss(recorder, inputs, return_outputs)
            finally:
                self.precompute_ref_logps = precomputed
            outputs = recorder.first

            # The summed completion log-probs, exactly as TRL computes them (ld_alpha is refused above).
            seq_len = inputs["completion_mask"].size(1) - 1
            logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
            chosen, rejected = logps.chunk(2, dim=0)  # batch is [chosen; rejected]
            losses = self.candidate_fn(chosen, rejected, ref_chosen, ref_rejected, self.beta)
            step = self.state.global_step
            if not isinstance(losses, torch.Tensor) or losses.shape != chosen.shape:
                got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
                raise DegenerateLossError(f"step {step}: the loss returned {got}, expected shape {tuple(chosen.shape)}")
            loss = losses.mean()
            if not torch.isfinite(loss):
                raise DegenerateLossError(f"step {step}: the candidate loss is {loss.item()} (not finite)")
            if self.aux_loss_enabled:
                loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            if not self.model.training:
                margins = self.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
                self.eval_margins.append(self.accelerator.gather_for_metrics(margins.detach().float()).cpu())
            if return_outputs:
                return loss, result[1]
            return loss

    return CandidateDPOTrainer


def __getattr__(name: str) -> Any:  # CandidateDPOTrainer is built lazily: importing trl takes seconds
    if name == "CandidateDPOTrainer":
        cls = _trainer_class()
        globals()["CandidateDPOTrainer"] = cls
        return cls
    raise AttributeError(name)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def _read_local_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        rows = data if isinstance(data, list) else data.get("data", data.get("rows"))
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty list of rows with prompt/chosen/rejected")
    missing = {"chosen", "rejected"} - set(rows[0])
    if missing:
        raise ValueError(f"{path}: rows lack {sorted(missing)} (need prompt/chosen/rejected)")
    return rows


def load_preference_splits(cfg: JobConfig):
    """(train, eval, rows_descriptor): the two ``datasets.Dataset`` and a string saying how they were cut."""
    from datasets import Dataset, DatasetDict, load_dataset

    p = Path(cfg.dataset).expanduser()
    if p.is_file():
        splits = DatasetDict({"train": Dataset.from_list(_read_local_rows(p))})
    else:
        splits = load_dataset(str(p) if p.is_dir() else cfg.dataset, cfg.dataset_config, revision=cfg.revision
                              if not p.exists() else None)
    if cfg.train_split not in splits:
        raise ValueError(f"dataset {cfg.dataset!r} has no split {cfg.train_split!r} (has {list(splits)})")
    train = splits[cfg.train_split]
    if cfg.eval_split is not None and cfg.eval_split in splits:
        evals = splits[cfg.eval_split]
        how = f"train={cfg.train_split};eval={cfg.eval_split}"
    else:
        cut = train.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed, shuffle=True)
        train, evals = cut["train"], cut["test"]
        how = f"train={cfg.train_split};eval=carved:{cfg.eval_fraction}:seed={cfg.seed}"
    if cfg.max_train_rows is not None:
        train = train.select(range(min(cfg.max_train_rows, len(train))))
    if cfg.max_eval_rows is not None:
        evals = evals.select(range(min(cfg.max_eval_rows, len(evals))))
    how += f";max_train={cfg.max_train_rows};max_eval={cfg.max_eval_rows}"
    return train, evals, how


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


def _dtype_name(cfg: JobConfig) -> str:
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float32"}[cfg.precision]  # fp16: AMP on fp32 weights


def build_dpo_config(cfg: JobConfig, job_dir: Path, **overrides: Any):
    """The ``trl.DPOConfig`` for ``cfg`` (loss_type sigmoid: the candidate replaces it)."""
    from trl import DPOConfig

    use_cpu = not torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=str(job_dir / "trainer"), beta=cfg.beta, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio (transformers 5)
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        truncation_mode=cfg.truncation_mode, bf16=cfg.precision == "bf16" and not use_cpu,
        fp16=cfg.precision == "fp16",
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy="no", eval_strategy="no", report_to=[],
        use_cpu=use_cpu, precompute_ref_log_probs=cfg.precompute_ref, loss_type=["sigmoid"],
        model_init_kwargs={"dtype": _dtype_name(cfg), "revision": cfg.revision},
        disable_tqdm=True,
    )
    if cfg.gradient_checkpointing:  # only when asked: transformers 5 warns on the old name even when False
        kwargs["gradient_checkpointing"] = True
    kwargs.update(overrides)
    return DPOConfig(**kwargs)


def ref_cache_keys(cfg: JobConfig, rows_how: str) -> dict[str, Any]:
    """The ``RefCacheKey`` of the train and eval splits of ``cfg``."""
    from lossforge.trainer.ref_cache import RefCacheKey

    common = dict(model=cfg.model, revision=cfg.revision, dtype=_dtype_name(cfg), dataset=cfg.dataset,
                  dataset_config=cfg.dataset_config, rows=rows_how, tokenizer=cfg.tokenizer or cfg.model,
                  max_length=cfg.max_length, truncation_mode=cfg.truncation_mode)
    return {"train": RefCacheKey.build(split="train", **common), "eval": RefCacheKey.build(split="eval", **common)}


def _peft_config(cfg: JobConfig):
    if cfg.lora is None:
        return None
    try:
        import peft
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("the job asks for LoRA but `peft` is not installed (pip install peft)") from e
    return peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                           target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


def _file_logging(job_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(job_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("lossforge", "transformers", "trl"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    return handler


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_progress(job_dir: Path, phase: str, **fields: Any) -> None:
    """Rewrite ``job_dir/progress.json`` (atomically) with the phase and ``fields``."""
    _write_json(job_dir / "progress.json", {"phase": phase, "updated": time.time(), **fields})


def _progress_callback(job_dir: Path):
    """A ``TrainerCallback`` that writes ``progress.json`` at the start of training and at each log."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def _write(self, state, logs=None) -> None:  # noqa: ANN001
            last = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            write_progress(job_dir, "training", step=state.global_step, max_steps=state.max_steps, last_log=last)

        training = False

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.training = True
            self._write(state)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.training = False

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if self.training:  # evaluate() logs too; its phase is written by run_job
                self._write(state, logs)

    return ProgressCallback()


def run_job(config: JobConfig, loss_code: str, job_dir: str | Path | None = None, *,
            trainer_overrides: dict[str, Any] | None = None) -> JobResult:
    """Check, train, evaluate and save one candidate; see the module docstring. Never raises for a bad
    candidate or a failed training: the error is in ``JobResult.error`` (and ``result.json``)."""
    from lossforge.candidate.checks import run_checks
    from lossforge.candidate.namespace import load_candidate

    start = time.perf_counter()
    out_dir = Path(job_dir or config.output_dir or "lossforge-job").expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _file_logging(out_dir)
    result = JobResult(ok=False, job_dir=str(out_dir))
    trainer = None
    try:
        write_progress(out_dir, "checking")
        report = run_checks(loss_code, beta=config.beta)
        result.check_report = report.model_dump()
        if not report.passed:
            result.error = f"the candidate failed the checks: {report.summary()}"
            return result
        candidate = load_candidate(loss_code)
        result.trl_version = check_trl_version()
        log.info("candidate %s passed the checks; loading data and model", candidate.name)
        write_progress(out_dir, "loading")

        from transformers import AutoTokenizer

        from lossforge.trainer.ref_cache import RefLogpCache

        train, evals, how = load_preference_splits(config)
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model, revision=config.revision)
        cache = RefLogpCache(config.ref_cache_dir) if (config.ref_cache_dir and config.precompute_ref) else None
        args = build_dpo_config(config, out_dir, **(trainer_overrides or {}))
        trainer_cls = _trainer_class()
        trainer = trainer_cls(
            model=config.model, args=args, train_dataset=train, eval_dataset=evals, processing_class=tokenizer,
            peft_config=_peft_config(config), candidate_fn=candidate.fn, ref_cache=cache,
            ref_cache_keys=ref_cache_keys(config, how) if cache is not None else None,
            callbacks=[_progress_callback(out_dir)],
        )
        t_train = time.perf_counter()
        train_out = trainer.train()
        result.train_seconds = time.perf_counter() - t_train
        result.steps = trainer.state.global_step
        result.train_loss = float(train_out.training_loss)

        write_progress(out_dir, "evaluating", step=trainer.state.global_step, max_steps=trainer.state.max_steps)
        trainer.eval_margins.clear()
        eval_metrics = trainer.evaluate()
        margins = torch.cat(trainer.eval_margins) if trainer.eval_margins else torch.zeros(0)
        result.eval_pairs = int(margins.numel())
        result.eval_accuracy = float((margins > 0).float().mean()) if margins.numel() else None
        result.eval_margin = float(margins.mean()) if margins.numel() else None
        result.eval_metrics = {k: float(v) for k, v in eval_metrics.items() if isinstance(v, (int, float))}
        result.ref_cache = {
            "enabled": cache is not None, "events": trainer.ref_cache_events,
            "seconds_saved": sum(e.get("seconds_saved", 0.0) for e in trainer.ref_cache_events),
            "ref_model_loaded": trainer.ref_model is not None,
        }
        if config.save_model:
            write_progress(out_dir, "saving", step=trainer.state.global_step, max_steps=trainer.state.max_steps)
            model_dir = out_dir / "model"
            trainer.save_model(str(model_dir))
            tokenizer.save_pretrained(str(model_dir))
            result.model_dir = str(model_dir)
        if result.eval_margin is not None and not math.isfinite(result.eval_margin):
            result.error = "the eval margin is not finite"
        else:
            result.ok = True
        return result
    except Exception as e:  # noqa: BLE001 - a job reports, it does not crash its launcher
        result.error = f"{type(e).__name__}: {e}"
        log.error("job failed:\n%s", traceback.format_exc())
        return result
    finally:
        result.total_seconds = time.perf_counter() - start
        metrics = {"log_history": trainer.state.log_history if trainer is not None else [],
                   "eval": result.eval_metrics, "train_seconds": result.train_seconds,
                   "total_seconds": result.total_seconds, "ref_cache": result.ref_cache}
        _write_json(out_dir / "metrics.json", metrics)
        _write_json(out_dir / "result.json", result.model_dump())
        steps = {"step": trainer.state.global_step, "max_steps": trainer.state.max_steps} if trainer is not None else {}
        write_progress(out_dir, "done" if result.ok else "failed", **steps)
        for name in ("lossforge", "transformers", "trl"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
