"""The litellm backend: any provider string, or a local OpenAI-compatible server.

This is the only module that imports litellm, lazily, after pinning its price map to the
bundled copy so nothing is fetched from the network at import time. Only parameters the user
set are sent (the official Trace2Skill client silently overrode temperature). litellm's and
the OpenAI client's own retries are off; `retry.with_retries` is the policy, and provider
errors become ours in exactly one place, `map_error`.

The request, the budget's reservation and the usage tally are `chat.ChatClient`'s, shared with
`http_backend`.

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
from typing import TYPE_CHECKING

from ..errors import ContextTooLong, LLMError, ProviderRejected, ProviderUnavailable, RateLimited
from .chat import ChatClient, Reply
from .retry import retry_after

if TYPE_CHECKING:
    from litellm import ModelResponse


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


class LiteLLMClient(ChatClient):
    """`LLMClient` over `litellm.acompletion`.

    Args:
        api_key: the key to send, or None to let litellm send the provider's own key to the
            provider's own endpoint (see `llm.resolve_api_key`).
        key_hint: what to set when the provider refuses the key; asked only then, because
            finding out imports litellm.
    """

    async def _exchange(self, request: dict[str, object]) -> Reply:
        try:
            response = await _litellm().acompletion(**self.request(request))
        except Exception as exc:  # noqa: BLE001 - mapped onto our own errors in one place
            raise map_error(exc, self.model, self._key_hint) from None
        usage = getattr(response, "usage", None)
        return Reply(reply_text(response, self.config.structured), getattr(usage, "prompt_tokens", 0) or 0,
                     getattr(usage, "completion_tokens", 0) or 0,
                     (getattr(response, "_hidden_params", None) or {}).get("response_cost"))

    def request(self, request: dict[str, object]) -> dict[str, object]:
        """The keyword arguments of one `acompletion` call: the chat request (`chat.chat_request`)
        and where and how litellm sends it."""
        kwargs: dict[str, object] = dict(model=self.model, timeout=self.config.timeout, num_retries=0, max_retries=0,
                                      **request)
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if "tools" in request:
            kwargs["_skip_mcp_handler"] = True  # litellm 1.106 otherwise imports its MCP proxy (needs `mcp`) for any tools
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
        seconds = retry_after(headers) if headers else None
        if seconds is not None:
            return seconds
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


@functools.cache
def bundled_price(model: str) -> tuple[float, float] | None:
    """`price_per_token` of an `openai/` model from the price map litellm ships, read as data,
    without importing litellm (which takes seconds): for `http_backend`, which never imports it.
    Once per model and process: the map is 1.5 MB of JSON, and every budget meter asks."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices_and_context_window_backup.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8")).get(model.removeprefix("openai/")) or {}
    except (OSError, ValueError):
        return None
    cost_in, cost_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if info.get("litellm_provider") != "openai" or cost_in is None or cost_out is None:
        return None
    return float(cost_in), float(cost_out)


async def close_pooled_clients() -> None:
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    await close_litellm_async_clients()
