"""The litellm backend: any provider string, or a local OpenAI-compatible server.

This is the only module that imports litellm, lazily, after pinning its price map to the
bundled copy so nothing is fetched from the network at import time. Only parameters the user
set are sent (the official Trace2Skill client silently overrode temperature). litellm's and
the OpenAI client's own retries are off; `retry.with_retries` is the policy, and provider
errors become ours in exactly one place, `map_error`.

Every request, retries and repair requests included, is reserved against the run's budget
meter *before* it is sent, so `--max-calls` and `--budget` hold under any concurrency. The
reservation is a real cap: every request carries `max_tokens` (`llm.max_tokens`, else
`DEFAULT_MAX_TOKENS`), the most output it may be billed for, and the prompt is reserved at an
over-estimate of its tokens. A provider that ignores `max_tokens` can still bill more; the meter
then counts what it billed and refuses every later request once the cap is passed.

Before litellm is imported (which takes seconds), `probe_key` asks an OpenAI-compatible server
for its model list with the key a request would carry, so a refused key exits 78 at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from ..config import LLMConfig
from ..errors import (ContextTooLong, LLMError, LLMRequestsBlocked, ProviderRejected, ProviderUnavailable,
                      RateLimited)
from ..types import Usage
from .backend import CostMeter, Limiter, RequestGate
from .parse import complete_with_repair, json_schema, response_schema
from .retry import RateLimiter, with_retries

if TYPE_CHECKING:
    from litellm import ModelResponse

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_TOKENS = 2048
"""Reply length cap sent (and reserved against the budget) when `llm.max_tokens` is unset: about
four times the longest analyst or merge reply."""


@functools.cache
def _litellm():
    """litellm, imported and configured once per process (the import alone takes seconds).

    OpenAI-style models go through the `openai` SDK client, litellm's default. litellm's own
    handler (`EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=True`, which a user may set) costs a
    quarter less CPU per request against `tests/fakeserver.py` (docs/scale.md), but litellm
    calls it experimental and it is untested against real providers here, so it is not the default.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.disable_aiohttp_transport = True
    litellm.suppress_debug_info = True
    litellm.num_retries = 0
    return litellm


def sampling_params(config: LLMConfig) -> dict[str, float | int]:
    """The sampling parameters the user set, and `max_tokens` always (the budget reserves it)."""
    params: dict[str, float | int] = {"max_tokens": config.max_tokens or DEFAULT_MAX_TOKENS}
    for key in ("temperature", "seed"):
        value = getattr(config, key)
        if value is not None:
            params[key] = value
    return params


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap upper-leaning token estimate (3 characters a token) for reservations and rate limits."""
    return sum(len(m.get("content") or "") for m in messages) // 3 + 8 * len(messages)


class LiteLLMClient:
    """`LLMClient` over `litellm.acompletion`.

    Args:
        api_key: the key to send, or None to let litellm send the provider's own key to the
            provider's own endpoint (see `llm.resolve_api_key`).
        key_hint: what to set when the provider refuses the key; asked only then, because
            finding out imports litellm.
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
            response = await _litellm().acompletion(**self.request(messages, output))
            cost = self._record(response)
        except Exception as exc:  # noqa: BLE001 - mapped onto our own errors in one place
            self.usage = self.usage + Usage(calls=1)
            raise map_error(exc, self.model, self._key_hint) from None
        finally:
            if reserved is not None:
                self.meter.settle(reserved, cost)
        return reply_text(response, self.config.structured)

    def request(self, messages: list[dict[str, str]], output: type[BaseModel]) -> dict[str, object]:
        """The keyword arguments of one `acompletion` call, structured output included."""
        kwargs: dict[str, object] = dict(model=self.model, messages=messages, timeout=self.config.timeout,
                                      num_retries=0, max_retries=0, **sampling_params(self.config))
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if self.config.structured == "json_schema":
            kwargs["response_format"] = response_schema(output)
        elif self.config.structured == "tool":
            kwargs["tools"] = [{"type": "function", "function": {"name": output.__name__, "parameters": json_schema(output),
                                                                 "description": (output.__doc__ or "").strip()[:500]}}]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": output.__name__}}
            kwargs["_skip_mcp_handler"] = True  # litellm 1.106 otherwise imports its MCP proxy (needs `mcp`) for any tools
        else:
            kwargs["response_format"] = {"type": "json_object"}
            hint = "\n\nReply with one JSON object matching this JSON schema:\n" + json.dumps(json_schema(output))
            kwargs["messages"] = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + hint}]
        return kwargs

    async def probe_key(self) -> None:
        """One `GET {api_base}/models` with the key a request would carry, without litellm: the
        cheapest request an OpenAI-compatible server checks the key on, and no model call.

        Only for `openai/...` models with an `api_base` (elsewhere litellm decides the endpoint).
        A 401 or 403 is a refused key; any other outcome (no such route, an outage, a timeout)
        says nothing, and the preflight request that follows finds out properly.

        Raises:
            ProviderRejected: the server refused the key (exit 78), with its whole message.
        """
        if not (self._gate.allowed and self.config.api_base and self.model.startswith("openai/")):
            return
        key = self._api_key if self._api_key is not None else os.environ.get("OPENAI_API_KEY")
        url = self.config.api_base.rstrip("/") + "/models"
        status, text = await asyncio.to_thread(_get, url, key, min(self.config.timeout, 10.0))
        if status in (401, 403):
            raise ProviderRejected(f"{self.model!r}: the provider refused the credentials: {text.rstrip('.')}. "
                                   f"{self._key_hint()}".strip())

    def _record(self, response: ModelResponse) -> float | None:
        usage = getattr(response, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", 0) or 0
        tokens_out = getattr(usage, "completion_tokens", 0) or 0
        cost = self.meter.price_of(tokens_in, tokens_out) if self.meter is not None else None
        if cost is None:  # the meter's price is the one the reservation used; litellm's is the fallback
            cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        self.usage = self.usage + Usage(calls=1, input_tokens=tokens_in, output_tokens=tokens_out, cost=cost)
        return cost


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: the key goes to the `api_base` given, nowhere else."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _get(url: str, key: str | None, timeout: float) -> tuple[int, str]:
    """(status, the error's message or the body) of one GET; (0, reason) when nothing answered."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        body = exc.read(65536).decode("utf-8", "replace")
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body
        return exc.code, " ".join(str(message or exc.reason).split())
    except (OSError, ValueError) as exc:  # unreachable, timed out, a malformed URL: the preflight says
        return 0, str(exc)


def reply_text(response: ModelResponse, structured: str) -> str:
    """The reply's JSON text: the forced tool call's arguments, or the message content."""
    message = response.choices[0].message
    calls = getattr(message, "tool_calls", None) or []
    if structured == "tool" and calls:
        return calls[0].function.arguments or ""
    return message.content or ""


def map_error(exc: Exception, model: str, key_hint: Callable[[], str] = lambda: "") -> LLMError:
    """The one mapping from provider exceptions to ours, by class (`isinstance`), keeping the
    provider's whole message and saying what to set."""
    errors = _litellm().exceptions
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    if isinstance(exc, errors.ContextWindowExceededError):
        return ContextTooLong(f"{model!r}: the prompt is longer than the model's context window: {text}")
    if isinstance(exc, (errors.AuthenticationError, errors.PermissionDeniedError)):
        return ProviderRejected(f"{model!r}: the provider refused the credentials: {text.rstrip('.')}. {key_hint()}".strip())
    if isinstance(exc, errors.NotFoundError):
        return ProviderRejected(f"{model!r}: the provider does not know this model or endpoint: {text}. "
                                "Check --model / llm.model and --api-base / llm.api_base.")
    if isinstance(exc, errors.RateLimitError):
        return RateLimited(f"{model!r}: rate limited by the provider: {text}", retry_after=_retry_after(exc))
    if isinstance(exc, (errors.BadRequestError, errors.UnprocessableEntityError)):
        return ProviderRejected(f"{model!r}: the provider rejected the request: {text}. If it is about response_format "
                                "or the schema, set llm.structured = \"tool\" or \"json\".")
    if isinstance(exc, (errors.Timeout, errors.APIConnectionError, errors.InternalServerError,
                        errors.ServiceUnavailableError, errors.BadGatewayError)):
        return ProviderUnavailable(f"{model!r}: provider unavailable: {text}")
    if isinstance(exc, errors.APIError) and (getattr(exc, "status_code", 0) or 0) >= 500:
        return ProviderUnavailable(f"{model!r}: provider unavailable: {text}")
    return LLMError(f"{model!r}: {type(exc).__name__}: {text}")


def _retry_after(exc: Exception) -> float | None:
    """Seconds from the provider's `Retry-After` (or `retry-after-ms`) header, if it sent one."""
    sources = [getattr(exc, "headers", None), getattr(exc, "litellm_response_headers", None),
               getattr(getattr(exc, "response", None), "headers", None)]
    for headers in sources:
        if not headers:
            continue
        try:
            if headers.get("retry-after-ms") is not None:
                return float(headers.get("retry-after-ms")) / 1000
            if headers.get("retry-after") is not None:
                return float(headers.get("retry-after"))
        except (TypeError, ValueError):
            continue
    return None


def missing_key_variables(model: str) -> list[str]:
    """The environment variables litellm would read for `model`'s provider key and finds unset."""
    try:
        found = _litellm().validate_environment(model=model)
    except Exception:  # noqa: BLE001 - unknown providers raise assorted errors
        return []
    return sorted(found.get("missing_keys") or [])


def price_per_token(model: str) -> tuple[float, float] | None:
    """(input, output) US dollars per token from litellm's bundled price map, if it knows the model."""
    litellm = _litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - unmapped models raise assorted errors
        return None
    cost_in, cost_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if cost_in is None or cost_out is None:
        return None
    return float(cost_in), float(cost_out)


async def close_pooled_clients() -> None:
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    await close_litellm_async_clients()
