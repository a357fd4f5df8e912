"""Our retry policy and rate limiter, the only ones on the request path.

litellm's retries and the OpenAI client's are switched off (`num_retries=0`, `max_retries=0`):
left to them, authentication errors were retried, `Retry-After` was ignored and one request
was tried five times with `num_retries = 2`. Here, errors are our own classes (mapped once, in
`litellm_backend.map_error` and `http_backend.HTTPClient._failure`):

- `ProviderRejected` (key, permission, model, bad request, context length): never retried;
- `RateLimited`: wait what the provider's `Retry-After` says (or back off), up to `num_retries`;
- `ProviderUnavailable` (connection, timeout, 5xx): exponential back-off, up to `num_retries`.

`RateLimiter` keeps a run under `llm.rate_limit` (requests and tokens per minute) so a large run
does not provoke the 429s it would otherwise back off from.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import ProviderUnavailable, RateLimited

T = TypeVar("T")

BASE_DELAY = 1.0
MAX_DELAY = 30.0
MAX_RETRY_AFTER = 120.0
"""A `Retry-After` longer than this is not waited for: the run stops (exit 75) and a rerun resumes."""


def retry_after(headers: object) -> float | None:
    """Seconds a provider's response headers ask to wait: `retry-after-ms`, else `Retry-After`
    (None without either, or for an HTTP date: back off as without one)."""
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            value = headers.get(name)  # type: ignore[attr-defined]
            if value is not None:
                return float(value) / scale
        except (TypeError, ValueError):
            continue
    return None


async def with_retries(send: Callable[[], Awaitable[T]], retries: int,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Call `send` until it succeeds, retrying only what a retry can fix.

    Raises:
        ProviderRejected: at once.
        RateLimited, ProviderUnavailable: when the retries are used up.
    """
    attempt = 0
    while True:
        try:
            return await send()
        except ProviderUnavailable as exc:
            delay = retry_delay(exc, attempt)
            if attempt >= retries or delay is None:
                raise
            attempt += 1
            await sleep(delay)


def retry_delay(exc: ProviderUnavailable, attempt: int) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None when waiting is pointless."""
    after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimited) and after is not None:
        return None if after > MAX_RETRY_AFTER else max(0.0, after)
    return min(MAX_DELAY, BASE_DELAY * 2**attempt) * (0.5 + random.random() / 2)


class RateLimiter:
    """At most `requests` requests and `tokens` prompt tokens in any 60-second window."""

    def __init__(self, requests: int | None, tokens: int | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.requests, self.tokens = requests, tokens
        self._sent: deque[tuple[float, int]] = deque()
        self._clock, self._sleep = clock, sleep
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        """Wait until one more request of `tokens` prompt tokens fits in the window."""
        if self.requests is None and self.tokens is None:
            return
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and now - self._sent[0][0] >= 60.0:
                    self._sent.popleft()
                used = sum(t for _, t in self._sent)
                fits_requests = self.requests is None or len(self._sent) < self.requests
                fits_tokens = self.tokens is None or not self._sent or used + tokens <= self.tokens
                if fits_requests and fits_tokens:
                    self._sent.append((now, tokens))
                    return
                await self._sleep(max(0.05, 60.0 - (now - self._sent[0][0])))
