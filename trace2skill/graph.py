"""LangGraph wiring for analysis and consolidation, and nothing else.

    START -> analyse (one Send per trace) -> gate -> merge (one Send per group) -> gate -> ... -> finish

`gate` stages the pool and empties it (`Overwrite`), sorted by content hash so merge groups
never depend on completion order; it ends the loop when one set is left. Node bodies are thin
adapters over the run's `Analyst`; the journal answers what was already paid for (see
`journal`), and only successful work is written to it.

Failure policy: one trajectory whose analysis fails is recorded in `failed` and the run goes on
(exit 3, retried by the next run). A refusal that every later request would share (key,
permission, model, parameters, rate limits that outlast the retries, a budget cap) halts the
run, and so does a run of `STOP_AFTER` identical provider errors, so a broken provider costs a
handful of requests, not one per trajectory. Halting sends nothing new but lets requests
already in flight finish and be journaled (cancelling them would waste what the cap allowed);
the graph then skips the merges and `Halt.raise_if_halted` re-raises the first cause.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite, Send

from .analyse import Analyst
from .config import Config
from .consolidate import chunk, merge_sets
from .errors import (BudgetExceeded, ContextTooLong, Interrupted, LessonParseError, LLMError, LLMRequestsBlocked,
                     ProviderRejected, ProviderUnavailable, RateLimited)
from .journal import AnalysisJournal
from .types import LessonSet, Trace, content_hash

STOP_AFTER = 5
"""Identical consecutive analysis errors after which the run stops instead of trying every trace."""


class State(TypedDict, total=False):
    traces: list[str]
    """Ids of the traces to analyse; the traces themselves stay outside the graph state."""
    pool: Annotated[list[dict[str, Any]], operator.add]
    staged: list[dict[str, Any]]
    level: int
    final: dict[str, Any]
    failed: Annotated[list[dict[str, str]], operator.add]
    halted: Annotated[list[str], operator.add]
    """Why the run stopped early (see `Halt`); no merge runs once set."""
    notes: Annotated[list[str], operator.add]
    """Things the summary must say (a merge that fell back to the deterministic merge)."""


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

    def __init__(self):
        self.cause: Exception | None = None

    def stop(self, exc: Exception) -> dict[str, Any]:
        self.cause = self.cause or exc
        return {"halted": [str(exc)]}

    def raise_if_halted(self) -> None:
        if self.cause is not None:
            raise self.cause


def fatal(exc: Exception) -> bool:
    """Errors every later request would share: the run stops instead of recording a failure."""
    if isinstance(exc, ContextTooLong):
        return False
    return isinstance(exc, (BudgetExceeded, LLMRequestsBlocked, ProviderRejected, RateLimited))


class Nodes:
    """The graph's node bodies for one run: thin adapters over the analyst and the journal.

    `control` is the run's LangGraph `RunControl`: LangGraph drains only between supersteps,
    and every analysis shares one superstep, so analysts also check it before calling the model.
    """

    def __init__(self, analyst: Analyst, config: Config, traces: Mapping[str, Trace],
                 journal: AnalysisJournal | None, control: Any, halt: Halt):
        self.analyst, self.config, self.traces = analyst, config, traces
        self.journal, self.control, self.halt = journal, control, halt
        self.streak = FailureStreak()

    async def analyse(self, payload: dict[str, Any]) -> dict[str, Any]:
        trace = self.traces[payload["trace_id"]]
        digest = trace.digest() if self.journal is not None else ""
        recorded = self.journal.get(digest) if self.journal is not None else None
        if recorded is not None:
            return {"pool": [recorded.model_dump(mode="json")]}
        if self.control is not None and self.control.drain_requested and self.halt.cause is None:
            self.halt.stop(Interrupted("interrupted (run drained on request); rerun the same command to resume"))
        if self.halt.cause is not None:
            return {"halted": ["not analysed: the run stopped"]}
        try:
            lessons = await self.analyst.analyse(trace)
        except (LLMError, BudgetExceeded) as exc:
            return self._failed(trace, exc)
        self.streak.succeeded()
        if self.journal is not None:
            self.journal.put(digest, lessons)
        return {"pool": [lessons.model_dump(mode="json")]}

    def _failed(self, trace: Trace, exc: Exception) -> dict[str, Any]:
        """Record one failed analysis (retried by the next run), or halt the run."""
        if fatal(exc):
            return self.halt.stop(exc)
        try:
            self.streak.failed(exc)
        except LLMError as stopped:
            return self.halt.stop(stopped)
        return {"failed": [{"trace_id": trace.id, "reason": str(exc)}],
                "pool": [LessonSet(sources=(trace.id,)).model_dump(mode="json")]}

    def gate(self, state: State) -> dict[str, Any]:
        staged = sorted(state.get("pool", []), key=lambda s: LessonSet.model_validate(s).key())
        return {"staged": staged, "pool": Overwrite([]), "level": state.get("level", 0) + 1}

    def route(self, state: State):
        staged = state["staged"]
        if len(staged) <= 1 or state.get("halted"):
            return "finish"
        return [Send("merge", {"sets": group, "level": state["level"]})
                for group in chunk(list(staged), self.config.consolidate.fan_in)]

    async def merge(self, payload: dict[str, Any]) -> dict[str, Any]:
        sets, level = [LessonSet.model_validate(s) for s in payload["sets"]], payload["level"]
        key = content_hash([level, [s.key() for s in sets]])
        recorded = self.journal.get_merge(key) if self.journal is not None else None
        if recorded is not None:
            return {"pool": [recorded.model_dump(mode="json")]}
        try:
            merged = await self.analyst.merge(sets, level)
        except LessonParseError as exc:
            note = f"a merge at level {level} used the deterministic merge: the model's reply was unusable ({exc})"
            return {"pool": [merge_sets(sets, level).model_dump(mode="json")], "notes": [note]}
        if self.journal is not None:
            self.journal.put_merge(key, merged)
        return {"pool": [merged.model_dump(mode="json")]}

    def finish(self, state: State) -> dict[str, Any]:
        staged = state.get("staged") or [LessonSet().model_dump(mode="json")]
        return {"final": staged[0]}


def build_graph(analyst: Analyst, config: Config, traces: Mapping[str, Trace], checkpointer: Any = None,
                journal: AnalysisJournal | None = None, control: Any = None, halt: Halt | None = None):
    """Compile the analyse-and-merge graph for one run; `halt` receives the error that stopped it early."""
    nodes = Nodes(analyst, config, traces, journal, control, halt if halt is not None else Halt())
    builder = StateGraph(State)
    builder.add_node("analyse", nodes.analyse)
    builder.add_node("gate", nodes.gate)
    builder.add_node("merge", nodes.merge)
    builder.add_node("finish", nodes.finish)
    builder.add_conditional_edges(START, lambda s: [Send("analyse", {"trace_id": t}) for t in s["traces"]] or "gate", ["analyse", "gate"])
    builder.add_edge("analyse", "gate")
    builder.add_conditional_edges("gate", nodes.route, ["merge", "finish"])
    builder.add_edge("merge", "gate")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer)


def run_config(n_traces: int, config: Config, thread_id: str) -> dict[str, Any]:
    """LangGraph run config: concurrency and recursion limit are top-level keys (langgraph#8920)."""
    levels = math.ceil(math.log(max(n_traces, 2), config.consolidate.fan_in)) + 1
    return {
        "max_concurrency": config.analyse.concurrency,
        "recursion_limit": 2 * levels + 10,
        "configurable": {"thread_id": thread_id},
    }
