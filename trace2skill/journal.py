"""The one place that answers "has this been paid for": a journal of successful model work.

A run used to keep three overlapping records: a response cache, a LangGraph SQLite checkpoint
and this journal. The checkpoint also stored *failed* analyses as finished graph work, so after
an outage or a bad key every rerun replayed the failures and made no call. Now:

- this journal records each analysis and each merge-model decision **that succeeded**, keyed
  by the run id (which hashes the inputs, the model, every setting sent and the prompt
  versions) and the trace digest or the merge's input; a failure is never written, so the next
  run of the same command retries exactly what failed and nothing else;
- the graph's state lives in memory for one invocation only (nothing to go stale);
- the held-out gate's and evaluation's fold runs are runs like any other (their own run ids), and
  each judge verdict is kept by a key over the trajectory, the rules judged, the model, the
  settings sent and the judge prompt's version, so a rerun of the gate pays for nothing twice;
- there is no response cache: every request worth reusing is an analysis or a merge, and the
  run id already covers what a cache key would (model, seed, sampling, prompt versions).

The journal sits beside the state folder's checkpoint path (`journal_path`).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from .types import LessonSet


CHECKPOINT_FILE = "checkpoints.sqlite"


def checkpoint_path(state_dir: Path) -> Path:
    """The run-state path of runs that keep state in `state_dir` (the journal is derived from it; never a symlink)."""
    from .fsguard import inside

    return inside(Path(state_dir), CHECKPOINT_FILE)


def journal_path(checkpoint: Path) -> Path:
    """The analysis journal kept beside the checkpoint path (never a symlink)."""
    from .fsguard import refuse_symlink

    path = checkpoint.with_suffix(".journal.sqlite")
    refuse_symlink(path)
    return path


class AnalysisJournal:
    """SQLite tables of (run id, trace digest) -> `LessonSet` and (run id, merge key) -> `LessonSet`."""

    def __init__(self, path: Path, run_id: str):
        self.path = path
        self.run_id = run_id
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS analyses (run TEXT, trace TEXT, result TEXT NOT NULL, PRIMARY KEY (run, trace))")
            db.execute("CREATE TABLE IF NOT EXISTS merges (run TEXT, key TEXT, result TEXT NOT NULL, PRIMARY KEY (run, key))")
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, rule_ids TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def _one(self, sql: str, params: tuple) -> tuple | None:
        with closing(self._connect()) as db:
            return db.execute(sql, params).fetchone()

    def _write(self, sql: str, params: tuple) -> None:
        with closing(self._connect()) as db, db:
            db.execute(sql, params)

    def get(self, digest: str) -> LessonSet | None:
        row = self._one("SELECT result FROM analyses WHERE run = ? AND trace = ?", (self.run_id, digest))
        return LessonSet.model_validate_json(row[0]) if row else None

    def put(self, digest: str, lessons: LessonSet) -> None:
        """Record a successful analysis (never call this for a failed one)."""
        self._write("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?)", (self.run_id, digest, lessons.model_dump_json()))

    def get_merge(self, key: str) -> LessonSet | None:
        row = self._one("SELECT result FROM merges WHERE run = ? AND key = ?", (self.run_id, key))
        return LessonSet.model_validate_json(row[0]) if row else None

    def put_merge(self, key: str, merged: LessonSet) -> None:
        """Record a merge whose model calls all succeeded."""
        self._write("INSERT OR REPLACE INTO merges VALUES (?, ?, ?)", (self.run_id, key, merged.model_dump_json()))

    def get_verdict(self, key: str) -> list[str] | None:
        """A held-out judge's verdict (the rule ids it cited), by `evaluate.verdict_key`."""
        row = self._one("SELECT rule_ids FROM verdicts WHERE key = ?", (key,))
        return json.loads(row[0]) if row else None

    def put_verdict(self, key: str, rule_ids: list[str]) -> None:
        """Record a judge call that succeeded (its key covers everything the answer depends on)."""
        self._write("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(sorted(rule_ids))))

    def analysed(self) -> set[str]:
        """Digests of the traces this run has already analysed successfully."""
        with closing(self._connect()) as db:
            return {row[0] for row in db.execute("SELECT trace FROM analyses WHERE run = ?", (self.run_id,))}

    def merges_done(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM merges WHERE run = ?", (self.run_id,)).fetchone()[0]

    def forget(self) -> None:
        """Drop this run's entries once its result is safely committed."""
        self._write("DELETE FROM analyses WHERE run = ?", (self.run_id,))
        self._write("DELETE FROM merges WHERE run = ?", (self.run_id,))
