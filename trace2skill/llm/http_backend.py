"""An OpenAI-compatible server spoken to directly: one HTTP POST per request, no litellm.

Used for `openai/<name>` models with an `api_base` (vLLM, llama.cpp's server, Ollama, LM Studio,
a gateway), unless `llm.client = "litellm"`. Such a server needs nothing litellm adds, and
litellm costs seconds to import and about 10 ms of CPU per request (`bench/request_cpu.py`):
at concurrency 32 against a fast local server, the client, not the model, set the pace.

The request is `chat.chat_request`'s, as litellm sends it; replies, budget and usage go through
`chat.ChatClient` like litellm's. Failures become our errors here, by HTTP status, keeping the
server's whole message:

| status | error | retried |
|---|---|---|
| 401, 403 | `ProviderRejected` (the key) | no |
| 404 | `ProviderRejected` (model or endpoint) | no |
| 400, 422 | `ContextTooLong` when the server says the context is exceeded, else `ProviderRejected` | no |
| 429 | `RateLimited`, with the server's `Retry-After` | yes |
| 408, 5xx, no connection, no answer within `llm.timeout` | `ProviderUnavailable` | yes |
| 3xx | `ProviderRejected`: redirects are not followed, so the key goes to `api_base` only | no |

One aiohttp session per event loop (the preflight and the run use different loops), closed by
`close_sessions` before its loop ends.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import urllib.parse
import urllib.request
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import ContextTooLong, LLMError, ProviderRejected, ProviderUnavailable, RateLimited
from .chat import ChatClient, Reply
from .retry import retry_after as retry_after_seconds

if TYPE_CHECKING:
    import aiohttp

_CONTEXT = re.compile(r"context[ _](length|window)|maximum context|prompt is too long|too many tokens", re.I)
"""How OpenAI, vLLM, llama.cpp and Ollama word a prompt longer than the model's context (a 400)."""


class HTTPClient(ChatClient):
    """`LLMClient` over `POST {api_base}/chat/completions`."""

    @functools.cached_property
    def _route(self) -> tuple[str, str | None]:
        """The endpoint, and the proxy the environment names for it, read once per client (the
        environment's proxy variables cost the event loop about 0.15 ms a request; more with a
        large environment)."""
        url = self.config.api_base.rstrip("/") + "/chat/completions"
        return url, _proxy(url)

    async def _exchange(self, request: dict[str, object]) -> Reply:
        url, proxy = self._route
        key = self._api_key if self._api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        body = json.dumps({"model": self.model.removeprefix("openai/"), **request})
        import aiohttp

        try:
            async with _session().post(url, data=body, headers=headers, allow_redirects=False, proxy=proxy,
                                       timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as response:
                status, raw = response.status, await response.read()
                retry_after, location = retry_after_seconds(response.headers), response.headers.get("location")
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:  # before ClientError, their base: no retry helps
            raise ProviderRejected(f"{self.model!r}: cannot send to {url} ({exc}); --api-base / llm.api_base must be "
                                   "an http:// or https:// URL, such as http://localhost:8000/v1") from None
        except asyncio.TimeoutError:
            raise ProviderUnavailable(f"{self.model!r}: provider unavailable: no answer from {url} within "
                                      f"{self.config.timeout:g} s (llm.timeout)") from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"{self.model!r}: provider unavailable: {url}: {exc}") from None
        if status != 200:
            raise self._failure(status, raw, retry_after, location)
        return self._reply(raw, url)

    def _failure(self, status: int, raw: bytes, retry_after: float | None, location: str | None) -> LLMError:
        """Our error for a refused request, with the server's message and what to set."""
        text, code = _message(raw)
        model = self.model
        if 300 <= status < 400:
            return ProviderRejected(f"{model!r}: {self.config.api_base} redirects (HTTP {status}) to {location}; "
                                    "redirects are not followed, so the key goes nowhere else: set --api-base to that address.")
        if status in (401, 403):
            return ProviderRejected(f"{model!r}: the provider refused the credentials: {text.rstrip('.')}. "
                                    f"{self._key_hint()}".strip())
        if status == 404:
            return ProviderRejected(f"{model!r}: the provider does not know this model or endpoint: {text}. "
                                    "Check --model / llm.model and --api-base / llm.api_base.")
        if status == 429:
            return RateLimited(f"{model!r}: rate limited by the provider: {text}", retry_after=retry_after)
        if status in (400, 413, 422) and (code == "context_length_exceeded" or _CONTEXT.search(text)):
            return ContextTooLong(f"{model!r}: the prompt is longer than the model's context window: {text}")
        if status in (400, 422):
            return ProviderRejected(f"{model!r}: the provider rejected the request: {text}. If it is about "
                                    "response_format or the schema, set llm.structured = \"tool\" or \"json\".")
        if status == 408 or status >= 500:
            return ProviderUnavailable(f"{model!r}: provider unavailable: HTTP {status}: {text}")
        return LLMError(f"{model!r}: HTTP {status}: {text}")

    def _reply(self, raw: bytes, url: str) -> Reply:
        """The reply's JSON text (the forced tool call's arguments, or the message) and its usage.

        Raises:
            ProviderRejected: the answer is not a chat completion (an `api_base` that is something else).
        """
        try:
            answer = json.loads(raw)
            message = answer["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            shown = " ".join(raw[:300].decode("utf-8", "replace").split())
            raise ProviderRejected(f"{self.model!r}: {url} answered with something that is not a chat completion "
                                   f"({shown!r}); check --api-base / llm.api_base.") from None
        calls = message.get("tool_calls") or []
        if self.config.structured == "tool" and calls:
            text = (calls[0].get("function") or {}).get("arguments") or ""
        else:
            text = message.get("content") or ""
        usage = answer.get("usage") or {}
        return Reply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _message(raw: bytes) -> tuple[str, str | None]:
    """(message, code) of an error body: OpenAI's `{"error": {...}}`, vLLM's `{"message": ...}`,
    Ollama's `{"error": "..."}`, or the text itself."""
    text = raw[:65536].decode("utf-8", "replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:1000] or "(no message)", None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message, code = error.get("message"), error.get("code")
        return " ".join(str(message or error).split()), code if isinstance(code, str) else None
    return " ".join(str(error).split()), None


def _proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as
    httpx and so litellm honour it. (aiohttp's `trust_env` would also read `~/.netrc`, whose
    credentials clash with the key's `Authorization` header.)"""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()


def _session() -> aiohttp.ClientSession:
    """The running loop's session: its connections are kept alive between requests."""
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        # no connection limit here: `BoundedClient` holds the run's concurrency; proxies: `_proxy`
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        _sessions[loop] = session
    return session


async def close_sessions() -> None:
    """Close the running loop's session, so none is left to warn when the loop ends."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
