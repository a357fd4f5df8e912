"""The deterministic scripted model that ships with the package.

`ScriptedLLM` answers from a queue per purpose or from a function, validates every answer
against the requested output model exactly as a real backend's reply would be, and records
every call. Tests inject it instead of patching anything; it never touches the network. The
model preflight (`purpose="preflight"`) passes without being recorded unless an answer is
queued for it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from .errors import LLMError
from .types import JSONObject, Usage

M = TypeVar("M", bound=BaseModel)

Answer = BaseModel | JSONObject | str | Exception
"""A scripted reply: a model instance, its JSON as a dict or a string, or an exception to raise."""
Responder = Callable[[list[dict[str, str]], type[BaseModel], str], Answer]


@dataclass(frozen=True)
class RecordedCall:
    purpose: str
    messages: list[dict[str, str]]
    output: str


class ScriptedLLM:
    """A fake `LLMClient` with scripted answers.

    Args:
        responder: called as `responder(messages, output, purpose)` when no queued answer
            exists for the purpose; returns a model instance, a dict, a JSON string, or raises.
        model: name reported in summaries and provenance.
    """

    free_preflight = True
    """The preflight is answered here, not sent anywhere, so it takes nothing from `--max-calls`."""

    def __init__(self, responder: Responder | None = None, model: str = "scripted", delay: float = 0.0):
        self.model = model
        self.delay = delay
        self.usage = Usage()
        self.calls: list[RecordedCall] = []
        self._queues: dict[str, deque[Answer]] = defaultdict(deque)
        self._responder = responder

    @classmethod
    def from_file(cls, path: "Path", model: str | None = None) -> "ScriptedLLM":
        """A scripted model answering every call of a purpose with that purpose's answer in a JSON file.

        The file maps purposes (`analyse-failure`, `analyse-success`, `merge`) to one answer
        each, so `--model scripted:answers.json` replays a fixed script whatever the call order.
        An optional `"_delay": seconds` makes every call take that long (for interruption tests).

        Raises:
            ConfigError: the file cannot be read or is not a JSON object.
        """
        import json

        from .errors import ConfigError

        try:
            script = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"cannot read the scripted model's answers {str(path)!r}: {exc}") from None
        if not isinstance(script, dict):
            raise ConfigError(f"{str(path)!r} must map purposes to answers, e.g. {{\"merge\": {{...}}}}")

        def answer(messages: list[dict[str, str]], output: type[BaseModel], purpose: str) -> Answer:
            if purpose not in script:
                raise LLMError(f"the script {str(path)!r} has no answer for {purpose!r}")
            return script[purpose]

        delay = float(script.pop("_delay", 0.0))
        return cls(answer, model=model or f"scripted:{path}", delay=delay)

    def enqueue(self, purpose: str, *answers: Answer) -> "ScriptedLLM":
        """Queue answers for calls with this purpose, consumed in order."""
        self._queues[purpose].extend(answers)
        return self

    def count(self, purpose: str | None = None) -> int:
        return sum(1 for c in self.calls if purpose is None or c.purpose == purpose)

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        if purpose == "preflight" and not self._queues[purpose]:
            return output.model_validate({"ok": True})  # the connection check always passes, unrecorded
        self.calls.append(RecordedCall(purpose, messages, output.__name__))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._queues[purpose]:
            answer = self._queues[purpose].popleft()
        elif self._responder is not None:
            answer = self._responder(messages, output, purpose)
        else:
            raise LLMError(f"ScriptedLLM has no answer queued for purpose {purpose!r}")
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, BaseModel):
            answer = answer.model_dump(mode="json")
        value = output.model_validate_json(answer) if isinstance(answer, str) else output.model_validate(answer)
        tokens_in = sum(len(m["content"]) for m in messages) // 4
        self.usage = self.usage + Usage(calls=1, input_tokens=tokens_in, output_tokens=len(value.model_dump_json()) // 4, cost=0.0)
        return value
