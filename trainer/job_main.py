"""Entry point of one training job in its own process: ``python -m lossforge.trainer.job_main JOB_DIR``.

Reads ``JOB_DIR/job.json`` (a ``TrainJob``: the ``JobConfig``, the loss code and test hooks), runs
``run_job`` into ``JOB_DIR`` (which writes ``result.json``, ``metrics.json``, ``train.log`` and the
model), and exits 0 when the job succeeded, 1 when it failed (the error is printed on stderr, so a
launcher's stderr tail names it), 2 when ``job.json`` is unreadable.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _debug_sleep(job_dir: Path) -> None:
    """The test hook of a job that hangs (``TrainJob.debug_sleep_s``), read with plain json before torch
    is imported, so that a launcher killing the job at its limit finds the message on stderr."""
    try:
        seconds = float(json.loads((job_dir / "job.json").read_text()).get("debug_sleep_s") or 0.0)
    except (OSError, ValueError, AttributeError):
        return  # main() reports an unreadable job.json
    if seconds > 0:
        print(f"debug: sleeping {seconds}s", file=sys.stderr, flush=True)
        time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lossforge.trainer.job_main JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    _debug_sleep(job_dir)
    from lossforge.trainer.launchers.base import TrainJob

    try:
        job = TrainJob.model_validate_json((job_dir / "job.json").read_text())
    except Exception as e:  # noqa: BLE001
        print(f"cannot read {job_dir / 'job.json'}: {e}", file=sys.stderr)
        return 2
    from lossforge.trainer.trl_job import run_job

    result = run_job(job.config, job.loss_code, job_dir)
    if not result.ok:
        print(f"job failed: {result.error}", file=sys.stderr)
        return 1
    print(f"job ok: eval_accuracy={result.eval_accuracy} eval_margin={result.eval_margin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
