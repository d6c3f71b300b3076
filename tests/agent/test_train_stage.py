"""The search's train stage on CPU: promoted candidates are really trained by the local launcher (the tiny
model), the result is recorded in the archive, a failed job's stderr tail reaches the reflection, and a
re-run after a crash never launches a job twice."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")

from lossforge.rundir.archive import Archive  # noqa: E402
from lossforge.proposers.base import Proposal, ProposalContext  # noqa: E402
from lossforge.agent.runner import run_search  # noqa: E402
from lossforge.agent.train_stage import TrainStage, training_note  # noqa: E402
from lossforge.config import RunConfig  # noqa: E402
from lossforge.sandbox.protocol import InProcessSandbox  # noqa: E402
from lossforge.trainer.losses import library_code  # noqa: E402
from lossforge.trainer.tiny_fixture import write_preference_jsonl, write_tiny_model  # noqa: E402

# DPO plus a small IPO-like term (so it is not a duplicate of DPO), NaN on a batch of 5: it passes the
# checks and the proxy screen (batches of 32) but the training job (batches of 5) fails on it.
NAN_AT_BATCH_5 = '''import torch
import torch.nn.functional as F


def late_nan(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    if policy_chosen_logps.shape[0] == 5:
        return rho * float("nan")
    return F.softplus(-rho) + 0.05 * (rho - 1.0) ** 2
'''


class Scripted:
    def __init__(self, proposals: list[Proposal]) -> None:
        self.proposals = proposals

    def propose(self, context: ProposalContext) -> Proposal:
        return self.proposals[min(context.step, len(self.proposals) - 1)]


def test_a_search_with_the_train_stage_trains_records_and_never_launches_twice(tmp_path, tiny_run_config) -> None:
    model = write_tiny_model(tmp_path / "model")
    data = write_preference_jsonl(tmp_path / "prefs.jsonl", 24)
    job = tmp_path / "job.toml"
    job.write_text(f'model = "{model}"\ndataset = "{data}"\nmax_steps = 2\nbatch_size = 5\nlearning_rate = 1e-3\n'
                   'precision = "fp32"\nseed = 0\neval_fraction = 0.25\nsave_model = false\n')
    config = RunConfig.model_validate({
        **tiny_run_config.model_dump(mode="json"),
        "search": {"generations": 2},
        "train": {"enabled": True, "promote_top": 2, "job": str(job), "poll_s": 0.2, "time_limit_s": 300,
                  "launcher": {"kind": "local", "poll_s": 0.1}},
    })
    run_dir = tmp_path / "run"
    proposer = Scripted([Proposal(thought="the baseline", name="dpo", code=library_code("dpo")),
                         Proposal(thought="dpo with a pull to rho=1", name="late_nan", code=NAN_AT_BATCH_5)])
    summary = run_search(run_dir, config, proposer=proposer)
    assert summary.evaluated == 2

    archive = Archive(run_dir / "archive.sqlite")
    by_name = {c.name: c for c in archive.all()}
    dpo, bad = by_name["dpo"], by_name["late_nan"]
    good = dpo.result["train"]
    assert good["status"] == "succeeded" and len(good["job_id"]) == 24
    assert good["fitness_kind"] == "preference_accuracy" and good["score_name"] == "eval_accuracy"
    assert 0.0 <= good["fitness"] <= 1.0 and good["fitness"] == good["eval_accuracy"]
    assert dpo.fitness == dpo.result["fitness"]  # the proxy fitness column is untouched
    assert "train" in dpo.timings and "Full training" in dpo.reflection and "succeeded" in dpo.reflection

    failed = bad.result["train"]
    assert failed["status"] == "failed" and "DegenerateLossError" in failed["error"]
    assert failed["stderr_tail"] and "job failed" in failed["stderr_tail"]
    assert "Full training" in bad.reflection and "DegenerateLossError" in bad.reflection  # stderr -> reflection
    assert bad.status == "evaluated" and bad.fitness is not None  # a failed job does not unscore the screen

    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    trained = [e for e in events if e["kind"] == "trained"]
    assert [e["status"] for e in trained] == ["succeeded", "failed"]
    jobs = sorted(p.name for p in (run_dir / "jobs").iterdir())
    assert jobs == sorted([good["job_id"], failed["job_id"]])
    started = (run_dir / "jobs" / good["job_id"] / "state.json").read_text()

    # A crash after the job was submitted but before its result was written: the stage, re-run by a new
    # process (a new launcher on the same jobs folder), collects the finished job and launches nothing.
    archive.update(dpo.id, result={**dpo.result, "train": {"status": "running", "job_id": good["job_id"]}})
    TrainStage(config, archive, InProcessSandbox()).run(dpo.id)
    again = archive.get(dpo.id).result["train"]
    assert again["status"] == "succeeded" and again["fitness"] == good["fitness"]
    # ... and a crash before even the job id was recorded: the submission finds the job by its key.
    archive.update(dpo.id, result={k: v for k, v in dpo.result.items() if k != "train"})
    TrainStage(config, archive, InProcessSandbox()).run(dpo.id)
    resubmitted = archive.get(dpo.id).result["train"]
    assert resubmitted["reused"] is True and resubmitted["job_id"] == good["job_id"]
    assert resubmitted["fitness"] == good["fitness"]
    assert sorted(p.name for p in (run_dir / "jobs").iterdir()) == jobs
    assert (run_dir / "jobs" / good["job_id"] / "state.json").read_text() == started  # never restarted
    # A finished record is final: running the stage again changes nothing.
    TrainStage(config, archive, InProcessSandbox()).run(dpo.id)
    assert archive.get(dpo.id).result["train"] == resubmitted
    assert training_note(archive.get(dpo.id)).startswith("Full training (job ")
    archive.close()


def test_the_train_stage_is_off_by_default_and_promotes_only_the_top(tmp_path, tiny_run_config) -> None:
    assert tiny_run_config.train.enabled is False
    archive = Archive(tmp_path / "archive.sqlite")
    ids = []
    for step, fitness in enumerate([1.0, 2.0, 0.5]):
        cid = archive.upsert_proposal(step, name=f"c{step}", code="x", code_hash=str(step), status="evaluated")
        archive.update(cid, fitness=fitness)
        ids.append(cid)
    with pytest.raises(ValueError, match="train.enabled needs train.job"):
        RunConfig.model_validate({"train": {"enabled": True}})
    config = RunConfig.model_validate({"train": {"enabled": True, "job": "job.toml", "promote_top": 1, "min_fitness": 0.8}})
    stage = TrainStage(config, archive, InProcessSandbox())
    assert [stage.promoted(archive.get(i)) for i in ids] == [False, True, False]
    config = RunConfig.model_validate({"train": {"enabled": True, "job": "job.toml", "promote_top": 3, "min_fitness": 0.8,
                                                 "max_jobs": 1}})
    stage = TrainStage(config, archive, InProcessSandbox())
    assert [stage.promoted(archive.get(i)) for i in ids] == [True, True, False]
    archive.update(ids[1], result={"train": {"status": "failed", "job_id": "a" * 24, "error": "boom\nline 2"}})
    assert [stage.promoted(archive.get(i)) for i in ids] == [False, True, False]  # max_jobs reached by #2
    assert "boom" in training_note(archive.get(ids[1]))
    archive.close()
