"""The map stage in worker processes (`--executor process --workers N`).

The job is sent once per worker (pool initializer), the shards one by one; `imap` returns
results in shard order whatever order the workers finish in, so the run is the same as the
local executor's. Workers start with `spawn`-safe arguments only (`stream.run_shard` is a
top-level function, the job a frozen dataclass).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from multiprocessing.pool import Pool

from ..stream import Shard, ShardJob, ShardResult, run_shard
from .base import ExecutorName

_JOB: ShardJob | None = None


def _start(job: ShardJob) -> None:
    global _JOB
    _JOB = job


def _run(shard: Shard) -> ShardResult:
    assert _JOB is not None, "worker started without its job"
    return run_shard(shard, _JOB)


class ProcessExecutor:
    """`workers` processes; with 1 worker it is the local executor (no process is started)."""

    name: ExecutorName = "process"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: Pool | None = None

    def map(self, shards: Sequence[Shard], job: ShardJob) -> Iterator[ShardResult]:
        if self.workers == 1 or len(shards) <= 1:
            yield from (run_shard(shard, job) for shard in shards)
            return
        self.close()
        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        self._pool = context.Pool(self.workers, initializer=_start, initargs=(job,))
        chunk = max(1, min(16, len(shards) // (self.workers * 8)))
        try:
            yield from self._pool.imap(_run, shards, chunksize=chunk)
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
