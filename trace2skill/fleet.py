"""The model path's analysis fleet: trajectories streamed through the analysts, merges started
as soon as their group is analysed, and the run's failure policy.

Trajectories come one at a time as prepared prompts (`prefetch`: read and compressed in
worker processes, ahead of the requests); at most `analyse.concurrency` analyses and merges
are in flight, and the next prompt is taken when a slot frees, so a run holds about twice
`concurrency` prompts and no trajectory, whatever the corpus size. Level-1 merge groups are
fixed before the first call: `fan_in` consecutive trajectories in stream order (`consolidate.chunk` over the positions), so a group's merge
starts the moment its last analysis lands and never depends on completion order. Higher
levels run in the consolidation graph (`graph`).

Failure policy: one trajectory whose analysis fails is recorded in `failed` and the run goes on
(exit 3, retried by the next run). A refusal that every later request would share (key,
permission, model, parameters, rate limits that outlast the retries, a budget cap) halts the
run, and so does a run of `STOP_AFTER` identical provider errors, so a broken provider costs a
handful of requests, not one per trajectory. Halting sends nothing new but lets requests
already in flight finish and be journaled (cancelling them would waste what the cap allowed);
no merge starts once halted and `Halt.raise_if_halted` re-raises the first cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .analyse import Analyst
from .consolidate import chunk, merge_sets
from .errors import (BudgetExceeded, ContextTooLong, Interrupted, LessonParseError, LLMError, LLMRequestsBlocked,
                     ProviderRejected, ProviderUnavailable, RateLimited)
from .journal import AnalysisJournal
from .prepare import Prepared
from .stream import Packed
from .types import LessonSet, Skip, content_hash

if TYPE_CHECKING:
    from langgraph.runtime import RunControl

STOP_AFTER = 5
"""Identical consecutive analysis errors after which the run stops instead of trying every trace."""

Tick = Callable[[str, int], None]
"""Told `(stage, how many finished)` as analyses (`analyse`) and merges (`merge`) finish."""


class FailureStreak:
    """Stops the run after `limit` consecutive analysis errors with the same message."""

    def __init__(self, limit: int = STOP_AFTER):
        self.limit, self.last, self.count = limit, "", 0

    def failed(self, exc: LLMError) -> None:
        if not isinstance(exc, ProviderUnavailable):
            self.last, self.count = "", 0
            return
        message = f"{type(exc).__name__}: {exc}"
        self.count = self.count + 1 if message == self.last else 1
        self.last = message
        if self.count >= self.limit:
            raise type(exc)(f"stopped after {self.count} identical errors in a row: {exc}") from exc

    def succeeded(self) -> None:
        self.last, self.count = "", 0


class Halt:
    """The first error that stops the run; analysts check it before sending anything."""

    def __init__(self) -> None:
        self.cause: Exception | None = None

    def stop(self, exc: Exception) -> None:
        self.cause = self.cause or exc

    def raise_if_halted(self) -> None:
        if self.cause is not None:
            raise self.cause


def fatal(exc: Exception) -> bool:
    """Errors every later request would share: the run stops instead of recording a failure."""
    if isinstance(exc, ContextTooLong):
        return False
    return isinstance(exc, (BudgetExceeded, LLMRequestsBlocked, ProviderRejected, RateLimited))


class DrainSwitch:
    """A run's request to stop at the next safe point (SIGTERM), which the fleet reads without
    importing LangGraph (about a second of CPU beside the index pass the first analysis waits
    for); the consolidation graph gets a LangGraph `RunControl` that follows it (`for_graph`)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._controls: list[RunControl] = []

    def request_drain(self, reason: str = "shutdown") -> None:
        self.reason = reason
        for control in self._controls:
            control.request_drain(reason)

    @property
    def drain_requested(self) -> bool:
        return self.reason is not None

    def for_graph(self) -> RunControl:
        """A `RunControl` drained now if the run is, and whenever the run is from now on."""
        from langgraph.runtime import RunControl

        control = RunControl()
        if self.reason is not None:
            control.request_drain(self.reason)
        self._controls.append(control)
        return control


@dataclass
class Work:
    """One run's analyst with its journal, stop switch and failure policy; used by the fleet
    (analyses, level-1 merges) and the consolidation graph (higher merges)."""

    analyst: Analyst
    journal: AnalysisJournal | None = None
    control: RunControl | DrainSwitch | None = None
    halt: Halt = field(default_factory=Halt)
    streak: FailureStreak = field(default_factory=FailureStreak)
    failed: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things the summary must say (a merge that fell back to the deterministic merge)."""

    async def analyse(self, trace: Prepared) -> LessonSet | None:
        """The lesson set of one trajectory (journaled when it was paid for), an empty one for a
        failed analysis (recorded in `failed`), or None when the run has stopped."""
        digest = trace.digest if self.journal is not None else ""
        recorded = self.journal.get(digest) if self.journal is not None else None
        if recorded is not None:
            return recorded
        if self.control is not None and self.control.drain_requested and self.halt.cause is None:
            self.halt.stop(Interrupted("interrupted (run drained on request); rerun the same command to resume"))
        if self.halt.cause is not None:
            return None
        try:
            lessons = await self.analyst.analyse_prepared(trace)
        except (LLMError, BudgetExceeded) as exc:
            return self._failed(trace, exc)
        self.streak.succeeded()
        if self.journal is not None:
            self.journal.put(digest, lessons)
        return lessons

    def _failed(self, trace: Prepared, exc: Exception) -> LessonSet | None:
        """Record one failed analysis (retried by the next run), or halt the run."""
        if fatal(exc):
            self.halt.stop(exc)
            return None
        try:
            self.streak.failed(exc)
        except LLMError as stopped:
            self.halt.stop(stopped)
            return None
        self.failed.append(Skip(path=trace.id, record=None, reason=f"analysis failed: {exc}"))
        return LessonSet(sources=(trace.id,))

    async def merge(self, group: list[Packed], level: int) -> Packed:
        """One merge of a group (sorted by key), journaled; an unusable model reply falls back
        to the deterministic merge and says so in `notes`. Unpacking and packing run in a worker
        thread: at the top of the tree they are a tenth of a second each, which the event loop
        (the other merges' calls) would otherwise wait for."""
        group = sorted(group, key=lambda p: p.key)
        key = content_hash([level, [p.key for p in group]])
        recorded = self.journal.get_merge(key) if self.journal is not None else None
        if recorded is not None:
            return Packed.of(recorded)
        sets = await asyncio.to_thread(lambda: [p.unpack() for p in group])
        try:
            merged = await self.analyst.merge(sets, level)
        except LessonParseError as exc:
            self.notes.append(f"a merge at level {level} used the deterministic merge: the model's reply was unusable ({exc})")
            return Packed.of(merge_sets(sets, level))
        if self.journal is not None:
            self.journal.put_merge(key, merged)
        return await asyncio.to_thread(Packed.of, merged)


async def analyse_stream(work: Work, traces: Iterator[Prepared], position: Mapping[str, int], fan_in: int,
                         concurrency: int, tick: Tick | None = None) -> list[Packed]:
    """Analyse the prepared `traces` (each id's stream position in `position`, 0..n-1) with at most
    `concurrency` calls in flight, merging each level-1 group as soon as it is complete.

    Returns the level-1 pool (the lone level-0 set when there is one trace; nothing once halted).
    """
    n = len(position)
    groups = chunk(list(range(n)), fan_in) if n > 1 else []
    group_of = {p: g for g, members in enumerate(groups) for p in members}
    slots = asyncio.Semaphore(concurrency)
    done: dict[int, Packed] = {}
    merged: dict[int, Packed] = {}
    tasks: set[asyncio.Task[None]] = set()
    lone: list[Packed] = []
    errors: list[BaseException] = []

    async def merge(g: int) -> None:
        try:
            if work.halt.cause is None:
                merged[g] = await work.merge([done.pop(p) for p in groups[g]], 1)
                if tick is not None:
                    tick("merge", 1)
        finally:
            slots.release()

    async def analyse(trace: Prepared) -> None:
        try:
            lessons = await work.analyse(trace)
        finally:
            slots.release()
        if tick is not None:
            tick("analyse", 1)
        if lessons is None:
            return
        spot = position[trace.id]
        done[spot] = Packed.of(lessons)
        if n == 1:
            lone.append(done.pop(spot))
            return
        g = group_of[spot]
        if all(p in done for p in groups[g]):
            await slots.acquire()
            _spawn(tasks, merge(g), errors)

    try:
        while not errors:
            await slots.acquire()
            trace = await asyncio.to_thread(next, traces, None)
            if trace is None:
                slots.release()
                break
            _spawn(tasks, analyse(trace), errors)
    finally:
        await _settle(tasks, errors)
    return lone or [merged[g] for g in sorted(merged)]


async def _settle(tasks: set[asyncio.Task[None]], errors: list[BaseException]) -> None:
    """Wait for the fleet's tasks (merges they start included); on the first error, cancel the
    rest and raise it."""
    try:
        while tasks and not errors:
            await asyncio.wait(list(tasks), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*list(tasks), return_exceptions=True)
    if errors:
        raise errors[0]


async def merge_ready(work: Work, ready: list[Packed | None], fan_in: int, concurrency: int,
                      tick: Tick | None = None) -> list[Packed]:
    """The level-1 pool of lesson sets analysed elsewhere (`ready`, in stream order; None where
    the run stopped first), grouped exactly as `analyse_stream` groups them, so a run whose
    analysts ran on Ray merges as a local run does. At most `concurrency` merges at once."""
    if len(ready) == 1:
        return [ready[0]] if ready[0] is not None else []
    slots = asyncio.Semaphore(concurrency)
    merged: dict[int, Packed] = {}

    async def merge(g: int, group: list[Packed]) -> None:
        async with slots:
            if work.halt.cause is None:
                merged[g] = await work.merge(group, 1)
                if tick is not None:
                    tick("merge", 1)

    groups = [[ready[p] for p in members] for members in chunk(list(range(len(ready))), fan_in)]
    await asyncio.gather(*(merge(g, [p for p in group if p is not None]) for g, group in enumerate(groups)
                           if all(p is not None for p in group)))
    return [merged[g] for g in sorted(merged)]


def _spawn(tasks: set[asyncio.Task[None]], coroutine: Coroutine[object, object, None], errors: list[BaseException]) -> None:
    """Run `coroutine` as a task of the fleet; an error it raises (a bug, Ctrl-C) stops the fleet."""
    task = asyncio.ensure_future(coroutine)
    tasks.add(task)

    def done(finished: asyncio.Task[None]) -> None:
        tasks.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            errors.append(finished.exception())

    task.add_done_callback(done)
