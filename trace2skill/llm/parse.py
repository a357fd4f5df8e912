"""Turning a model's text reply into a validated pydantic object.

Shared by every backend so a reply is judged the same way whoever produced it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import LessonParseError

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_reply(text: str, output: type[M]) -> M:
    """Validate `text` as `output`, tolerating a Markdown code fence around the JSON.

    Raises:
        LessonParseError: the text is not valid JSON for the schema.
    """
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    last_error: Exception | None = None
    for candidate in candidates:
        try:
            return output.model_validate_json(candidate)
        except (ValidationError, json.JSONDecodeError) as exc:
            last_error = exc
    raise LessonParseError(f"reply is not a valid {output.__name__}: {str(last_error)[:300]}")


async def complete_with_repair(
    send: Callable[[list[dict[str, str]], type[BaseModel]], Awaitable[str]],
    messages: list[dict[str, str]],
    output: type[M],
) -> M:
    """Send, validate (in a worker thread, off the event loop), and on an invalid reply ask once
    more with the validation error.

    Raises:
        LessonParseError: the second reply is not valid either.
    """
    from ..prompts import render

    text = await send(messages, output)
    try:
        return await asyncio.to_thread(parse_reply, text, output)
    except LessonParseError as exc:
        repair = render("repair.md", error=str(exc), schema=json_schema(output))
        retry = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": repair}]
        return await asyncio.to_thread(parse_reply, await send(retry, output), output)


def json_schema(output: type[BaseModel]) -> dict:
    """`output.model_json_schema()`, a fresh copy each call. pydantic builds the schema anew on
    every call (tens of milliseconds for `AnalystReport`, on the event loop, twice a request),
    so it is built once per class and copied from its JSON text."""
    return json.loads(_schema_text(output))


@functools.cache
def _schema_text(output: type[BaseModel]) -> str:
    return json.dumps(output.model_json_schema())


def response_schema(output: type[BaseModel]) -> dict:
    """The JSON-schema `response_format` for `output`."""
    return {
        "type": "json_schema",
        "json_schema": {"name": output.__name__, "schema": json_schema(output), "strict": False},
    }
