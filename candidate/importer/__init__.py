"""`lossforge import`: turn a loss written in the forms people have into lossforge's candidate form.

The candidate form (``lossforge.candidate.policy``) is one top-level function::

    def name(policy_chosen_logps, policy_rejected_logps,
             reference_chosen_logps, reference_rejected_logps, beta):
        ...
        return losses  # shape (batch,)

Losses in the field are written otherwise. This module reads Python source with ``ast``, transforms each
loss function it finds with ``ast`` node transforms (never regular expressions) and writes the candidate
back with ``ast.unparse``. It never runs the code: checking the result is the sandbox's job
(``lossforge import`` runs the usual checks on it).

Forms it brings in
------------------
* DiscoPOP's trainer methods (SakanaAI/DiscoPOP, ``src/alignment/gpo.py``) and the seeds of its
  discovery script (``scripts/launch_evo.py``): ``def x(self, policy_chosen_logps, ...,
  reference_rejected_logps)`` using ``self.beta``, typing annotations, ``import torch.nn.functional as F``
  inside the body.
* TRL's older ``DPOTrainer.dpo_loss(self, policy_chosen_logps, ...)`` override (TRL 0.x) that returns
  ``(losses, chosen_rewards, rejected_rewards)`` and branches on ``self.loss_type``.
* Functions (or methods) with TRL's newer argument names ``chosen_logps``, ``rejected_logps``,
  ``ref_chosen_logps``, ``ref_rejected_logps`` (TRL >= 0.12).

What it changes, and says so (``ImportedLoss.changes``)
--------------------------------------------------------
* The signature becomes the candidate's (``self`` dropped, TRL's newer names renamed, ``beta`` added);
  ``self.beta`` / ``self.args.beta`` become ``beta``.
* Other trainer attributes (``self.label_smoothing``, ``self.loss_type``, ``self.args.discopop_tau``...)
  and extra parameters with defaults become constants: the value given in ``settings`` (``--set
  NAME=VALUE``), else the parameter's default, else TRL's ``DPOConfig`` default (``TRL_DEFAULTS``), each
  stated with its value. ``if``/``elif`` chains on such constants are folded, so TRL's multi-loss
  ``dpo_loss`` keeps the branch of its ``loss_type``.
* Device moves (``x.to(self.accelerator.device)``) are dropped; statements that only update trainer state
  or log (``self.running.update(...)``, ``self.store_metrics(...)``) are dropped; ``self.running.mean``
  (TRL 0.x's running mean of rewards for ``bco_pair``, state kept across steps) becomes 0.0, as in TRL
  1.x's stateless ``bco_pair`` (a stated departure).
* A returned tuple ``(losses, chosen_rewards, rejected_rewards)`` keeps ``losses``; values only the
  dropped parts used are removed. A returned ``torch.cat((A, B), 0)`` of a chosen and a rejected half
  (shape ``2 * batch``, TRL 0.x's ``kto_pair``) becomes ``0.5 * (A + B)`` (shape ``batch``; the batch mean,
  which is what training minimises, is unchanged).
* Imports inside the body are removed (the candidate preamble imports ``math``, ``torch`` and ``F``);
  aliases (``import torch.nn.functional as nnf``, ``from torch.nn.functional import logsigmoid``) are
  written as ``F.`` / ``torch.`` / ``math.``; annotations and decorators are dropped; module-level
  literal constants the function reads are copied into its body.
* Source already in the candidate form passes through unchanged.

What it refuses (``ImportResult.refused``, each with the reason)
-----------------------------------------------------------------
* A function that does not take the four log-probs: e.g. TRL's ``compute_loss(self, model, inputs)``
  override works on the model and the batch, not on log-probs.
* A loss that still needs the trainer after the transforms: a call to another method
  (``self.gpo_loss(...)``: a dispatcher; import the method it dispatches to), an attribute with no known
  default (give it with ``settings``), modules other than torch/F/math (numpy...), a parameter without a
  default.

It does not guarantee that an imported loss passes the checks; ``lossforge import`` runs them and
reports. Importing this module does not import torch (``lossforge.config`` uses it to validate
``[search] seed_losses``).

The package
-----------
``base`` (the names, defaults and result types), ``astutil`` (small AST helpers, folding, dead stores),
``discover`` (the module's aliases and constants; which functions are losses), ``rewrite`` (transforming
one function), and this ``__init__``, the package's face: the entry points ``import_losses``,
``import_file``, ``import_hint``, ``seed_candidates``, ``seed_problems`` and ``parse_settings``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from lossforge.candidate.importer.base import (
    CANDIDATE_PARAMETERS,
    ImportedLoss,
    ImportError_,
    ImportResult,
    _Refused,
    TRL_DEFAULTS,
    TRL_NEW_NAMES,
)
from lossforge.candidate.importer.astutil import _is_const
from lossforge.candidate.importer.discover import (
    _functions,
    _logps_names,
    _module_context,
    _not_a_loss_reason,
    _positional,
)
from lossforge.candidate.importer.rewrite import _import_one

__all__ = [
    "CANDIDATE_PARAMETERS",
    "TRL_NEW_NAMES",
    "TRL_DEFAULTS",
    "ImportedLoss",
    "ImportResult",
    "ImportError_",
    "import_losses",
    "import_file",
    "import_hint",
    "parse_settings",
    "seed_candidates",
    "seed_problems",
]


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["loss_type=hinge", "label_smoothing=0.1"]`` -> ``{"loss_type": "hinge", "label_smoothing": 0.1}``.

    A value is read as a Python literal (numbers, True/False/None, quoted strings), else kept as a
    string. Raises ``ValueError`` naming the item when one has no ``=`` or an invalid name.
    """
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. --set label_smoothing=0.1 or --set loss_type=hinge")
        try:
            settings[name] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            settings[name] = value.strip()
    return settings


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _parse(source: str, origin: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise ImportError_(f"{origin}: line {e.lineno}: {e.msg}; give a Python file with the loss function.") from None


def _is_candidate_form(tree: ast.Module) -> bool:
    fns = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
    others = [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.Import, ast.ImportFrom))
              and not (isinstance(s, ast.Expr) and _is_const(s.value))]
    return len(fns) == 1 and not others and [a.arg for a in fns[0].args.args] == list(CANDIDATE_PARAMETERS) \
        and not fns[0].args.vararg and not fns[0].args.kwarg and not fns[0].args.kwonlyargs


def import_losses(source: str, *, function: str | None = None, settings: dict[str, Any] | None = None,
                  origin: str = "<source>") -> ImportResult:
    """Every loss function in ``source`` (or only ``function``: a name or ``Class.method``), in the
    candidate form, and the functions refused with their reasons.

    ``settings`` gives values for trainer attributes and extra parameters (see ``parse_settings``).
    Raises ``ImportError_`` when the source does not parse, when it names no loss-like function, or when
    ``function`` is not in it (the message lists what is there).
    """
    settings = dict(settings or {})
    tree = _parse(source, origin)
    found = _functions(tree)
    if _is_candidate_form(tree) and function in (None, found[0][0]):
        qualname = found[0][0]
        return ImportResult(imported=[ImportedLoss(name=qualname, qualname=qualname, origin=origin, code=source,
                                                   changes=[])])
    if function is not None:
        chosen = [f for f in found if function in (f[0], f[0].split(".")[-1])]
        if not chosen:
            listed = ", ".join(q for q, _, _ in found) or "none"
            raise ImportError_(f"{origin} has no function {function!r}; its functions are: {listed}.")
        found = chosen
    ctx = _module_context(tree)
    losses = [(q, f, c) for q, f, c in found if len(_logps_names(f, c)) == 4]
    result = ImportResult()
    if not losses:
        on_model = [(q, f, c) for q, f, c in found if {"model", "inputs"} <= {a.arg for a in _positional(f)}
                    or f.name == "compute_loss"]
        if on_model or function is not None:
            result.refused = [(q, _not_a_loss_reason(q, f, c)) for q, f, c in (on_model or found)]
            return result
        listed = ", ".join(f"{q}({', '.join(a.arg for a in _positional(f))})" for q, f, _ in found) or "no functions"
        raise ImportError_(f"{origin} has no loss function to import: {listed}. A loss takes the four summed "
                           "log-probs (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
                           "reference_rejected_logps, or TRL's chosen_logps, rejected_logps, ref_chosen_logps, "
                           "ref_rejected_logps) and returns one loss per pair.")
    names = [q for q, _, _ in losses]
    for qualname, fn, in_class in losses:
        try:
            result.imported.append(_import_one(qualname, fn, in_class, ctx, names, settings, origin))
        except _Refused as refused:
            result.refused.append((qualname, refused.reason))
    return result


def import_file(path: Path | str, *, function: str | None = None, settings: dict[str, Any] | None = None) -> ImportResult:
    """``import_losses`` on the text of ``path``. Raises ``ImportError_`` if the file cannot be read."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as error:
        raise ImportError_(f"cannot read {path}: {error.strerror or error}") from None
    return import_losses(source, function=function, settings=settings, origin=str(path))


def import_hint(source: str) -> str | None:
    """For ``lossforge check``: a sentence pointing at ``lossforge import`` when ``source`` is not in the
    candidate form but holds losses that import (trainer methods, TRL-style names); else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    if _is_candidate_form(tree):
        return None
    losses = [q for q, f, c in _functions(tree) if len(_logps_names(f, c)) == 4]
    if not losses:
        return None
    what = ", ".join(losses[:4]) + (f" and {len(losses) - 4} more" if len(losses) > 4 else "")
    return (f"this file holds loss code in another form ({what}): bring it into the candidate form with "
            "`lossforge import FILE -o OUT.py` (it says what it changes), then check OUT.py.")


def seed_candidates(paths: list[Path]) -> list[ImportedLoss]:
    """Every loss of each file in ``paths`` in the candidate form, in order (``[search] seed_losses``).
    Raises ``ImportError_`` naming the file and the reason when one cannot be read, has nothing to import,
    or has a loss that is refused."""
    seeds: list[ImportedLoss] = []
    for path in paths:
        result = import_file(path)
        if result.refused:
            qualname, why = result.refused[0]
            raise ImportError_(f"{path}: {why} (pick the loss functions into a file of their own, or check the file "
                               "with `lossforge import`)")
        if not result.imported:  # pragma: no cover - import_file raises when there is nothing to import
            raise ImportError_(f"{path}: no loss to import")
        seeds.extend(result.imported)
    return seeds


def seed_problems(paths: list[Path]) -> list[str]:
    """What is wrong with the seed files in ``paths`` (empty when every one imports), for the config check."""
    problems = []
    for path in paths:
        if not Path(path).is_file():
            problems.append(f"{path} is not a file (relative paths are relative to the working directory)")
            continue
        try:
            seed_candidates([Path(path)])
        except ImportError_ as error:
            problems.append(str(error))
    return problems
