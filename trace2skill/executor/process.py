"""The map stage in worker processes (`--executor process --workers N`, and the model path's
reading and prompt preparation, which keep the driver's interpreter free for requests).

The job is sent once per worker (pool initializer), the shards one by one; results come back
in shard order whatever order the workers finish in, so the run is the same as the local
executor's. Workers start with `spawn`-safe arguments only (`stream.run_shard` is a top-level
function, the job a frozen dataclass) from a fork server that has already imported the
modules a worker needs (`PRELOAD`), so a pool starts in milliseconds once the server is up.
On the model path the server is started when the executor is made, before the run reads
anything (the CLI makes it first), and it also loads the tokenizer and templates (`WARM`):
its imports then overlap the driver's own, and the prompt pass's workers start warm.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.context import BaseContext
from multiprocessing.pool import AsyncResult, Pool
from typing import TYPE_CHECKING

from .base import ExecutorName

if TYPE_CHECKING:
    from ..stream import Shard, ShardJob, ShardResult

_JOB: ShardJob | None = None
PRELOAD = ["trace2skill.stream", "trace2skill.prepare", "trace2skill.compress", "trace2skill.executor.process"]
"""Imported once by the fork server (not by the driver): what reading and preparing prompts need."""
WARM = "trace2skill.executor.warm"
"""Also preloaded on the model path: the tokenizer and the analyst's templates."""


def _start(job: ShardJob) -> None:
    global _JOB
    _JOB = job


def _run(shard: Shard) -> ShardResult:
    from ..stream import run_shard

    assert _JOB is not None, "worker started without its job"
    return run_shard(shard, _JOB)


def _context(warm: bool) -> BaseContext:
    """The fork server's context, the server started (it imports `PRELOAD`, and `WARM` when
    `warm`, in its own process; this returns at once). Where there is no fork server, `spawn`.
    A server already running keeps the modules it was started with."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD + [WARM] if warm else PRELOAD)
    forkserver.ensure_running()
    return context


class ProcessExecutor:
    """`workers` processes; with 1 worker and `inline` it is the local executor (no process is
    started). The model path asks for `inline=False`: one worker process is the point there."""

    name: ExecutorName = "process"

    def __init__(self, workers: int, inline: bool = True):
        self.workers = workers
        self.inline = inline
        self._pool: Pool | None = None
        self._server = None if inline else _context(warm=True)

    def map(self, shards: Sequence[Shard], job: ShardJob, ahead: int | None = None) -> Iterator[ShardResult]:
        """`run_shard` over `shards`, in their order. `ahead` bounds the shards submitted and not
        yet taken by the caller (memory stays bounded when the caller is slower than the
        workers); None lets the pool run through them all."""
        if self.inline and (self.workers == 1 or len(shards) <= 1):
            from ..stream import run_shard

            yield from (run_shard(shard, job) for shard in shards)
            return
        self.close()
        context = self._server or _context(warm=False)
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
