"""The hard caps while spending: a model client that refuses the next call once a cap is reached.

It raises `BudgetExceeded`; with a checkpoint the run can be resumed with a larger budget. The
quote before spending is `budget.quote`.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from ..config import BudgetConfig
from ..errors import BudgetExceeded
from ..types import Usage

M = TypeVar("M", bound=BaseModel)


class BudgetedClient:
    """An `LLMClient` that stops before a call would exceed the configured caps (`inner` is any
    `LLMClient`; not annotated, so this module need not import the package that imports it)."""

    def __init__(self, inner, budget: BudgetConfig):
        self.inner = inner
        self.model = inner.model
        self.budget = budget

    @property
    def usage(self) -> Usage:
        return self.inner.usage

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        used = self.inner.usage
        if self.budget.max_calls is not None and used.calls >= self.budget.max_calls:
            raise BudgetExceeded(f"call cap reached ({used.calls} of {self.budget.max_calls}); rerun with a larger --max-calls to resume")
        if self.budget.max_cost is not None and (used.cost or 0.0) >= self.budget.max_cost:
            raise BudgetExceeded(f"cost cap reached (${used.cost:.4f} of ${self.budget.max_cost:.4f}); rerun with a larger --budget to resume")
        return await self.inner.complete(messages, output=output, purpose=purpose)
