"""The map stage in worker processes (`--executor process --workers N`, and the model path's
reading and prompt preparation, which keep the driver's interpreter free for requests).

The job is sent once per worker (pool initializer), the shards one by one; results come back
in shard order whatever order the workers finish in, so the run is the same as the local
executor's. Workers start with `spawn`-safe arguments only (`stream.run_shard` is a top-level
function, the job a frozen dataclass) from a fork server that has already imported the
modules a worker needs (`PRELOAD`), so a pool starts in milliseconds once the server is up.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.pool import AsyncResult, Pool

from ..stream import Shard, ShardJob, ShardResult, run_shard
from .base import ExecutorName

_JOB: ShardJob | None = None
PRELOAD = ["trace2skill.stream", "trace2skill.prepare", "trace2skill.compress", "trace2skill.executor.process"]
"""Imported once by the fork server (not by the driver): what reading and preparing prompts need."""


def _start(job: ShardJob) -> None:
    global _JOB
    _JOB = job


def _run(shard: Shard) -> ShardResult:
    assert _JOB is not None, "worker started without its job"
    return run_shard(shard, _JOB)


class ProcessExecutor:
    """`workers` processes; with 1 worker and `inline` it is the local executor (no process is
    started). The model path asks for `inline=False`: one worker process is the point there."""

    name: ExecutorName = "process"

    def __init__(self, workers: int, inline: bool = True):
        self.workers = workers
        self.inline = inline
        self._pool: Pool | None = None

    def map(self, shards: Sequence[Shard], job: ShardJob, ahead: int | None = None) -> Iterator[ShardResult]:
        """`run_shard` over `shards`, in their order. `ahead` bounds the shards submitted and not
        yet taken by the caller (memory stays bounded when the caller is slower than the
        workers); None lets the pool run through them all."""
        if self.inline and (self.workers == 1 or len(shards) <= 1):
            yield from (run_shard(shard, job) for shard in shards)
            return
        self.close()
        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload(PRELOAD)
        self._pool = pool = context.Pool(min(self.workers, max(1, len(shards))), initializer=_start, initargs=(job,))
        try:
            if ahead is None:
                yield from pool.imap(_run, shards, chunksize=max(1, min(16, len(shards) // (self.workers * 8))))
                return
            pending: deque[AsyncResult[ShardResult]] = deque()
            for shard in shards:
                pending.append(pool.apply_async(_run, (shard,)))
                if len(pending) >= ahead:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
