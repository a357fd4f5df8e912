"""The one narrow door to language models.

Every stage talks to a model through `LLMClient.complete`: messages in, a validated pydantic
object out. Backends send text requests and *our* code validates the reply, so behaviour is
the same whichever provider answers. Usage is tallied on the client object and rolls up into
the run result. litellm is imported only inside `litellm_backend`, and only when a real model
is configured, so `--help`, `ingest` and offline runs never pay for it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from pydantic import BaseModel

from ..config import Config
from ..types import Usage

M = TypeVar("M", bound=BaseModel)

__all__ = ["LLMClient", "build_llm", "allow_model_requests"]


class LLMClient(Protocol):
    """A model that answers with structured output."""

    model: str
    usage: Usage

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        """Send `messages`, validate the reply as `output`, add the call to `usage`.

        `purpose` names the task (`analyse-failure`, `merge`, ...) for logs, caching and tests.
        """
        ...


class _RequestGate:
    """Whether real backends may send requests; the test suite turns it off."""

    allowed = True


allow_model_requests = _RequestGate()


def build_llm(config: Config) -> LLMClient | None:
    """The client for `config.llm.model`, or None for the offline analyst.

    Raises:
        ConfigError: the model string cannot be used.
    """
    if config.offline:
        return None
    if config.llm.model.startswith("scripted"):
        from pathlib import Path

        from ..errors import ConfigError
        from ..testing import ScriptedLLM

        _, _, script = config.llm.model.partition(":")
        if not script:
            raise ConfigError("the scripted model replays a file of answers: use --model scripted:PATH.json")
        return with_budget(ScriptedLLM.from_file(Path(script)), config)
    if config.llm.model.startswith("llamacpp/"):
        from .llamacpp_backend import LlamaCppClient

        client: LLMClient = LlamaCppClient(config.llm, gate=allow_model_requests)
    else:
        from .litellm_backend import LiteLLMClient

        client = LiteLLMClient(config.llm, gate=allow_model_requests)
    if config.llm.cache:
        from .cache import CachedClient

        client = CachedClient(client, config.llm, config.state_dir / "llm-cache.sqlite")
    return with_budget(client, config)


def with_budget(client: LLMClient, config: Config) -> LLMClient:
    """Wrap `client` in the configured hard caps (a no-op wrapper when none are set)."""
    from .capped import BudgetedClient

    return BudgetedClient(client, config.budget)


def model_price(model: str) -> tuple[float, float] | None:
    """Per-token (input, output) price of `model`, None when unknown or offline."""
    if model == "offline" or model.startswith(("scripted", "llamacpp/")):
        return None
    from .litellm_backend import price_per_token

    return price_per_token(model)
