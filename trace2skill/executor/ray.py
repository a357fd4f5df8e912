"""The Ray executor: the map stage (read, redact, analyse) of each shard on a Ray cluster.

Install it with `pip install 'trace2skill[ray]'` (on the driver and on every worker node) and run
`distill --executor ray [--ray-address ADDR]`: without an address a private local Ray is started
with this machine's CPUs; `auto` joins the cluster this machine belongs to, `ray://HOST:10001` a
remote one. Ray is imported only here, and only when asked for.

What crosses the wire, and what does not:

- a worker gets a *shard* (`stream.Shard`: a trace file, an archive counting as one) by its path,
  never its bytes: the traces must be readable at the same path on every node (a shared file
  system or the same copy);
- it sends back, per trajectory, its lessons, its index entry and its usage; consolidation,
  authoring and publishing run on the driver as on one machine, so the skill is byte-identical;
- workers never write the state folder: the driver journals each analysis as it arrives, so a
  rerun after a failure pays only for what had not come back (the journal's digests go out to
  the workers, who skip those trajectories);
- the model path's caps are global: every request on every worker reserves its call and its
  worst-case cost from one `BudgetKeeper` actor before it is sent, and waits there for the rate
  limit, so `--max-calls`, `--budget` and `llm.rate_limit` hold for the run as a whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from ..budget import Meter, meter_of
from ..config import BudgetConfig, Config
from ..errors import (BudgetExceeded, ConfigError, Interrupted, LLMError, LLMRequestsBlocked, ProviderRejected, ProviderUnavailable,
                      RateLimited)
from ..llm import CallCounter, count_calls, wrappers
from ..llm.retry import RateLimiter
from ..stream import Corpus, Packed, Shard, ShardJob, ShardResult, index_entry, iter_shard, run_shard
from ..types import LessonSet, Skip, Trace, Usage
from .base import ExecutorName

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

    from ..analyse import ModelAnalyst
    from ..fleet import FailureStreak, Tick, Work
    from ..llm import LLMClient

T = TypeVar("T")
NOT_ANALYSED = "not analysed: the run stopped"

INSTALL = "pip install 'trace2skill[ray]'"
LOCAL = "local"
"""`--ray-address` default: start a private Ray on this machine (never join someone else's)."""


def require_ray() -> ModuleType:
    """The `ray` module.

    Raises:
        ConfigError: Ray is not installed (exit 78), naming the command that installs it.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which cannot be imported here ({exc}); install it with {INSTALL}") from None
    return ray


def connect(address: str | None = None) -> ModuleType:
    """Ray, connected: a Ray this process already joined is used as it is; otherwise `address`
    is joined (`auto`, `ray://HOST:PORT`) or, when None or `local`, a private local Ray with this
    machine's CPUs is started. It stays up for the rest of the process (Ray shuts it down at
    exit), so the run's passes and a refresh's runs start it once (6-20 s here).

    Raises:
        ConfigError: Ray is not installed, or no cluster answers at `address`.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    local = address in (None, LOCAL)
    options = dict(num_cpus=os.cpu_count() or 1, include_dashboard=False, runtime_env=_same_code()) if local else {}
    try:
        ray.init(address=LOCAL if local else address, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot connect to Ray at {address or LOCAL!r}: {' '.join(str(exc).split())}") from None
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[ModuleType]:
    """`connect`, shut down after the block unless Ray was already up (tests start one per module)."""
    started = not require_ray().is_initialized()
    ray = connect(address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _same_code() -> dict[str, dict[str, str]]:
    """A local Ray's workers import this very copy of trace2skill (the driver may be running it
    from a checkout that is not installed), ahead of anything on their own path."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@dataclass(frozen=True)
class Stop:
    """Why a worker stopped the run: the error's class name (one of `STOPS`) and message."""

    kind: str
    message: str

    @classmethod
    def of(cls, exc: Exception) -> Stop:
        return cls(type(exc).__name__, str(exc))

    def error(self) -> Exception:
        """The error again, on the driver, with its exit code."""
        return STOPS.get(self.kind, LLMError)(self.message)


STOPS: dict[str, type[Exception]] = {cls.__name__: cls for cls in (BudgetExceeded, LLMRequestsBlocked, ProviderRejected,
                                                                   RateLimited, ProviderUnavailable, LLMError, Interrupted)}
"""The errors that stop a run (`fleet.fatal`, the failure streak's `ProviderUnavailable`, a drain)."""


@dataclass(frozen=True)
class Reservation:
    """The budget actor's answer to one request: its reserved cost, or why it may not be sent."""

    cost: float = 0.0
    refused: str = ""


class BudgetKeeper:
    """The run's one `Meter` and one `RateLimiter`, held in a Ray actor every worker calls.

    It starts from what the driver has already spent (the preflight request), and the driver
    carries its totals back (`Meter.carry`) before the merges, so the caps cover the whole run.
    """

    def __init__(self, budget: BudgetConfig, price: tuple[float, float] | None, calls: int, spent: float,
                 requests: int | None, tokens: int | None):
        self.meter = Meter(budget, price)
        self.meter.carry(calls, spent)
        self.limiter = RateLimiter(requests, tokens)
        self.stopped: Stop | None = None

    def price(self) -> tuple[float, float] | None:
        return self.meter.price

    def reserve(self, tokens_in: int, tokens_out: int) -> Reservation:
        """Take one call from the caps; once a worker has stopped the run, refuse every request."""
        if self.stopped is not None:
            return Reservation(refused=f"not sent: the run stopped ({self.stopped.message})")
        try:
            return Reservation(cost=self.meter.reserve(tokens_in, tokens_out))
        except BudgetExceeded as exc:
            return Reservation(refused=str(exc))

    def stop(self, cause: Stop) -> None:
        """Record the first error that stops the run (`fleet.fatal`); later ones are its echoes."""
        self.stopped = self.stopped or cause

    def cause(self) -> Stop | None:
        return self.stopped

    def settle(self, reserved: float, cost: float | None) -> None:
        self.meter.settle(reserved, cost)

    async def acquire(self, tokens: int) -> None:
        await self.limiter.acquire(tokens)

    def totals(self) -> tuple[int, float]:
        """Calls made and dollars spent so far, the driver's share included."""
        return self.meter.calls, self.meter.spent


def start_keeper(ray: ModuleType, config: Config, driver: Meter | None) -> ActorHandle:
    """The run's budget actor, starting from the driver meter's totals (none offline)."""
    keeper = ray.remote(num_cpus=0, max_concurrency=1000)(BudgetKeeper)
    price = driver.price if driver is not None else None
    calls, spent = (driver.calls, driver.spent) if driver is not None else (0, 0.0)
    rate = config.llm.rate_limit
    return keeper.remote(config.budget, price, calls, spent, rate.requests, rate.tokens)


def carry_back(ray: ModuleType, keeper: ActorHandle, driver: Meter) -> None:
    """Add what the workers spent to the driver's meter, which then caps the merges."""
    calls, spent = ray.get(keeper.totals.remote())
    driver.carry(calls - driver.calls, spent - driver.spent)


class RemoteMeter:
    """`llm.backend.CostMeter` on a worker: each reservation is made by the run's `BudgetKeeper`.

    `reserve` is synchronous, as the meter's contract is (one round trip, about 2 ms locally),
    so no two workers can both take the last call.
    """

    def __init__(self, keeper: ActorHandle, price: tuple[float, float] | None):
        self.keeper = keeper
        self.price = price

    def price_of(self, tokens_in: int, tokens_out: int) -> float | None:
        return None if self.price is None else tokens_in * self.price[0] + tokens_out * self.price[1]

    def reserve(self, tokens_in: int, tokens_out: int) -> float:
        import ray

        answer: Reservation = ray.get(self.keeper.reserve.remote(tokens_in, tokens_out))
        if answer.refused:
            raise BudgetExceeded(answer.refused)
        return answer.cost

    def settle(self, reserved: float, cost: float | None) -> None:
        import ray

        ray.get(self.keeper.settle.remote(reserved, cost))


class RemoteLimiter:
    """`llm.backend.Limiter` on a worker: waits on the run's one rate limiter, in the budget actor."""

    def __init__(self, keeper: ActorHandle):
        self.keeper = keeper

    async def acquire(self, tokens: int) -> None:
        await self.keeper.acquire.remote(tokens)


def worker_llm(config: Config, keeper: ActorHandle) -> LLMClient | None:
    """The model client a worker analyses with, under the run's shared caps (None offline).

    The worker resolves the provider's key from its own environment, as the driver does; keys
    are never sent through Ray.
    """
    import ray

    from ..budget import with_budget
    from ..llm import build_llm

    client = build_llm(config)
    if client is None:
        return None
    price = ray.get(keeper.price.remote())
    return with_budget(client, config, RemoteMeter(keeper, price), RemoteLimiter(keeper))


def carry_usage(client: LLMClient, usage: Usage) -> None:
    """Add the workers' usage to the driver's client, so the run's summary counts every call
    (on the innermost client that keeps it: wrappers only pass `usage` through)."""
    target = next(c for c in wrappers(client) if not isinstance(getattr(type(c), "usage", None), property)
                  or getattr(c, "inner", None) is None)
    setattr(target, "usage", getattr(target, "usage") + usage)


# -- the executor ---------------------------------------------------------------------------------


def run_batch(shards: list[Shard], job: ShardJob) -> list[ShardResult]:
    """`stream.run_shard` over consecutive shards, in one Ray task (fewer, larger tasks)."""
    return [run_shard(shard, job) for shard in shards]


@dataclass
class ModelBatch:
    """What a worker's model-path task sends back: one result per shard, its usage, and the
    error that stopped the run, if it saw one."""

    results: list[ShardResult]
    usage: Usage = field(default_factory=Usage)
    calls: dict[str, int] = field(default_factory=dict)
    """Calls per purpose (the report's calls per stage)."""
    stopped: Stop | None = None


class RayExecutor:
    """The map stage as Ray tasks; results come back in shard order (see the module docstring).

    `workers` is how many tasks are in flight at once; 1 (the default) means as many as the
    cluster has CPUs. On the model path `analyse.concurrency` is the run's total, split across
    the tasks in flight.
    """

    name: ExecutorName = "ray"

    def __init__(self, workers: int, address: str | None = None):
        require_ray()
        self.workers = workers
        self.address = address
        self._keeper: ActorHandle | None = None

    def stop(self, cause: Exception) -> None:
        """Stop the model path on every worker (a drain): no new request is sent, those in
        flight finish and come back, then `map` raises `cause`."""
        if self._keeper is not None:
            connect(self.address).get(self._keeper.stop.remote(Stop.of(cause)))

    def _window(self, ray: ModuleType) -> int:
        if self.workers > 1:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, shards: Sequence[Shard], job: ShardJob, client: LLMClient | None = None) -> Iterator[ShardResult]:
        """One result per shard, in the order of `shards`.

        With `job.analysis == "llm"`, `client` is the driver's model client: the workers' caps
        start from its meter and their calls, spend and usage are added back to it at the end.

        Raises:
            BudgetExceeded, ProviderRejected, ...: a worker stopped the run (after every result
                that came back has been yielded, so the driver can journal it).
        """
        ray = connect(self.address)
        window = self._window(ray)
        if job.analysis == "llm":
            if client is None:
                raise ValueError("the model path on Ray needs the driver's client")
            yield from self._map_model(ray, shards, job, client, window)
            return
        task = ray.remote(run_batch)
        job_ref = ray.put(job)
        size = max(1, min(16, len(shards) // (window * 4)))
        refs = (task.remote(list(shards[i:i + size]), job_ref) for i in range(0, len(shards), size))
        for batch in in_order(ray, refs, 2 * window):
            yield from batch

    def _map_model(self, ray: ModuleType, shards: Sequence[Shard], job: ShardJob, client: LLMClient,
                   window: int) -> Iterator[ShardResult]:
        """`window` tasks run at once (each takes a share of the CPUs: they wait on the model),
        each analysing its shards `analyse.concurrency / window` at a time; as many again wait queued."""
        driver = meter_of(client)
        keeper = self._keeper = start_keeper(ray, job.config, driver if isinstance(driver, Meter) else None)
        each = max(1, -(-job.config.analyse.concurrency // window))
        cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1)) / window)
        task = ray.remote(num_cpus=cpus)(run_model_batch)
        job_ref = ray.put(job)
        refs = (task.remote(list(shards[i:i + each]), job_ref, keeper, each) for i in range(0, len(shards), each))
        usage, calls = Usage(), Counter()
        try:
            for batch in in_order(ray, refs, 2 * window):
                usage = usage + batch.usage
                calls.update(batch.calls)
                yield from batch.results
            cause: Stop | None = ray.get(keeper.cause.remote())
        finally:
            if isinstance(driver, Meter):
                carry_back(ray, keeper, driver)
            carry_usage(client, usage)
            count_calls(client, dict(calls))
            ray.kill(keeper)
            self._keeper = None
        if cause is not None:
            raise cause.error()

    def close(self) -> None:
        """Nothing to release: Ray stays up for the process's next pass (see `connect`)."""


def in_order(ray: ModuleType, refs: Iterator[ObjectRef[T]], window: int) -> Iterator[T]:
    """The values of `refs`, in their order, with at most `window` tasks submitted and not yet
    read (the oldest is read first, so results never depend on which task finished first)."""
    pending: deque[ObjectRef[T]] = deque()
    for ref in refs:
        pending.append(ref)
        if len(pending) >= window:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())


# -- the model path on a worker -------------------------------------------------------------------


def run_model_batch(shards: list[Shard], job: ShardJob, keeper: ActorHandle, concurrency: int) -> ModelBatch:
    """Read consecutive shards and run the model analyst on their traces, `concurrency` at a
    time, every request under the run's shared caps. Traces the journal holds (`job.recorded`)
    are indexed, not analysed; the driver fills in their lesson sets."""
    from ..analyse import ModelAnalyst

    client = worker_llm(job.config, keeper)
    if client is None:
        raise ValueError("the model path on Ray needs a model")
    counted = CallCounter(client)
    analyst = ModelAnalyst(counted, job.config, job.existing)
    batch = ModelBatch([ShardResult(shard) for shard in shards])
    asyncio.run(_analyse(batch, job, analyst, keeper, concurrency))
    batch.usage, batch.calls = client.usage, counted.calls
    return batch


async def _analyse(batch: ModelBatch, job: ShardJob, analyst: ModelAnalyst, keeper: ActorHandle, concurrency: int) -> None:
    """Every trace of the batch's shards, in stream order, at most `concurrency` analyses at once."""
    from ..fleet import FailureStreak

    streak = FailureStreak()
    running: set[asyncio.Task[None]] = set()
    try:
        for into in batch.results:
            for trace in iter_shard(into.shard, job, into):
                seq = len(into.entries)
                into.entries.append(index_entry(trace, into.shard.order, seq, job))
                into.lessons.append(Packed.of(LessonSet(sources=(trace.id,))))
                if into.entries[-1].digest in job.recorded:
                    continue
                if len(running) >= concurrency:
                    _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.add(asyncio.create_task(_analyse_one(trace, into, seq, batch, analyst, keeper, streak)))
        if running:
            await asyncio.wait(running)
    finally:
        from ..llm import close_clients

        await close_clients()


async def _analyse_one(trace: Trace, into: ShardResult, seq: int, batch: ModelBatch, analyst: ModelAnalyst,
                       keeper: ActorHandle, streak: FailureStreak) -> None:
    """One analysis; a failure is recorded (retried by the next run), an error every later request
    would share stops the run on every worker (`fleet.fatal`, as on one machine)."""
    from ..fleet import fatal

    if batch.stopped is not None:
        into.failed.append(Skip(path=trace.id, record=None, reason=NOT_ANALYSED))
        return
    try:
        lessons = await analyst.analyse(trace)
    except (LLMError, BudgetExceeded) as exc:
        stop = exc if fatal(exc) else _streak(streak, exc)
        if stop is not None:
            batch.stopped = batch.stopped or Stop.of(stop)
            await keeper.stop.remote(Stop.of(stop))
            into.failed.append(Skip(path=trace.id, record=None, reason=NOT_ANALYSED))
        else:
            into.failed.append(Skip(path=trace.id, record=None, reason=f"analysis failed: {exc}"))
        return
    streak.succeeded()
    into.lessons[seq] = Packed.of(lessons)


def _streak(streak: FailureStreak, exc: LLMError | BudgetExceeded) -> LLMError | None:
    """The error that stops the run after too many identical failures in a row, else None."""
    if not isinstance(exc, LLMError):
        return None
    try:
        streak.failed(exc)
    except LLMError as stopped:
        return stopped
    return None


# -- the model path's driver side -----------------------------------------------------------------


def analyse_remote(work: Work, corpus: Corpus, config: Config, tick: Tick | None = None) -> list[Packed | None]:
    """The model path's analyses on Ray: the corpus's shards read again on the workers, each
    trajectory the index kept analysed there (those the journal holds are not), under the run's
    shared caps; each lesson set journaled here as it comes back, so a rerun resumes.

    Returns the level-0 lesson sets in stream order (None where the run stopped first), for
    `fleet.merge_ready`. Failed analyses go to `work.failed`, as on one machine.

    Raises:
        BudgetExceeded, ProviderRejected, ...: a worker stopped the run (everything that came
            back is journaled first).
    """
    from ..analyse import ModelAnalyst

    analyst = work.analyst
    if not isinstance(analyst, ModelAnalyst):
        raise ValueError("only the model analyst runs on Ray workers; the offline one runs in the map stage")
    order = corpus.in_stream_order()
    position = {e.id: i for i, e in enumerate(order)}
    digests = {e.id: e.digest for e in order}
    recorded = frozenset(work.journal.analysed()) & frozenset(digests.values()) if work.journal is not None else frozenset()
    job = ShardJob(config, corpus.labels, "llm", wanted=frozenset(digests.values()), renamed=corpus.renamed,
                   existing=tuple(analyst.existing), recorded=recorded)
    ready: list[Packed | None] = [None] * len(order)
    executor = RayExecutor(config.analyse.workers or 1, config.analyse.ray_address)
    for result in executor.map(corpus.shards_of(order), job, client=analyst.llm):
        if work.control is not None and work.control.drain_requested:
            executor.stop(Interrupted("interrupted (run drained on request); rerun the same command to resume"))
        taken = _take(result, ready, position, digests, job, work)
        if tick is not None and taken:
            tick("analyse", taken)
    return ready


def _take(result: ShardResult, ready: list[Packed | None], position: dict[str, int], digests: dict[str, str],
          job: ShardJob, work: Work) -> int:
    """Place one shard's lesson sets at their stream positions (the first copy of a trace read
    twice wins, as when the driver reads them), journaling each new success. Returns how many."""
    failed = {s.path: s for s in result.failed}
    taken = 0
    for entry, packed in zip(result.entries, result.lessons):
        spot = position.get(entry.id)
        if spot is None or digests[entry.id] != entry.digest or ready[spot] is not None:
            continue
        failure = failed.get(entry.id)
        if failure is not None and failure.reason == NOT_ANALYSED:
            continue
        if entry.digest in job.recorded and work.journal is not None:
            recorded = work.journal.get(entry.digest)
            packed = Packed.of(recorded) if recorded is not None else packed
        elif failure is not None:
            work.failed.append(failure)
        elif work.journal is not None:
            work.journal.put(entry.digest, packed.unpack())
        ready[spot] = packed
        taken += 1
    return taken
