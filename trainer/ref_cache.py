"""Reference log-probs computed once per (model, dataset, tokenization) and reused by every later job.

Every candidate of a search trains from the same SFT model on the same preference data, so the frozen
reference's summed log-probs of each chosen / rejected completion are the same for all of them. The first
job computes them (TRL's own ``_precompute_ref_logps`` path) and stores them here; later jobs feed them to
TRL as the ``ref_chosen_logps`` / ``ref_rejected_logps`` columns, exactly the columns TRL's
``precompute_ref_log_probs`` path adds, so the reference model is never loaded nor run again.

What it guarantees
------------------
* The key (``RefCacheKey.digest``) is a SHA-256 over: the model (name or path, plus a fingerprint of its
  ``config.json`` and weight files when it is a local directory: size plus SHA-256 of the first and last
  MiB of each weight file, so multi-GB checkpoints hash in milliseconds), the revision, the dtype the
  log-probs are computed in; the data (SHA-256 of a local file, else the name, config and revision), the
  split and the row selection; the tokenization (tokenizer files' hash or the tokenizer's name,
  ``max_length``, ``truncation_mode``, ``pad_to_multiple_of``); and the TRL major.minor version (its
  tokenization rules are part of what the numbers mean).
* An entry stores per row: the two log-probs and the token lengths of prompt / chosen / rejected. On
  load, the lengths must equal those of the data set being trained, or the entry is ignored (and
  overwritten): a stale or mismatched entry can never be fed silently.
* Writes are atomic (temp file + rename), so concurrent jobs at worst both compute, never read a torn file.
* ``seconds_to_compute`` is stored with the entry, so a job that reuses it can report the time saved.

What it does not guarantee
--------------------------
* A model named by hub id (no local directory) is keyed by name and revision only: if the hub repository
  changes under the same revision name (e.g. ``main``), set ``revision`` to a commit hash.
* Weight fingerprints sample the files' ends: an edit in the middle of a weight file with the same size
  is not detected (a re-saved model changes its header and size in practice).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["RefCacheKey", "RefLogps", "RefLogpCache", "file_sha256", "model_fingerprint"]

_MIB = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "merges.txt", "tokenizer.model", "chat_template.jinja")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a whole file (used for data files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * _MIB), b""):
            h.update(block)
    return h.hexdigest()


def _weight_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > 2 * _MIB:
            f.seek(size - _MIB)
            h.update(f.read(_MIB))
    return h.hexdigest()


def model_fingerprint(model: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies a model: its name, and for a local directory its config and weight files."""
    p = Path(model)
    out: dict[str, Any] = {"model": model, "revision": revision}
    if p.is_dir():
        out["model"] = str(p.resolve())
        cfg = p / "config.json"
        out["config_sha256"] = file_sha256(cfg) if cfg.exists() else None
        out["weights"] = {f.name: _weight_fingerprint(f) for f in sorted(p.iterdir())
                          if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)}
    return out


def tokenizer_fingerprint(tokenizer: str) -> dict[str, Any]:
    """The tokenizer files' hashes for a local directory, else its name."""
    p = Path(tokenizer)
    if p.is_dir():
        return {"files": {n: file_sha256(p / n) for n in _TOKENIZER_FILES if (p / n).exists()}}
    return {"tokenizer": tokenizer}


@dataclass(frozen=True)
class RefCacheKey:
    """The (model, data, tokenization) triple; ``digest`` is the cache key."""

    model: dict[str, Any]
    data: dict[str, Any]
    tokenization: dict[str, Any]

    @property
    def digest(self) -> str:
        blob = json.dumps({"model": self.model, "data": self.data, "tokenization": self.tokenization},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @classmethod
    def build(cls, *, model: str, revision: str | None, dtype: str, dataset: str, dataset_config: str | None,
              split: str, rows: str, tokenizer: str, max_length: int | None, truncation_mode: str,
              pad_to_multiple_of: int | None = None) -> "RefCacheKey":
        import trl

        data: dict[str, Any] = {"split": split, "rows": rows, "config": dataset_config}
        if Path(dataset).is_file():
            data["file_sha256"] = file_sha256(dataset)
        else:
            data["name"] = dataset
            data["revision"] = revision
        trl_minor = ".".join(trl.__version__.split(".")[:2])
        return cls(
            model={**model_fingerprint(model, revision), "dtype": dtype},
            data=data,
            tokenization={**tokenizer_fingerprint(tokenizer), "max_length": max_length,
                          "truncation_mode": truncation_mode, "pad_to_multiple_of": pad_to_multiple_of,
                          "trl": trl_minor},
        )


@dataclass
class RefLogps:
    """One cached entry: per-row reference log-probs and the token lengths they were computed on."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    lengths: torch.Tensor  # (n, 3): prompt, chosen, rejected token counts
    seconds_to_compute: float


def row_lengths(dataset) -> torch.Tensor:
    """(n, 3) token counts of prompt_ids / chosen_ids / rejected_ids of a tokenized TRL data set."""
    cols = [dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]]
    return torch.tensor([[len(a), len(b), len(c)] for a, b, c in zip(*cols)], dtype=torch.int64)


class RefLogpCache:
    """A directory of ``<digest>.pt`` entries. Counts ``hits`` / ``misses`` / ``seconds_saved``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.seconds_saved = 0.0
        self.seconds_computing = 0.0

    def path(self, key: RefCacheKey) -> Path:
        return self.root / f"{key.digest}.pt"

    def load(self, key: RefCacheKey, lengths: torch.Tensor | None = None) -> RefLogps | None:
        """The entry for ``key``, or None (missing, unreadable, or token lengths differ from ``lengths``)."""
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
            entry = RefLogps(blob["chosen"], blob["rejected"], blob["lengths"], float(blob["seconds_to_compute"]))
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss; it is overwritten
            self.misses += 1
            return None
        if lengths is not None and (entry.lengths.shape != lengths.shape or not torch.equal(entry.lengths, lengths)):
            self.misses += 1
            return None
        self.hits += 1
        self.seconds_saved += entry.seconds_to_compute
        return entry

    def store(self, key: RefCacheKey, entry: RefLogps) -> Path:
        """Write ``entry`` atomically; also writes ``<digest>.json`` with the key, for humans."""
        p = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        torch.save({"chosen": entry.chosen.float().cpu(), "rejected": entry.rejected.float().cpu(),
                    "lengths": entry.lengths, "seconds_to_compute": entry.seconds_to_compute,
                    "created": time.time()}, tmp)
        os.replace(tmp, p)
        meta = {"model": key.model, "data": key.data, "tokenization": key.tokenization,
                "rows": int(entry.chosen.numel()), "seconds_to_compute": entry.seconds_to_compute}
        p.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
        self.seconds_computing += entry.seconds_to_compute
        return p
