"""The model path's analyst prompts, prepared ahead of the requests, off the driver.

An analysis costs the driver's interpreter two things: its prompt (read the trajectory again,
redact, compress, tokenise, render: about 20 ms of CPU a trajectory) and its request (litellm
and httpx: about 10 ms). At concurrency 32 and half a second a request, one interpreter
cannot do both: requests would wait for prompts. So the prompts are prepared in the
executor's worker processes (`stream.run_shard` with the `prompt` job: `prepare.prepare` of
each trace), shard after shard in stream order, and come back as text (`prepare.Prepared`:
the messages and the step texts a reply's quotes are checked against, never the trace).
They are made ahead of the free request slots, but at most `ahead` shards ahead, about twice
the concurrency in prompts, so memory follows the concurrency, not the corpus. Trajectories
whose analysis the journal holds get no prompt (`ShardJob.recorded`).

Traces already in memory (the refresh job, held-out folds) are prepared in the driver's
worker threads instead (`in_memory`).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from .prepare import Prepared, prepare
from .config import Config
from .errors import ContextTooLong
from .executor import Executor
from .rules import RuleRecord
from .stream import Corpus, Shard, ShardJob, ShardResult, iter_shard
from .types import Trace

THREADS = 4
"""Threads that prepare traces already in memory."""


def prompts(corpus: Corpus, config: Config, executor: Executor, existing: Sequence[RuleRecord],
            recorded: Iterable[str] = ()) -> Iterator[Prepared]:
    """The prepared prompt of every trajectory the index kept, in stream order, each id once
    (the first copy read, as the index has it); `recorded` digests come without a prompt."""
    wanted = {e.id: e.digest for e in corpus.entries}
    shards = corpus.shards_of(corpus.entries)
    job = ShardJob(config, corpus.labels, "prompt", wanted=frozenset(wanted.values()), renamed=corpus.renamed,
                   existing=tuple(existing), recorded=frozenset(recorded))
    for result in executor.map(shards, job, ahead=lookahead(len(wanted), len(shards), config, executor.workers)):
        for prepared in result.prompts:
            if wanted.pop(prepared.id, None) == prepared.digest:
                yield replace(prepared, redo=functools.partial(again, result.shard, job, prepared.digest))


def lookahead(trajectories: int, shards: int, config: Config, workers: int) -> int:
    """Shards prepared ahead of the requests: about twice `analyse.concurrency` prompts, and at
    least two per worker so none waits."""
    per_shard = max(1, trajectories // max(1, shards))
    return max(2 * workers, -(-2 * config.analyse.concurrency // per_shard))


def again(shard: Shard, job: ShardJob, digest: str, budget: int) -> Prepared:
    """One trajectory of `shard` prepared again at `budget` tokens (after a context-length
    refusal; rare, so read in the driver's worker thread).

    Raises:
        ContextTooLong: the shard no longer holds the trajectory (changed during the run), so
            the refusal stands: the analysis fails and the next run retries it.
    """
    for trace in iter_shard(shard, replace(job, wanted=frozenset({digest})), ShardResult(shard)):
        return prepare(trace, job.config, job.existing, budget)
    raise ContextTooLong(f"the prompt was too long, and {shard.path} no longer holds the trajectory to shorten it")


def in_memory(traces: Iterable[Trace], config: Config, existing: Sequence[RuleRecord],
              recorded: Iterable[str] = ()) -> Iterator[Prepared]:
    """`traces` prepared where they are, in a few threads (tokenising releases the GIL), at
    most twice `analyse.concurrency` ahead of the caller."""
    held = frozenset(recorded)

    def one(trace: Trace) -> Prepared:
        digest = trace.digest()
        return Prepared(trace.id, digest, trace.outcome, None) if digest in held else prepare(trace, config, existing)

    with ThreadPoolExecutor(THREADS, thread_name_prefix="trace2skill-prepare") as pool:
        pending: deque[Future[Prepared]] = deque()
        for trace in traces:
            pending.append(pool.submit(one, trace))
            if len(pending) >= 2 * config.analyse.concurrency:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
