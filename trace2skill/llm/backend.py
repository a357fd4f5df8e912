"""What a model backend is handed by its surroundings: the request gate, the run's cost meter and rate limiter.

Protocols, so a backend imports neither the `llm` package that builds it (`allow_model_requests`)
nor `budget` (`budget.Meter`), which would make import cycles.
"""

from __future__ import annotations

from typing import Protocol


class RequestGate(Protocol):
    """Whether real backends may send requests (`llm.allow_model_requests`; the test suite closes it)."""

    allowed: bool


class CostMeter(Protocol):
    """The run's budget meter (`budget.Meter`): reserve before a request, settle after it."""

    def price_of(self, tokens_in: int, tokens_out: int) -> float | None: ...

    def reserve(self, tokens_in: int, tokens_out: int) -> float: ...

    def settle(self, reserved: float, cost: float | None) -> None: ...


class Limiter(Protocol):
    """Waits until one more request of `tokens` prompt tokens fits `llm.rate_limit`
    (`retry.RateLimiter`; on Ray, the run's one limiter in the budget actor)."""

    async def acquire(self, tokens: int) -> None: ...
