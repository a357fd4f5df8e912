"""What the two chat-completions backends share: the request they send and how a request is paid for.

`litellm_backend` (any provider string) and `http_backend` (an OpenAI-compatible server spoken
to directly) differ only in how one request travels (`ChatClient._exchange`). Everything else
is here, once: the sampling parameters sent, the structured-output request, the budget's
reservation before a request and its settlement after, the rate limiter and the usage tally.

Every request, retries and repair requests included, is reserved against the run's budget
meter *before* it is sent, so `--max-calls` and `--budget` hold under any concurrency. The
reservation is a real cap: every request carries `max_tokens` (`llm.max_tokens`, else
`DEFAULT_MAX_TOKENS`), the most output it may be billed for, and the prompt is reserved at an
over-estimate of its tokens. A provider that ignores `max_tokens` can still bill more; the meter
then counts what it billed and refuses every later request once the cap is passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from ..config import LLMConfig
from ..errors import LLMError, LLMRequestsBlocked
from ..types import Usage
from .backend import CostMeter, Limiter, RequestGate
from .parse import complete_with_repair, json_schema, response_schema
from .retry import RateLimiter, with_retries

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_TOKENS = 2048
"""Reply length cap sent (and reserved against the budget) when `llm.max_tokens` is unset: about
four times the longest analyst or merge reply."""


def sampling_params(config: LLMConfig, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, float | int]:
    """The sampling parameters the user set, and `max_tokens` always (the budget reserves it;
    `default_max_tokens` when `llm.max_tokens` is unset)."""
    params: dict[str, float | int] = {"max_tokens": config.max_tokens or default_max_tokens}
    for key in ("temperature", "seed"):
        value = getattr(config, key)
        if value is not None:
            params[key] = value
    return params


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap upper-leaning token estimate (3 characters a token) for reservations and rate limits."""
    return sum(len(m.get("content") or "") for m in messages) // 3 + 8 * len(messages)


def chat_request(messages: list[dict[str, str]], output: type[BaseModel], config: LLMConfig) -> dict[str, object]:
    """The OpenAI chat-completions fields of one request (`model` aside): the messages, the
    sampling parameters and the reply's constraint (`llm.structured`): a JSON schema, a forced
    tool call, or JSON mode with the schema appended to the last message."""
    request: dict[str, object] = dict(messages=messages, **sampling_params(config))
    if config.structured == "json_schema":
        request["response_format"] = response_schema(output)
    elif config.structured == "tool":
        request["tools"] = [{"type": "function", "function": {"name": output.__name__, "parameters": json_schema(output),
                                                              "description": (output.__doc__ or "").strip()[:500]}}]
        request["tool_choice"] = {"type": "function", "function": {"name": output.__name__}}
    else:
        request["response_format"] = {"type": "json_object"}
        hint = "\n\nReply with one JSON object matching this JSON schema:\n" + json.dumps(json_schema(output))
        request["messages"] = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + hint}]
    return request


@dataclass(frozen=True)
class Reply:
    """One answered request: the reply's JSON text and what the provider billed."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    """The provider's (or litellm's) own price of the request, used when the meter has none."""


class ChatClient:
    """`LLMClient` over one chat-completions request per call; a backend supplies `_exchange`.

    Args:
        api_key: the key to send (see `llm.resolve_api_key`; None: the backend's default).
        key_hint: what to set when the provider refuses the key, asked only then.
    """

    def __init__(self, config: LLMConfig, gate: RequestGate, *, api_key: str | None = None,
                 key_hint: Callable[[], str] = lambda: ""):
        self.config = config
        self.model = config.model
        self.usage = Usage()
        self.meter: CostMeter | None = None
        """The run's budget meter (`budget.Meter`), set by `budget.with_budget`."""
        self._gate = gate
        self._api_key = api_key
        self._key_hint = key_hint
        self.limiter: Limiter = RateLimiter(config.rate_limit.requests, config.rate_limit.tokens)
        """Keeps requests under `llm.rate_limit`; on Ray, the run's shared limiter (`budget.with_budget`)."""

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        if not self._gate.allowed:
            raise LLMRequestsBlocked(f"model requests are blocked; refused a {purpose!r} call to {self.model!r}")
        return await complete_with_repair(self._request, messages, output)

    async def _request(self, messages: list[dict[str, str]], output: type[BaseModel]) -> str:
        return await with_retries(lambda: self._send(messages, output), self.config.num_retries)

    async def _send(self, messages: list[dict[str, str]], output: type[BaseModel]) -> str:
        tokens_in = estimate_tokens(messages)
        reserved = self.meter.reserve(tokens_in, int(sampling_params(self.config)["max_tokens"])) if self.meter else None
        cost: float | None = None
        try:
            await self.limiter.acquire(tokens_in)
            reply = await self._exchange(chat_request(messages, output, self.config))
            cost = self._record(reply)
        except LLMError:
            self.usage = self.usage + Usage(calls=1)
            raise
        finally:
            if reserved is not None:
                self.meter.settle(reserved, cost)
        return reply.text

    async def _exchange(self, request: dict[str, object]) -> Reply:
        """Send one request and return its reply.

        Raises:
            LLMError: the request failed (one of its subclasses, which `retry.with_retries` sorts).
        """
        raise NotImplementedError

    def _record(self, reply: Reply) -> float | None:
        cost = self.meter.price_of(reply.tokens_in, reply.tokens_out) if self.meter is not None else None
        if cost is None:  # the meter's price is the one the reservation used; the provider's is the fallback
            cost = reply.cost
        self.usage = self.usage + Usage(calls=1, input_tokens=reply.tokens_in, output_tokens=reply.tokens_out, cost=cost)
        return cost
