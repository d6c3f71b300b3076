"""The plain tool functions, in process, with the real sandbox on the tiny proxy."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lossforge.tools import api
from lossforge.tools.context import ToolContext, ToolInputError, ToolSettings
from lossforge.trainer.losses import library_code

MALICIOUS = "import os\n\ndef evil(a, b, c, d, beta):\n    return open('/etc/passwd').read()\n"


def test_limits_are_checked_before_any_work() -> None:
    ctx = ToolContext(ToolSettings(max_code_chars=200, max_seeds=2), sandbox=object())  # never touched
    with pytest.raises(ToolInputError, match="limit is 200"):
        api.check_loss("x" * 201, context=ctx)
    with pytest.raises(ToolInputError, match="3 seeds given; the limit is 2"):
        api.screen_loss(library_code("dpo")[:150], seeds=[0, 1, 2], context=ctx)
    with pytest.raises(ToolInputError, match="beta"):
        api.check_loss("def f(): pass", beta=-1, context=ctx)
    with pytest.raises(ToolInputError, match="codes is empty"):
        api.compare_losses({}, context=ctx)


def test_training_tools_say_what_is_missing_before_any_work(tmp_path: Path) -> None:
    ctx = ToolContext(ToolSettings(work_dir=tmp_path), sandbox=object())  # the sandbox is never touched
    with pytest.raises(ToolInputError, match="no base job is configured"):
        api.submit_training(library_code("dpo"), context=ctx)
    with pytest.raises(ToolInputError, match="not a job id"):
        api.job_status("1", context=ctx)
    with pytest.raises(ToolInputError, match="no training job with id"):
        api.judge(job_id="0" * 24, context=ctx)
    with pytest.raises(ToolInputError, match="limit is 20000"):
        api.submit_training("#" * 20_001, context=ctx)


def test_check_loss_passes_dpo_and_rejects_malicious_code(tool_context: ToolContext) -> None:
    good = api.check_loss(library_code("dpo"), context=tool_context)
    assert good.passed and good.summary == "passed all checks"
    bad = api.check_loss(MALICIOUS, context=tool_context)
    assert not bad.passed and bad.failed_check == "policy" and "import os" in bad.summary


def test_screen_loss_does_not_screen_a_rejected_loss(tool_context: ToolContext) -> None:
    result = api.screen_loss("def f(a, b, c, d, beta):\n    return torch.load('x')\n", context=tool_context)
    assert result.status == "rejected" and not result.passed_checks and result.runs == []


def test_plot_loss_returns_png_and_curves(tool_context: ToolContext) -> None:
    result = api.plot_loss(library_code("ipo"), beta=0.1, context=tool_context)
    png = base64.b64decode(result.png_base64)
    assert png.startswith(b"\x89PNG") and Path(result.png_path).read_bytes() == png
    assert set(result.curves) == {"candidate", "dpo"}
    dpo = result.curves["dpo"]
    zero = dpo.rho.index(0.0)
    assert dpo.derivative[zero] == pytest.approx(-0.5, abs=1e-6)  # d softplus(-rho)/drho at 0


def test_archive_tools_and_propose_from_read_a_run_without_writing(tool_context: ToolContext, run_dir: Path) -> None:
    before = (run_dir / "archive.sqlite").stat().st_mtime_ns
    top = api.archive_top(str(run_dir), k=5, context=tool_context)
    assert top.candidates and top.candidates[0].fitness is not None
    detail = api.archive_get(str(run_dir), top.candidates[0].id, context=tool_context)
    assert detail.code == top.candidates[0].code and detail.result is not None
    proposal = api.propose_from(str(run_dir), hint="try a margin", context=tool_context)
    assert proposal.code.strip() and proposal.proposer == "evolution" and proposal.hint == "try a margin"
    assert (run_dir / "archive.sqlite").stat().st_mtime_ns == before
    with pytest.raises(ToolInputError, match="no candidate with id 9999"):
        api.archive_get(str(run_dir), 9999, context=tool_context)
    with pytest.raises(ToolInputError, match="not a lossforge run directory"):
        api.archive_top(str(run_dir.parent / "nope"), context=tool_context)


def test_run_roots_confine_archive_tools(run_dir: Path, tmp_path: Path) -> None:
    ctx = ToolContext(ToolSettings(run_roots=[tmp_path]), sandbox=object())
    with pytest.raises(ToolInputError, match="outside the run directories"):
        api.archive_top(str(run_dir), context=ctx)
