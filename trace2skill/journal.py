"""A durable record of finished analyses, so an interrupted run never pays for one twice.

LangGraph's checkpoint keeps the writes of tasks that finished in a failed superstep, but a
task that completes while a sibling is crashing can lose its write. Each analysis is therefore
also written here, keyed by run id and trace digest, the moment it finishes; a resumed run
reads it back instead of calling the analyst again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .types import LessonSet


CHECKPOINT_FILE = "checkpoints.sqlite"


def checkpoint_path(state_dir: Path) -> Path:
    """The LangGraph checkpoint database of runs that keep state in `state_dir` (never a symlink)."""
    from .fsguard import inside

    return inside(Path(state_dir), CHECKPOINT_FILE)


def journal_path(checkpoint: Path) -> Path:
    """The analysis journal kept beside a checkpoint database (never a symlink)."""
    from .fsguard import refuse_symlink

    path = checkpoint.with_suffix(".journal.sqlite")
    refuse_symlink(path)
    return path


class AnalysisJournal:
    """SQLite table of (run id, trace digest) -> the analyst's `LessonSet`."""

    def __init__(self, path: Path, run_id: str):
        self.path = path
        self.run_id = run_id
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS analyses (run TEXT, trace TEXT, result TEXT NOT NULL, PRIMARY KEY (run, trace))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, digest: str) -> LessonSet | None:
        db = self._connect()
        try:
            row = db.execute("SELECT result FROM analyses WHERE run = ? AND trace = ?", (self.run_id, digest)).fetchone()
        finally:
            db.close()
        return LessonSet.model_validate_json(row[0]) if row else None

    def put(self, digest: str, lessons: LessonSet) -> None:
        db = self._connect()
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?)", (self.run_id, digest, lessons.model_dump_json()))
        finally:
            db.close()

    def forget(self) -> None:
        """Drop this run's entries once its result is safely committed."""
        db = self._connect()
        try:
            with db:
                db.execute("DELETE FROM analyses WHERE run = ?", (self.run_id,))
        finally:
            db.close()
