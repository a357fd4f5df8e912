"""Cost quoted before it is spent, and capped while it is spent.

`quote` estimates calls and tokens per stage from the actual trajectories (compressed exactly
as the analysts will see them) before any call is made; `preflight` refuses a run whose quote exceeds the caps. The caps
while spending are enforced by `llm.capped.BudgetedClient` (it wraps the model, so it lives
with the model interface and the model layer never imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from .config import Config
from .consolidate import merge_count
from .errors import BudgetExceeded
from .types import Trace

PROMPT_OVERHEAD_TOKENS = 700
ANALYST_OUTPUT_TOKENS = 450
MERGE_OUTPUT_TOKENS = 600
MERGE_INPUT_TOKENS_PER_LESSON = 90


@dataclass(frozen=True)
class StageQuote:
    stage: str
    calls: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Quote:
    stages: tuple[StageQuote, ...]
    cost: float | None
    """Estimated US dollars, None when the model's price is unknown."""

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stages)


def quote(traces: list[Trace], config: Config, price: tuple[float, float] | None) -> Quote:
    """Estimate the model spend of distilling `traces` (an upper bound per call, not a promise)."""
    from .compress import compress_trace, count_tokens

    analyst_in = sum(min(config.analyse.token_budget, count_tokens(compress_trace(t, config.analyse.token_budget))) for t in traces)
    analyse = StageQuote("analyse", len(traces), analyst_in + PROMPT_OVERHEAD_TOKENS * len(traces), ANALYST_OUTPUT_TOKENS * len(traces))
    merge_calls = merge_count(len(traces), config.consolidate.fan_in)
    lessons_per_merge = 3 * config.consolidate.fan_in
    merge = StageQuote(
        "merge", merge_calls,
        merge_calls * (PROMPT_OVERHEAD_TOKENS + lessons_per_merge * MERGE_INPUT_TOKENS_PER_LESSON),
        merge_calls * MERGE_OUTPUT_TOKENS,
    )
    stages = (analyse, merge)
    cost = None
    if price is not None:
        cost = sum(s.input_tokens * price[0] + s.output_tokens * price[1] for s in stages)
    return Quote(stages=stages, cost=cost)


def preflight(traces: list[Trace], config: Config, model: str) -> Quote:
    """Quote the run before any call; refuse it when the quote exceeds the cap or needs approval.

    Raises:
        BudgetExceeded: the estimated cost is above `budget.max_cost`, or above
            `budget.approve_above` without approval.
    """
    from .llm import model_price

    estimate = quote(traces, config, model_price(model))
    cap, threshold = config.budget.max_cost, config.budget.approve_above
    if estimate.cost is None:
        return estimate
    if cap is not None and estimate.cost > cap:
        raise BudgetExceeded(f"quoted ${estimate.cost:.4f} for {estimate.calls} calls exceeds --budget ${cap:.4f}; raise the budget or analyse fewer traces")
    if threshold is not None and estimate.cost > threshold and not config.budget.approved:
        raise BudgetExceeded(f"quoted ${estimate.cost:.4f} for {estimate.calls} calls is above the approval threshold ${threshold:.4f}; rerun with --yes to approve")
    return estimate
