"""What a model backend is handed by its surroundings: the request gate and the run's cost meter.

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
