"""The one place that answers "has this been paid for": a journal of successful model work.

A run used to keep three overlapping records: a response cache, a LangGraph SQLite checkpoint
and this journal. The checkpoint also stored *failed* analyses as finished graph work, so after
an outage or a bad key every rerun replayed the failures and made no call. Now:

- this journal records each analysis and each merge-model decision **that succeeded**: an
  analysis keyed by its scope (`pipeline.analysis_scope`: the model, every setting that changes
  answers and the prompt versions: the run id without the corpus) and the trace digest,
  so any run under the same scope reuses it (a held-out fold, a rerun over a grown corpus); a
  merge keyed by the run id (which also hashes the inputs) and the merge's input. A failure is
  never written, so the next run of the same command retries exactly what failed and nothing else;
- the graph's state lives in memory for one invocation only (nothing to go stale);
- the held-out gate's and evaluation's fold runs are runs like any other (their own run ids, the
  main run's analysis scope, so their analyses are the main run's, paid once), and each judge verdict is kept by a key over the trajectory, the rules judged, the model, the
  settings sent and the judge prompt's version, so a rerun of the gate pays for nothing twice;
- there is no response cache: every request worth reusing is an analysis or a merge, and the
  run id already covers what a cache key would (model, seed, sampling, prompt versions).

The journal sits beside the state folder's checkpoint path (`journal_path`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Iterable
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
    """SQLite tables of (analysis scope, trace digest) -> `LessonSet` and (run id, merge key) -> `LessonSet`.

    One connection for the journal's life (opened here, closed when the journal is closed or
    collected), not one per lookup. Each record is committed as it is made: paid work is never
    held back, so a run killed outright (SIGKILL) keeps every result it was billed for. The
    database is in WAL mode with `synchronous=NORMAL`, so a commit is an append to the log with
    no fsync (tens of microseconds, nothing next to a model request); it is durable when the
    process dies, and a power cut may lose the last commits, never the file. (Batching commits
    was tried and dropped: a kill lost up to half a second of answers already paid for.)
    """

    def __init__(self, path: Path, run_id: str, scope: str | None = None):
        self.path = path
        self.run_id = run_id
        self.scope = scope or run_id
        """The analyses' key (`pipeline.analysis_scope`); the run id when not given."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        """(table, key) of the records this run may read (the analyses under its scope, its own
        merges): a lookup of anything else is answered without a query, so a fresh run asks the
        database nothing. (Only one run at a time writes them: its skill or state folder is locked.)"""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS analyses (run TEXT, trace TEXT, result TEXT NOT NULL, PRIMARY KEY (run, trace))")
            self._db.execute("CREATE TABLE IF NOT EXISTS merges (run TEXT, key TEXT, result TEXT NOT NULL, PRIMARY KEY (run, key))")
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, rule_ids TEXT NOT NULL)")
            for table, column, owner in (("analyses", "trace", self.scope), ("merges", "key", run_id)):
                self._known.update((table, row[0]) for row in self._db.execute(f"SELECT {column} FROM {table} WHERE run = ?", (owner,)))
        self._finalizer = weakref.finalize(self, self._db.close)

    def _one(self, table: str, key: str) -> str | None:
        with self._lock:
            if (table, key) not in self._known:
                return None
            column = "trace" if table == "analyses" else "key"
            row = self._db.execute(f"SELECT result FROM {table} WHERE run = ? AND {column} = ?", (self._owner(table), key)).fetchone()
        return row[0] if row else None

    def _record(self, table: str, key: str, result: str) -> None:
        with self._lock, self._db:
            self._db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (self._owner(table), key, result))
            self._known.add((table, key))

    def _owner(self, table: str) -> str:
        return self.scope if table == "analyses" else self.run_id

    def close(self) -> None:
        """Close the connection (every record is already committed; the journal cannot be used after)."""
        self._finalizer()

    def get(self, digest: str) -> LessonSet | None:
        found = self._one("analyses", digest)
        return LessonSet.model_validate_json(found) if found is not None else None

    def put(self, digest: str, lessons: LessonSet) -> None:
        """Record a successful analysis (never call this for a failed one)."""
        self._record("analyses", digest, lessons.model_dump_json())

    def get_merge(self, key: str) -> LessonSet | None:
        found = self._one("merges", key)
        return LessonSet.model_validate_json(found) if found is not None else None

    def put_merge(self, key: str, merged: LessonSet) -> None:
        """Record a merge whose model calls all succeeded."""
        self._record("merges", key, merged.model_dump_json())

    def get_verdict(self, key: str) -> list[str] | None:
        """A held-out judge's verdict (the rule ids it cited), by `evaluate.verdict_key`."""
        with self._lock:
            row = self._db.execute("SELECT rule_ids FROM verdicts WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_verdict(self, key: str, rule_ids: list[str]) -> None:
        """Record a judge call that succeeded (its key covers everything the answer depends on)."""
        with self._lock, self._db:  # committed at once: a judge call is slow next to a commit
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(sorted(rule_ids))))

    def analysed(self) -> set[str]:
        """Digests of the traces analysed successfully under this run's scope (by any run)."""
        with self._lock:
            return {key for table, key in self._known if table == "analyses"}

    def merges_done(self) -> int:
        with self._lock:
            return sum(1 for table, _ in self._known if table == "merges")

    def forget(self, digests: Iterable[str] = ()) -> None:
        """Drop this run's merges, and the analyses of `digests` (its trajectories, under any
        scope), once its result is safely committed."""
        with self._lock, self._db:
            self._known.clear()
            self._db.executemany("DELETE FROM analyses WHERE trace = ?", ((d,) for d in digests))
            self._db.execute("DELETE FROM merges WHERE run = ?", (self.run_id,))
