"""The archive: every candidate of a run in one SQLite database (`archive.sqlite` in the run directory).

Guarantees:
- One row per proposal step (`step` is unique), written with upserts, so a node that is re-run after a
  crash rewrites its own row instead of adding a second one.
- WAL mode: other processes (`lossforge status`, the TUI) read while the search writes.
- JSON columns (check report, fingerprint, result, genome, parents) hold plain JSON, so the archive is
  readable with any SQLite client.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lossforge.candidate.status import SCORED, CandidateStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step INTEGER NOT NULL UNIQUE,
    generation INTEGER,
    name TEXT NOT NULL,
    code TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    thought TEXT,
    operator TEXT,
    proposer TEXT,
    parent_ids TEXT NOT NULL DEFAULT '[]',
    genome TEXT,
    repair_of INTEGER,
    status TEXT NOT NULL,
    failed_check TEXT,
    check_report TEXT,
    fingerprint TEXT,
    duplicate_of INTEGER,
    fitness REAL,
    result TEXT,
    error TEXT,
    reflection TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
CREATE INDEX IF NOT EXISTS candidates_fitness ON candidates(fitness);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Keys of the meta table (one JSON value each).
FITNESS_IDENTITY_META = "fitness_identity"  # the settings that make fitness values comparable (agent/runner.py)
LLM_BUDGET_META = "llm_budget"  # the LLM proposer's spending so far (llm/cost.py BudgetState)
STEERING_META = "steering"  # hints and pins from the TUI (rundir/steering.py)
IN_FLIGHT_META = "in_flight"  # the first steps of the candidates in flight (agent/supervisor.py)

STATUSES = tuple(CandidateStatus)  # in the order a candidate passes them (candidate/status.py)
EVALUATED = SCORED
_JSON_FIELDS = ("parent_ids", "genome", "check_report", "fingerprint", "result", "timings")


@dataclass
class Candidate:
    """One archive row, JSON columns decoded."""

    id: int
    step: int
    generation: int | None
    name: str
    code: str
    code_hash: str
    thought: str | None
    operator: str | None
    proposer: str | None
    parent_ids: list[int]
    genome: Any
    repair_of: int | None
    status: CandidateStatus
    failed_check: str | None
    check_report: dict | None
    fingerprint: list[float] | None
    duplicate_of: int | None
    fitness: float | None
    result: dict | None
    error: str | None
    reflection: str | None
    timings: dict[str, float]
    created_at: float
    updated_at: float

    @property
    def fitness_stderr(self) -> float | None:
        """The fitness's standard error from evaluation sampling (the screen's ``fitness_stderr``), or
        None for a candidate without one (not evaluated, or evaluated before the noise floor existed)."""
        value = (self.result or {}).get("fitness_stderr")
        return float(value) if isinstance(value, (int, float)) else None

    def public(self) -> dict[str, Any]:
        """A JSON-ready summary (no code, no fingerprint) for status listings."""
        return {
            "id": self.id,
            "step": self.step,
            "generation": self.generation,
            "name": self.name,
            "status": self.status,
            "fitness": self.fitness,
            "fitness_stderr": self.fitness_stderr,
            "failed_check": self.failed_check,
            "duplicate_of": self.duplicate_of,
            "parent_ids": self.parent_ids,
            "operator": self.operator,
        }


def _decode(row: sqlite3.Row) -> Candidate:
    data = dict(row)
    for key in _JSON_FIELDS:
        if data[key] is not None:
            data[key] = json.loads(data[key])
    data["status"] = CandidateStatus(data["status"])
    return Candidate(**data)


class Archive:
    """Read and write access to one run's candidates. Safe to share between threads of one process."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no archive at {self.path}: is this a lossforge run directory?")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # -- writing -------------------------------------------------------------------------------
    def upsert_proposal(self, step: int, **fields: Any) -> int:
        """Insert the candidate of `step`, or reset it to these fields if it exists (a re-run node)."""
        now = time.time()
        row = {key: (json.dumps(value) if key in _JSON_FIELDS and value is not None else value) for key, value in fields.items()}
        row.setdefault("status", CandidateStatus.PROPOSED)
        columns = ["step", *row.keys(), "created_at", "updated_at"]
        values = [step, *row.values(), now, now]
        updates = ", ".join(f"{c}=excluded.{c}" for c in row.keys()) + ", updated_at=excluded.updated_at"
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO candidates ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT(step) DO UPDATE SET {updates}",
                values,
            )
            return int(self._db.execute("SELECT id FROM candidates WHERE step=?", (step,)).fetchone()[0])

    def update(self, candidate_id: int, **fields: Any) -> None:
        """Set columns of one candidate (JSON columns are encoded)."""
        if not fields:
            return
        row = {key: (json.dumps(value) if key in _JSON_FIELDS and value is not None else value) for key, value in fields.items()}
        assignments = ", ".join(f"{key}=?" for key in row) + ", updated_at=?"
        with self._lock, self._db:
            self._db.execute(f"UPDATE candidates SET {assignments} WHERE id=?", [*row.values(), time.time(), candidate_id])

    def record_score(self, candidate_id: int, **fields: Any) -> int | None:
        """Set a screened candidate's outcome; a scored one (``SCORED`` status) also gets the next generation
        number, counted and written in one transaction, so concurrent screens never share a number.
        Returns the generation given, or None."""
        row = {key: (json.dumps(value) if key in _JSON_FIELDS and value is not None else value) for key, value in fields.items()}
        with self._lock, self._db:
            generation = None
            if row.get("status") in SCORED:
                generation = self._count_scored() + 1
                row["generation"] = generation
            assignments = ", ".join(f"{key}=?" for key in row) + ", updated_at=?"
            self._db.execute(f"UPDATE candidates SET {assignments} WHERE id=?", [*row.values(), time.time(), candidate_id])
        return generation

    def add_timing(self, candidate_id: int, key: str, seconds: float) -> None:
        timings = self.get(candidate_id).timings
        timings[key] = round(seconds, 4)
        self.update(candidate_id, timings=timings)

    def set_meta(self, key: str, value: Any) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    # -- reading -------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def get(self, candidate_id: int) -> Candidate:
        row = self._db.execute("SELECT * FROM candidates WHERE id=?", (candidate_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate with id {candidate_id} in {self.path}")
        return _decode(row)

    def by_step(self, step: int) -> Candidate | None:
        row = self._db.execute("SELECT * FROM candidates WHERE step=?", (step,)).fetchone()
        return None if row is None else _decode(row)

    def _query(self, sql: str, params: tuple = ()) -> list[Candidate]:
        return [_decode(row) for row in self._db.execute(sql, params).fetchall()]

    def all(self) -> list[Candidate]:
        return self._query("SELECT * FROM candidates ORDER BY id")

    def top(self, k: int) -> list[Candidate]:
        """The `k` best evaluated candidates, best first (ties: earliest first)."""
        return self._query("SELECT * FROM candidates WHERE fitness IS NOT NULL ORDER BY fitness DESC, id LIMIT ?", (k,))

    def recent(self, k: int, statuses: tuple[str, ...] = EVALUATED) -> list[Candidate]:
        marks = ",".join("?" * len(statuses))
        return self._query(f"SELECT * FROM candidates WHERE status IN ({marks}) ORDER BY id DESC LIMIT ?", (*statuses, k))

    def with_fingerprint(self) -> list[Candidate]:
        """Candidates that passed the checks (their fingerprints are the dedup reference)."""
        return self._query(
            "SELECT * FROM candidates WHERE fingerprint IS NOT NULL AND status NOT IN ('duplicate', 'rejected') ORDER BY id"
        )

    def find_code(self, code_hash: str, exclude_id: int) -> Candidate | None:
        rows = self._query(
            "SELECT * FROM candidates WHERE code_hash=? AND id<>? AND status NOT IN ('proposed','checking') ORDER BY id LIMIT 1",
            (code_hash, exclude_id),
        )
        return rows[0] if rows else None

    def _count_scored(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM candidates WHERE status IN ('evaluated','degenerate')").fetchone()[0])

    def count_evaluated(self) -> int:
        return self._count_scored()

    def max_step(self) -> int:
        """The largest proposal step in the archive (-1 when it is empty)."""
        row = self._db.execute("SELECT MAX(step) FROM candidates").fetchone()
        return -1 if row[0] is None else int(row[0])

    def latest_repair(self, step: int) -> Candidate | None:
        """The candidate of ``step``, or the last repair in its chain (``repair_of`` links); None when the
        step has no row yet."""
        current = self.by_step(step)
        while current is not None:
            rows = self._query("SELECT * FROM candidates WHERE repair_of=? ORDER BY step DESC LIMIT 1", (current.id,))
            if not rows:
                return current
            current = rows[0]
        return None

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM candidates GROUP BY status").fetchall()
        return {status: int(n) for status, n in rows}

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.all())
