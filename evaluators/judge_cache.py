"""An on-disk cache of LLM judgements, so a re-run judge never pays twice for the same verdict.

``JudgementCache(path)`` is a small SQLite table. A judgement's key is ``judgement_key(...)``: a SHA-256
over everything that determines it, namely the protocol, the question (id and text), the answer or
answers judged and their order, the reference shown, the judge model, its temperature and the judge's
``PROMPT_VERSION``. Change any of them and the key changes.

What it guarantees
------------------
* ``get(key)`` returns the stored judge text or None; ``put`` stores or replaces it. Both are safe from
  several threads (one connection behind a lock) and a write is committed before ``put`` returns, so a
  judge killed half-way keeps every verdict it finished.
* It stores what the judge wrote, not a parsed score: parsing is re-done on read, so fixing a parser
  needs no new calls. Callers store only readable verdicts, so an unreadable one is asked again.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["JudgementCache", "judgement_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    judge_model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    question_id TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def judgement_key(**parts: Any) -> str:
    """A stable hash of the named parts (order of the keyword arguments does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgementCache:
    """Judge texts by key, in SQLite (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM judgements WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, text: str, *, kind: str, judge_model: str, prompt_version: str, question_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO judgements (key, kind, judge_model, prompt_version, question_id, text, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET text=excluded.text, created=excluded.created",
                (key, kind, judge_model, prompt_version, question_id, text, time.time()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "JudgementCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
