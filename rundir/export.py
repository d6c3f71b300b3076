"""Exporting an archived candidate as a standalone, importable Python module."""
from __future__ import annotations

import json
from pathlib import Path

from lossforge.rundir.archive import Candidate


def render_export(candidate: Candidate, run_dir: Path) -> str:
    """The candidate's code with a provenance docstring; importable with only torch installed."""
    result = candidate.result or {}
    lines = [
        f'"""{candidate.name}: a preference-optimisation loss discovered by lossforge.',
        "",
        f"Run directory: {run_dir}",
        f"Candidate id: {candidate.id} (step {candidate.step}, generation {candidate.generation})",
        f"Proxy fitness: {candidate.fitness} (reward gain at KL budget {result.get('kl_budget')}, "
        f"beta {result.get('beta')}, seed {result.get('seed')})",
        f"Parents: {json.dumps(candidate.parent_ids)}; operator: {candidate.operator}",
    ]
    if candidate.thought:
        lines += ["", "Proposer's note: " + candidate.thought.strip().replace('"""', "'''")]
    lines += [
        "",
        "Signature: loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,",
        "            reference_rejected_logps, beta) -> per-pair losses of shape (batch,)",
        '"""',
    ]
    body = candidate.code.strip()
    imports = ["import math", "import torch", "import torch.nn.functional as F"]
    present = {line.strip() for line in body.splitlines()}
    header = [line for line in imports if line not in present]
    return "\n".join(lines) + "\n" + "\n".join(header) + ("\n\n\n" if header else "\n") + body + "\n"
