"""The litellm backend: any provider string, or a local OpenAI-compatible server.

This is the only module that imports litellm, lazily, after pinning its price map to the
bundled copy so nothing is fetched from the network at import time. Only parameters the user
set are sent (the official Trace2Skill client silently overrode temperature).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from pydantic import BaseModel

from ..config import LLMConfig
from ..errors import LLMError, LLMRequestsBlocked
from ..types import Usage
from .parse import complete_with_repair, response_schema

M = TypeVar("M", bound=BaseModel)


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.disable_aiohttp_transport = True
    litellm.suppress_debug_info = True
    return litellm


def sampling_params(config: LLMConfig) -> dict[str, Any]:
    """The request parameters the user set, and only those."""
    params: dict[str, Any] = {}
    for key in ("temperature", "seed", "max_tokens"):
        value = getattr(config, key)
        if value is not None:
            params[key] = value
    return params


class LiteLLMClient:
    """`LLMClient` over `litellm.acompletion`."""

    def __init__(self, config: LLMConfig, gate: Any):
        self.config = config
        self.model = config.model
        self.usage = Usage()
        self._gate = gate

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        if not self._gate.allowed:
            raise LLMRequestsBlocked(f"model requests are blocked; refused a {purpose!r} call to {self.model!r}")
        return await complete_with_repair(self._send, messages, output)

    async def _send(self, messages: list[dict[str, str]], output: type[BaseModel]) -> str:
        litellm = _litellm()
        kwargs: dict[str, Any] = dict(
            model=self.model,
            messages=messages,
            timeout=self.config.timeout,
            num_retries=self.config.num_retries,
            **sampling_params(self.config),
        )
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
            kwargs.setdefault("api_key", os.environ.get("OPENAI_API_KEY", "sk-local"))
        try:
            supports_schema = litellm.supports_response_schema(model=self.model)
        except Exception:  # noqa: BLE001 - unknown models raise assorted errors; treat as unsupported
            supports_schema = False
        kwargs["response_format"] = response_schema(output) if supports_schema else {"type": "json_object"}
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped onto our own errors in one place
            raise _map_error(exc, self.model) from exc
        usage = getattr(response, "usage", None)
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        self.usage = self.usage + Usage(
            calls=1,
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            cost=cost,
        )
        return response.choices[0].message.content or ""


def _map_error(exc: Exception, model: str) -> LLMError:
    name = type(exc).__name__
    if name in {"AuthenticationError", "PermissionDeniedError"}:
        return LLMError(f"{model!r}: the provider rejected the credentials ({name}); set the provider's API key variable")
    if name in {"NotFoundError", "BadRequestError"} and "model" in str(exc).lower():
        return LLMError(f"{model!r}: the provider does not know this model ({str(exc)[:200]})")
    if name in {"APIConnectionError", "Timeout", "ServiceUnavailableError", "RateLimitError", "InternalServerError"}:
        return LLMError(f"{model!r}: provider unavailable after retries ({name}: {str(exc)[:200]})")
    return LLMError(f"{model!r}: {name}: {str(exc)[:300]}")


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
