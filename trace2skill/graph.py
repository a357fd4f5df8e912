"""LangGraph wiring for analysis and consolidation, and nothing else.

    START -> analyse (one Send per trace) -> gate -> merge (one Send per group) -> gate -> ... -> finish

`gate` stages the pool and empties it (`Overwrite`), sorted by content hash so merge groups
never depend on completion order; it ends the loop when one set is left. Node bodies are thin
adapters over `analyse` and `consolidate`; state holds plain dicts so a SQLite checkpoint can
resume a run without re-running finished analysts.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import RunControl
from langgraph.types import Overwrite, Send

from .analyse import analyse_trace
from .config import Config
from .consolidate import anchor_to_existing, chunk, merge_sets, merge_sets_llm
from .errors import BudgetExceeded, Interrupted, LLMError, LLMRequestsBlocked
from .journal import AnalysisJournal
from .llm import LLMClient
from .rules import RuleRecord
from .types import LessonSet, Trace


class State(TypedDict, total=False):
    traces: list[str]
    """Ids of the traces to analyse; the traces themselves stay outside the checkpointed state."""
    pool: Annotated[list[dict[str, Any]], operator.add]
    staged: list[dict[str, Any]]
    level: int
    final: dict[str, Any]
    failed: Annotated[list[dict[str, str]], operator.add]


def build_graph(
    llm: LLMClient | None, config: Config, traces: Mapping[str, Trace], checkpointer: BaseCheckpointSaver | None = None,
    journal: AnalysisJournal | None = None, control: RunControl | None = None, existing: Sequence[RuleRecord] = (),
):
    """Compile the analyse-and-merge graph for one run.

    The graph carries trace ids, not trace contents: a run id is derived from the inputs, so a
    resumed run has the same traces at hand, and checkpoints stay small.

    `control` is the run's LangGraph `RunControl`: LangGraph drains only between supersteps,
    and every analysis shares one superstep, so analysts also check it before calling the model.
    `existing` are the rules the skill already has; a model's lesson restating one is anchored
    to it (see `consolidate.anchor_to_existing`).
    """

    async def analyse(payload: dict[str, Any]) -> dict[str, Any]:
        trace = traces[payload["trace_id"]]
        digest = trace.digest() if journal is not None else ""
        recorded = journal.get(digest) if journal is not None else None
        if recorded is not None:
            return {"pool": [recorded.model_dump(mode="json")]}
        if control is not None and control.drain_requested:
            raise Interrupted("run drained on request; rerun the same command to resume from the checkpoint")
        try:
            lessons = await analyse_trace(trace, llm, config)
            if existing and llm is not None:
                lessons = lessons.model_copy(update={"lessons": tuple(anchor_to_existing(lessons.lessons, existing))})
        except (BudgetExceeded, LLMRequestsBlocked):
            raise
        except LLMError as exc:
            return {"failed": [{"trace_id": trace.id, "reason": str(exc)}], "pool": [LessonSet(sources=(trace.id,)).model_dump(mode="json")]}
        if journal is not None:
            journal.put(digest, lessons)
        return {"pool": [lessons.model_dump(mode="json")]}

    def route(state: State):
        staged = state["staged"]
        if len(staged) <= 1:
            return "finish"
        return [Send("merge", {"sets": group, "level": state["level"]}) for group in chunk(list(staged), config.consolidate.fan_in)]

    builder = StateGraph(State)
    builder.add_node("analyse", analyse)
    builder.add_node("gate", _gate)
    builder.add_node("merge", _merge_node(llm))
    builder.add_node("finish", _finish)
    builder.add_conditional_edges(START, lambda s: [Send("analyse", {"trace_id": t}) for t in s["traces"]] or "gate", ["analyse", "gate"])
    builder.add_edge("analyse", "gate")
    builder.add_conditional_edges("gate", route, ["merge", "finish"])
    builder.add_edge("merge", "gate")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer)


def _gate(state: State) -> dict[str, Any]:
    """Stage the pool, sorted by content hash, and empty it; count the level."""
    staged = sorted(state.get("pool", []), key=lambda s: LessonSet.model_validate(s).key())
    return {"staged": staged, "pool": Overwrite([]), "level": state.get("level", 0) + 1}


def _merge_node(llm: LLMClient | None) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The merge node: the model merges a group; offline, or when its answer fails, the
    deterministic merge does (a budget stop or blocked requests end the run instead)."""

    async def merge(payload: dict[str, Any]) -> dict[str, Any]:
        sets = [LessonSet.model_validate(s) for s in payload["sets"]]
        if llm is None:
            merged = merge_sets(sets, payload["level"])
        else:
            try:
                merged = await merge_sets_llm(sets, payload["level"], llm)
            except (BudgetExceeded, LLMRequestsBlocked):
                raise
            except LLMError:
                merged = merge_sets(sets, payload["level"])
        return {"pool": [merged.model_dump(mode="json")]}

    return merge


def _finish(state: State) -> dict[str, Any]:
    """The one set left (an empty one when there was nothing to merge)."""
    staged = state.get("staged") or [LessonSet().model_dump(mode="json")]
    return {"final": staged[0]}


def run_config(n_traces: int, config: Config, thread_id: str) -> dict[str, Any]:
    """LangGraph run config: concurrency and recursion limit are top-level keys (langgraph#8920)."""
    levels = math.ceil(math.log(max(n_traces, 2), config.consolidate.fan_in)) + 1
    return {
        "max_concurrency": config.analyse.concurrency,
        "recursion_limit": 2 * levels + 10,
        "configurable": {"thread_id": thread_id},
    }
