"""LangGraph wiring of the consolidation levels, and nothing else.

    START -> gate -> merge (one Send per slice of groups) -> gate -> ... -> finish

The pool that enters is the map stage's: level-0 lesson sets (offline), or the level-1 sets
the model path's fleet merged while it analysed (`fleet`). `gate` stages the pool and empties
it (`Overwrite`), sorted by content hash so merge groups never depend on completion order; it
ends the loop when one set is left. A level's groups are cut into at most
`analyse.concurrency` contiguous slices, one `Send` each: LangGraph waits over every pending
task of a superstep, so one task per group made a level of n groups cost O(n^2) (a third of a
10,000-trajectory run); slices keep it O(concurrency) per finished task and run as many merges
at once as before. Node bodies are thin adapters over `fleet.Work`.
"""

from __future__ import annotations

import math
import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Overwrite, RunnableConfig, Send

from .config import Config
from .consolidate import chunk
from .fleet import Work
from .stream import Packed


class State(TypedDict, total=False):
    pool: Annotated[list[Packed], operator.add]
    staged: list[Packed]
    level: int
    """Level of the sets in the pool (0: straight from the analysts)."""
    final: Packed
    merged: Annotated[int, operator.add]
    """Merges made so far (progress reads each update's share)."""


class MergeSlice(TypedDict):
    groups: list[list[Packed]]
    level: int


class Nodes:
    """The graph's node bodies for one run."""

    def __init__(self, work: Work, config: Config):
        self.work, self.config = work, config

    def gate(self, state: State) -> State:
        staged = sorted(state.get("pool", []), key=lambda p: p.key)
        return {"staged": staged, "pool": Overwrite([]), "level": state.get("level", 0) + 1}  # type: ignore[typeddict-item]

    def route(self, state: State) -> str | list[Send]:
        staged = state["staged"]
        if len(staged) <= 1 or self.work.halt.cause is not None:
            return "finish"
        groups = chunk(list(staged), self.config.consolidate.fan_in)
        return [Send("merge", MergeSlice(groups=part, level=state["level"]))
                for part in slices(groups, self.config.analyse.concurrency)]

    async def merge(self, payload: MergeSlice) -> State:
        merged = [await self.work.merge(group, payload["level"]) for group in payload["groups"]]
        return {"pool": merged, "merged": len(merged)}

    def finish(self, state: State) -> State:
        staged = state.get("staged") or []
        return {"final": staged[0]} if staged else {}


def slices(groups: list[list[Packed]], most: int) -> list[list[list[Packed]]]:
    """`groups` cut into at most `most` contiguous runs of nearly equal length."""
    count = min(most, len(groups))
    size, extra = divmod(len(groups), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(groups[start:end])
        start = end
    return out


def build_graph(work: Work, config: Config) -> CompiledStateGraph:
    """Compile the consolidation graph for one run (in memory; the journal carries work across runs)."""
    nodes = Nodes(work, config)
    builder = StateGraph(State)
    builder.add_node("gate", nodes.gate)
    builder.add_node("merge", nodes.merge)
    builder.add_node("finish", nodes.finish)
    builder.add_edge(START, "gate")
    builder.add_conditional_edges("gate", nodes.route, ["merge", "finish"])
    builder.add_edge("merge", "gate")
    builder.add_edge("finish", END)
    return builder.compile()


def run_config(n_sets: int, config: Config) -> RunnableConfig:
    """LangGraph run config: concurrency and recursion limit are top-level keys (langgraph#8920)."""
    levels = math.ceil(math.log(max(n_sets, 2), config.consolidate.fan_in)) + 1
    return {"max_concurrency": config.analyse.concurrency, "recursion_limit": 2 * levels + 10}
