"""The one narrow door to language models.

Every stage talks to a model through `LLMClient.complete`: messages in, a validated pydantic
object out. Backends send text requests and *our* code validates the reply, so behaviour is
the same whichever provider answers. Usage is tallied on the client object and rolls up into
the run result. litellm is imported only inside `litellm_backend`, and only when a real model
is configured, so `--help`, `ingest` and offline runs never pay for it.

Keys stay home (`resolve_api_key`): a provider's key goes to that provider's own endpoint, or
to an `api_base` given on the command line or in the environment. An `api_base` read from a
configuration file (say, a `trace2skill.toml` committed to the repository a scheduled job runs
in) gets a key only when the same file names the variable to send, `llm.api_key_env`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Protocol, TypeVar

from pydantic import BaseModel

from ..config import Config, LLMConfig
from ..errors import ConfigError, LessonParseError, ProviderRejected
from ..types import Usage

M = TypeVar("M", bound=BaseModel)

__all__ = ["LLMClient", "BoundedClient", "CallCounter", "count_calls", "wrappers", "build_llm", "allow_model_requests",
           "check_model", "probe_key", "resolve_api_key", "model_price", "sent_sampling"]

NO_KEY = "sk-no-key-sent"
"""Sent instead of a real key to an `api_base` that may not receive one, so litellm does not
fall back to the provider's environment variable."""


class LLMClient(Protocol):
    """A model that answers with structured output."""

    model: str
    usage: Usage

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        """Send `messages`, validate the reply as `output`, add the call to `usage`.

        `purpose` names the task (`analyse-failure`, `merge`, ...) for logs and tests.
        """
        ...


class BoundedClient:
    """An `LLMClient` with at most `limit` requests in flight at once, whoever sends them.

    LangGraph's `max_concurrency` bounds graph tasks, but one merge task sends all its windows
    together, so the run's concurrency is held here, per request. The semaphore belongs to the
    event loop that uses it (the preflight and the graph run in different loops).
    """

    def __init__(self, inner: LLMClient, limit: int):
        self.inner = inner
        self.model = inner.model
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def usage(self) -> Usage:
        return self.inner.usage

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._loop, self._slots = loop, asyncio.Semaphore(self.limit)
        async with self._slots:
            return await self.inner.complete(messages, output=output, purpose=purpose)


class CallCounter:
    """An `LLMClient` that counts its calls per purpose (the report's calls per stage). Calls made
    elsewhere with a copy of the model (Ray workers) are added with `add`."""

    def __init__(self, inner: LLMClient):
        self.inner, self.model = inner, inner.model
        self.calls: dict[str, int] = {}

    @property
    def usage(self) -> Usage:
        return self.inner.usage

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        self.calls[purpose] = self.calls.get(purpose, 0) + 1
        return await self.inner.complete(messages, output=output, purpose=purpose)

    def add(self, calls: dict[str, int]) -> None:
        for purpose, count in calls.items():
            self.calls[purpose] = self.calls.get(purpose, 0) + count


def count_calls(client: LLMClient, calls: dict[str, int]) -> None:
    """Add `calls` (per purpose) to the `CallCounter` among `client`'s wrappers, if there is one."""
    counter = next((c for c in wrappers(client) if isinstance(c, CallCounter)), None)
    if counter is not None:
        counter.add(calls)


def wrappers(client: LLMClient | None) -> Iterator[LLMClient]:
    """`client`, then each client it wraps, outermost first: wrappers (budget, call counts,
    bounds) keep the client they wrap in `inner`."""
    while client is not None:
        yield client
        client = getattr(client, "inner", None)


class _RequestGate:
    """Whether real backends may send requests; the test suite turns it off."""

    allowed = True


allow_model_requests = _RequestGate()


class Ping(BaseModel):
    """The preflight's reply: proves the model, key and structured output work."""

    ok: bool


PING = [{"role": "system", "content": "You check that a connection works. Reply with JSON only."},
        {"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}]


async def check_model(client: LLMClient) -> None:
    """One cheap request before any analysis: the model exists, the key works, replies follow a schema.
    Made once per client (so once per command, however many runs it makes).

    Raises:
        ProviderRejected: key, permission, model or request refused (exit 78), or replies that do
            not follow the schema even after a repair request.
        ProviderUnavailable: the provider cannot be reached (after retries).
    """
    backend = _backend(client)
    if backend in _checked:
        return
    await probe_key(client)
    try:
        await client.complete(PING, output=Ping, purpose="preflight")
    except LessonParseError as exc:
        raise ProviderRejected(f"{client.model!r} answers without following the JSON schema ({exc}); "
                               "set llm.structured = \"tool\" or \"json\" (now the default \"json_schema\")") from None
    _checked.add(backend)


_checked: "weakref.WeakSet" = weakref.WeakSet()
"""Clients whose preflight succeeded: one check per client, so per command, however many runs it makes."""


async def probe_key(client: LLMClient) -> None:
    """The backend's key probe, if it has one (`LiteLLMClient.probe_key`): a request that needs no
    litellm import, so a refused key is known in a second, not after seconds of imports. Once
    per client; `check_model` makes it too, so calling this first (before anything that imports
    litellm, such as pricing the model) only moves it earlier.

    Raises:
        ProviderRejected: the provider refused the key.
    """
    backend = _backend(client)
    probe = getattr(backend, "probe_key", None)
    if probe is None or backend in _probed:
        return
    await probe()
    _probed.add(backend)


_probed: "weakref.WeakSet" = weakref.WeakSet()


def _backend(client: LLMClient) -> LLMClient:
    """The client inside the wrappers (`wrappers`' last)."""
    *_, backend = wrappers(client)
    return backend


async def close_clients() -> None:
    """Close the running loop's HTTP sessions (ours and litellm's pooled clients) inside it, so none is left to warn at exit."""
    import sys

    if "trace2skill.llm.http_backend" in sys.modules:
        from .http_backend import close_sessions

        await close_sessions()
    if "litellm" in sys.modules:
        from .litellm_backend import close_pooled_clients

        await close_pooled_clients()


def build_llm(config: Config, env: Mapping[str, str] | None = None) -> LLMClient | None:
    """The client for `config.llm.model`, or None for the offline analyst.

    Raises:
        ConfigError: the model string cannot be used, or `llm.api_key_env` names an unset variable.
    """
    if config.offline:
        return None
    if config.llm.model.startswith("scripted"):
        from pathlib import Path

        from ..testing import ScriptedLLM

        _, _, script = config.llm.model.partition(":")
        if not script:
            raise ConfigError("the scripted model replays a file of answers: use --model scripted:PATH.json")
        return ScriptedLLM.from_file(Path(script))
    if config.llm.model.startswith("llamacpp/"):
        from .llamacpp_backend import LlamaCppClient

        return LlamaCppClient(config.llm, gate=allow_model_requests)
    env = os.environ if env is None else env
    kwargs = dict(gate=allow_model_requests, api_key=resolve_api_key(config.llm, env), key_hint=functools.partial(key_hint, config.llm))
    if speaks_http(config.llm):
        from .http_backend import HTTPClient

        return HTTPClient(config.llm, **kwargs)
    from .litellm_backend import LiteLLMClient

    return LiteLLMClient(config.llm, **kwargs)


def speaks_http(config: LLMConfig) -> bool:
    """Whether requests go straight to the server (`http_backend`): an `openai/` model with an
    `api_base`, unless `llm.client = "litellm"`."""
    return config.client == "auto" and config.api_base is not None and config.model.startswith("openai/")


def resolve_api_key(config: LLMConfig, env: Mapping[str, str]) -> str | None:
    """The key to send with each request, or None to let litellm send the provider's own key to
    the provider's own endpoint. See the module docstring for the policy.

    Raises:
        ConfigError: `llm.api_key_env` names a variable that is not set.
    """
    if config.api_key_env:
        value = env.get(config.api_key_env)
        if not value:
            raise ConfigError(f"llm.api_key_env names {config.api_key_env}, which is not set in the environment")
        return value
    if config.api_base is None:
        return None
    if config._api_base_from_file:
        return NO_KEY
    if config.model.startswith("openai/") and not env.get("OPENAI_API_KEY"):
        return "sk-local"  # local OpenAI-compatible servers want some key
    return None


def key_hint(config: LLMConfig) -> str:
    """What to set when the provider refuses the key, for the error message."""
    if config.api_key_env:
        return f"Check the key in {config.api_key_env} (llm.api_key_env)."
    if config.api_base and config._api_base_from_file:
        return ("No key was sent: this api_base comes from a configuration file, so it gets a key only when "
                "the same file names the variable to send with llm.api_key_env.")
    if config.model.startswith("openai/"):  # known without litellm, whose import takes seconds
        return "Set OPENAI_API_KEY to this endpoint's key, or name the variable to send with llm.api_key_env."
    from .litellm_backend import missing_key_variables

    missing = missing_key_variables(config.model)
    if missing:
        return f"Set {', '.join(missing)}."
    return "Check the provider's API key variable, or set llm.api_key_env."


def sent_sampling(config: LLMConfig) -> dict:
    """The sampling parameters each request to `config.model` carries (for provenance): those the
    user set, and `max_tokens` always (the backend's default when unset); none for the scripted model."""
    if config.model.startswith("scripted"):
        return {}
    if config.model.startswith("llamacpp/"):
        from .llamacpp_backend import request_params

        return request_params(config)
    from .chat import sampling_params

    return sampling_params(config)


def model_price(config: Config) -> tuple[float, float] | None:
    """Per-token (input, output) price: `llm.price_in`/`price_out` when set, else litellm's map; None when unknown."""
    llm = config.llm
    if llm.price_in is not None and llm.price_out is not None:
        return llm.price_in / 1e6, llm.price_out / 1e6
    if config.offline or llm.model.startswith(("scripted", "llamacpp/")):
        return None
    from .litellm_backend import bundled_price, price_per_token

    return bundled_price(llm.model) if speaks_http(llm) else price_per_token(llm.model)
