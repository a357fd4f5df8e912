"""Cost quoted before it is spent, and capped while it is spent.

`quote` estimates calls and tokens per stage from the actual trajectories before any call is
made: the preflight request, one analysis per trajectory not yet analysed, every merge
*window* the tree will send (not one per merge), and an allowance for repair requests. On a
resumed run it counts only the work left. Prompt sizes are estimated from the text's length
(`compress.estimated_tokens`), so each trajectory is compressed once, by its analyst.

`Meter` holds the caps. Every request is *reserved* before it is sent (a call, and the cost of
its prompt plus the most output it may return) and settled with the real cost after, so
`--max-calls` and `--budget` are never overshot, whatever the concurrency: reservation is a
synchronous step on the event loop, so no two requests can both take the last slot. Backends
that send their own requests (litellm) reserve each one, retries and repairs included; other
clients are wrapped whole by `BudgetedClient`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import BaseModel

from .config import BudgetConfig, Config
from .consolidate import merge_windows
from .errors import BudgetExceeded, BudgetRefused, ConfigError
from .llm import wrappers
from .types import Usage

if TYPE_CHECKING:
    from .llm import LLMClient
    from .llm.backend import CostMeter, Limiter

M = TypeVar("M", bound=BaseModel)

PROMPT_OVERHEAD_TOKENS = 700
ANALYST_OUTPUT_TOKENS = 450
MERGE_OUTPUT_TOKENS = 600
MERGE_INPUT_TOKENS_PER_LESSON = 90
LESSONS_PER_ANALYSIS = 3
"""What the quote assumes each analysis yields (the analysts' maximum), for sizing merge windows."""
REPAIR_SHARE = 0.03
"""Share of calls the quote adds for repair requests (a reply that failed validation, asked again)."""


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


class Quoted(Protocol):
    """A trajectory as the quote sees it (`stream.IndexEntry`): its digest and the prompt
    tokens of its compressed text, counted when it was read."""

    @property
    def digest(self) -> str: ...

    @property
    def tokens(self) -> int: ...


def quote(traces: Sequence[Quoted], config: Config, price: tuple[float, float] | None, *,
          analysed: Collection[str] = (), merges_done: int = 0) -> Quote:
    """Estimate the model spend of distilling `traces` (an upper bound per call, not a promise).

    Args:
        analysed: digests of traces whose analysis is already recorded (not quoted again).
        merges_done: merge windows already recorded for this run (not quoted again).
    """
    left = [t for t in traces if t.digest not in analysed]
    analyst_in = sum(t.tokens for t in left)
    analyse = StageQuote("analyse", len(left), analyst_in + PROMPT_OVERHEAD_TOKENS * len(left), ANALYST_OUTPUT_TOKENS * len(left))
    windows = max(0, merge_windows(len(traces), config.consolidate.fan_in, LESSONS_PER_ANALYSIS) - merges_done)
    from .consolidate import MERGE_WINDOW

    merge = StageQuote("merge", windows, windows * (PROMPT_OVERHEAD_TOKENS + MERGE_WINDOW * MERGE_INPUT_TOKENS_PER_LESSON),
                       windows * MERGE_OUTPUT_TOKENS)
    work = analyse.calls + merge.calls
    repairs = math.ceil(REPAIR_SHARE * work)
    per_call_in = (analyse.input_tokens + merge.input_tokens) // max(1, work)
    stages = (analyse, merge, StageQuote("repair", repairs, repairs * (per_call_in + 300), repairs * ANALYST_OUTPUT_TOKENS),
              StageQuote("preflight", 1 if work else 0, 60, 10))
    cost = None
    if price is not None:
        cost = sum(s.input_tokens * price[0] + s.output_tokens * price[1] for s in stages)
    return Quote(stages=stages, cost=cost)


def preflight(traces: Sequence[Quoted], config: Config, model: str, *, analysed: Collection[str] = (),
              merges_done: int = 0) -> Quote:
    """Quote the run before any call; refuse it when the quote exceeds the cap or needs approval.

    Raises:
        ConfigError: `--budget` is set but the model's price is unknown and `llm.price_in` /
            `llm.price_out` are not set (a cap that cannot be enforced is refused, exit 78).
        BudgetRefused: the estimated cost is above `budget.max_cost`, or above
            `budget.approve_above` without approval (exit 78).
    """
    price = price_for(config, model)
    estimate = quote(traces, config, price, analysed=analysed, merges_done=merges_done)
    refuse_above_caps(config, estimate.cost, estimate.calls)
    return estimate


def refuse_above_caps(config: Config, cost: float | None, calls: int, what: str = "") -> None:
    """Refuse work quoted at `cost` for `calls` calls (`what`: which work, for the message) when it
    is above `--budget`, or above `budget.approve_above` without `--yes`.

    Raises:
        BudgetRefused: as said (exit 78).
    """
    cap, threshold = config.budget.max_cost, config.budget.approve_above
    if cost is None:
        return
    if cap is not None and cost > cap:
        raise BudgetRefused(f"quoted ${cost:.4f} for {calls} calls{what} exceeds --budget ${cap:.4f}; raise the budget or analyse fewer traces")
    if threshold is not None and cost > threshold and not config.budget.approved:
        raise BudgetRefused(f"quoted ${cost:.4f} for {calls} calls{what} is above the approval threshold ${threshold:.4f}; rerun with --yes to approve")


def price_for(config: Config, model: str) -> tuple[float, float] | None:
    """Per-token price of `model`: `llm.price_in`/`price_out` when set, else litellm's map (free
    for the scripted and local models).

    Raises:
        ConfigError: a cost cap or approval threshold is set and the price is unknown.
    """
    from .llm import model_price

    if model.startswith(("scripted", "llamacpp/")) and (config.llm.price_in is None or config.llm.price_out is None):
        return 0.0, 0.0
    price = model_price(config.model_copy(update={"llm": config.llm.model_copy(update={"model": model})}))
    if price is None and (config.budget.max_cost is not None or config.budget.approve_above is not None):
        raise ConfigError(f"the price of {model!r} is unknown, so --budget cannot be enforced: set llm.price_in and "
                          "llm.price_out (US dollars per million tokens), e.g. --set llm.price_in=0.5 --set llm.price_out=1.5")
    return price


class Meter:
    """The run's caps: calls and dollars reserved before each request, settled after."""

    def __init__(self, budget: BudgetConfig, price: tuple[float, float] | None):
        self.budget = budget
        self.price = price
        self.calls = 0
        self.spent = 0.0
        self.reserved = 0.0
        self._lock = threading.Lock()

    def price_of(self, tokens_in: int, tokens_out: int) -> float | None:
        return None if self.price is None else tokens_in * self.price[0] + tokens_out * self.price[1]

    def reserve(self, tokens_in: int, tokens_out: int) -> float:
        """Take one call and its worst-case cost from the budget, or refuse before sending.

        Raises:
            BudgetExceeded: the call cap is reached, or this request could take spend past the cap.
        """
        cost = self.price_of(tokens_in, tokens_out) or 0.0
        with self._lock:
            cap_calls, cap_cost = self.budget.max_calls, self.budget.max_cost
            if cap_calls is not None and self.calls >= cap_calls:
                raise BudgetExceeded(f"call cap reached ({self.calls} of {cap_calls}); rerun the same command to "
                                     "continue where it stopped, or raise --max-calls")
            if cap_cost is not None and self.spent + self.reserved + cost > cap_cost:
                raise BudgetExceeded(f"cost cap reached (${self.spent:.4f} spent of ${cap_cost:.4f}, next request could "
                                     f"cost ${cost:.4f}); rerun the same command to continue, or raise --budget")
            self.calls += 1
            self.reserved += cost
        return cost

    def settle(self, reserved: float, cost: float | None) -> None:
        """Replace a reservation by what the request really cost (the reservation when unknown)."""
        with self._lock:
            self.reserved -= reserved
            self.spent += reserved if cost is None else cost

    def carry(self, calls: int, spent: float) -> None:
        """Count calls and spend made elsewhere in this run (by Ray workers, under their shared
        meter) so the caps hold for the whole run, not per phase."""
        with self._lock:
            self.calls += calls
            self.spent += spent


class BudgetedClient:
    """An `LLMClient` whose every `complete` is reserved as one call (for clients that do not meter their own requests)."""

    def __init__(self, inner: LLMClient, meter: CostMeter):
        self.inner = inner
        self.model = inner.model
        self.meter = meter

    @property
    def usage(self) -> Usage:
        return self.inner.usage

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        if purpose == "preflight" and getattr(_innermost(self.inner, "free_preflight"), "free_preflight", False):
            return await self.inner.complete(messages, output=output, purpose=purpose)
        reserved = self.meter.reserve(sum(len(m["content"]) for m in messages) // 3, 0)
        before = self.inner.usage.cost
        try:
            return await self.inner.complete(messages, output=output, purpose=purpose)
        finally:
            after = self.inner.usage.cost
            self.meter.settle(reserved, None if after is None else after - (before or 0.0))


def _innermost(client, attribute: str):
    """The client itself or the first wrapped client (`llm.wrappers`) that has `attribute`, or None."""
    return next((c for c in wrappers(client) if hasattr(c, attribute)), None)


def with_budget(client: LLMClient, config: Config, meter: CostMeter | None = None,
                limiter: Limiter | None = None) -> LLMClient:
    """`client` under the command's caps: a backend that meters its own requests (retries and
    repairs included) gets the meter, even inside wrappers; anything else is wrapped whole.

    A client lives for one command, so its meter does too: a client already under a meter keeps
    it, and every run the command makes with it (the preflight, the main run, the gate's and the
    evaluation's fold runs) spends from one `--max-calls` and one `--budget`.

    Args:
        meter: the caps to hold instead (a Ray worker passes the run's shared meter,
            `executor.ray.RemoteMeter`, so caps hold across workers); it replaces any meter.
        limiter: the rate limiter a self-metering backend waits on (default: its own,
            `llm.rate_limit`); a Ray worker passes the run's shared one.
    """
    backend = _innermost(client, "meter")
    wrapped = getattr(client, "_under_budget", None)  # the one wrapper (and meter) of this client
    if meter is None:
        if isinstance(client, BudgetedClient) or (backend is not None and backend.meter is not None):
            return client
        if wrapped is not None and backend is None:
            return wrapped
    meter = meter or Meter(config.budget, price_for(config.model_copy(update={"budget": BudgetConfig()}), client.model))
    if backend is not None:
        backend.meter = meter
        if limiter is not None:
            backend.limiter = limiter
        return client
    wrapped = BudgetedClient(client, meter)
    client._under_budget = wrapped
    return wrapped


def meter_of(client: LLMClient) -> CostMeter | None:
    """The meter `with_budget` gave `client` (None for a client that is not under one)."""
    holder = _innermost(client, "meter")
    return None if holder is None else holder.meter

