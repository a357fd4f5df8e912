"""Reader for OpenAI Responses API items.

Accepted shapes: a list of items; a record `{instructions?, input, output, model?, id?}`
(a logged request with its response) or a list of such records; JSONL with one item per line
(the whole file is one trajectory) or one record per line (one trajectory per line).

Items become steps: `message` by role (`developer` and `system` as system steps), `reasoning`
and assistant text and `function_call`s of one turn share an agent step, and every
`*_call_output` is joined to its call by `call_id`. The Responses API has no task outcome, so
outcome stays `unknown`. `ItemAssembler` is reused by the Codex reader, whose rollouts wrap
the same items.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, as_int, derived_id, exit_code_in, kind_of, looks_like_error, string_id, text_of
from .base import Document, Ledger, Sample

NAME = "responses"

_ROLES = {"user": "user", "assistant": "agent", "system": "system", "developer": "system"}
_PART_TYPES = ("input_text", "output_text", "refusal", "input_image", "input_file", "input_audio")
ENCRYPTED_REASONING = "[encrypted reasoning]"
"""Placeholder kept where the provider returned only encrypted reasoning."""


def sniff(sample: Sample) -> bool:
    """True for a Responses item, a list of them, or a record holding them."""
    if isinstance(sample, dict):
        return _is_record(sample) or _is_typed_item(sample)
    if isinstance(sample, list):
        heads = [x for x in sample[:20] if isinstance(x, dict)]
        return bool(heads) and (_is_record(heads[0]) or any(_is_typed_item(x) for x in heads))
    return False


def read(doc: Document) -> Iterator[Trace | Skip]:
    """Yield one trajectory per item list or record, and a `Skip` per unusable item."""
    if doc.kind == "jsonl":
        yield from _read_jsonl(doc)
        return
    value = doc.value()
    if isinstance(value, dict) and _is_record(value):
        yield from _read_record(doc, value, None)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and _is_record(v) for v in value):
        for i, record in enumerate(value):
            yield from _read_record(doc, record, f"item {i}")
    elif isinstance(value, list):
        assembler = ItemAssembler(ledger=doc.ledger)
        for i, item in enumerate(value):
            if (reason := assembler.feed(item)) is not None:
                yield doc.skip(reason, f"item {i}")
        yield from _finish(doc, assembler, None, {})
    else:
        yield doc.skip(f"expected a list of Responses items or an input/output record, got {kind_of(value)}")


def _read_jsonl(doc: Document) -> Iterator[Trace | Skip]:
    """The first object decides: records give a trajectory per line, items one per file."""
    assembler: ItemAssembler | None = None
    per_line: bool | None = None
    for entry in doc.records():
        if isinstance(entry, Skip):
            yield entry
            continue
        line, value = entry
        if per_line is None and isinstance(value, dict):
            per_line = _is_record(value)
        if per_line and isinstance(value, dict) and _is_record(value):
            yield from _read_record(doc, value, f"line {line}")
        elif per_line:
            yield doc.skip(
                f"expected an input/output record like the earlier lines, got {kind_of(value)}", f"line {line}"
            )
        else:
            assembler = assembler or ItemAssembler(ledger=doc.ledger)
            if (reason := assembler.feed(value)) is not None:
                yield doc.skip(reason, f"line {line}")
    if assembler is not None:
        yield from _finish(doc, assembler, None, {})


def _read_record(doc: Document, record: dict, where: str | None) -> Iterator[Trace | Skip]:
    assembler = ItemAssembler(ledger=doc.ledger)
    instructions = record.get("instructions")
    if isinstance(instructions, str) and instructions:
        assembler.steps.add("system", instructions)
    prompt = record.get("input")
    if isinstance(prompt, str):
        assembler.steps.add("user", prompt)
        prompt = []
    for part in ("input", "output"):
        items = prompt if part == "input" else record.get("output")
        if items is None:
            continue
        if not isinstance(items, list):
            yield doc.skip(f"{part!r} must be a list of items, got {kind_of(items)}", where)
            continue
        for i, item in enumerate(items):
            if (reason := assembler.feed(item)) is not None:
                yield doc.skip(reason, f"{where + ' ' if where else ''}{part}[{i}]")
    extra = {k: record[k] for k in ("status", "usage", "metadata") if record.get(k) is not None}
    yield from _finish(doc, assembler, where, extra, record_id=record.get("id"), model=record.get("model"))


def _finish(
    doc: Document,
    assembler: ItemAssembler,
    where: str | None,
    extra: JSONObject,
    *,
    record_id: JSONValue = None,
    model: JSONValue = None,
) -> Iterator[Trace | Skip]:
    steps = assembler.steps.build()
    if not steps:
        yield doc.skip("no usable Responses items", where)
        return
    yield Trace(
        id=string_id(record_id) or derived_id(NAME, steps),
        task=assembler.steps.first_message("user"),
        model=model if isinstance(model, str) else None,
        steps=steps,
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


class ItemAssembler:
    """Turns a stream of Responses items into steps.

    Args:
        is_injected: called with `(role, text)` for each message; a True answer drops the
            message (Codex injects environment and instruction text as user messages).
    """

    def __init__(self, is_injected: Callable[[str, str], bool] | None = None, ledger: Ledger | None = None,
                 *, count_records: bool = True):
        self.steps = StepList()
        self.injected = 0
        self._is_injected = is_injected
        self._ledger = ledger
        self._count_records = count_records

    def feed(self, item: JSONValue) -> str | None:
        """Add one item; return why it cannot be used, or None when it was used."""
        if self._ledger is not None:
            self._ledger.saw(records=int(self._count_records), **count_item(item))
        if not isinstance(item, dict):
            return f"expected a Responses item object, got {kind_of(item)}"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            return self._message(item)
        if kind == "reasoning":
            return self._reasoning(item)
        if isinstance(kind, str) and kind.endswith("_call_output"):
            return self._call_output(item, kind)
        if isinstance(kind, str) and kind.endswith("_call"):
            return self._call(item, kind)
        return f"unknown Responses item type {kind!r}"

    def _message(self, item: dict) -> str | None:
        role = item.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            return f"message has unknown role {role!r}"
        content = item.get("content")
        if not isinstance(content, (str, list)):
            return f"message content must be a string or a list of parts, got {kind_of(content)}"
        text = text_of(content)
        if self._is_injected is not None and self._is_injected(role, text):
            self.injected += 1
            if self._ledger is not None:
                self._ledger.ignore("messages the harness injects (environment, AGENTS.md instructions); counted in extra.injected_messages")
            return None
        if _ROLES[role] == "agent":
            index = self.steps.open_agent_step(after_calls=True, after_message=True)
            self.steps.append_text(index, text)
        else:
            self.steps.add(_ROLES[role], text, extra={"role": role} if role == "developer" else None)
        return None

    def _reasoning(self, item: dict) -> str | None:
        parts = [text_of(item.get("summary")), text_of(item.get("content"))]
        text = "\n\n".join(p for p in parts if p)
        if not text and item.get("encrypted_content"):
            text = ENCRYPTED_REASONING
        index = self.steps.open_agent_step(after_calls=True, after_message=True)
        self.steps.append_reasoning(index, text)
        return None

    def _call(self, item: dict, kind: str) -> str | None:
        name = item.get("name") if kind in ("function_call", "custom_tool_call", "mcp_call") else kind[: -len("_call")]
        if not isinstance(name, str) or not name:
            return f"{kind} has no tool name"
        call_id = item.get("call_id") or item.get("id")
        raw = next((item[k] for k in ("arguments", "input", "action", "queries", "code") if k in item), None)
        index = self.steps.open_agent_step()
        self.steps.add_call(
            index, ToolCall(id=call_id if isinstance(call_id, str) else None, name=name, arguments=arguments_text(raw))
        )
        if any(k in item for k in ("output", "error", "outputs")):
            failed = item.get("status") == "failed" or bool(item.get("error"))
            content = text_of(item.get("output") or item.get("outputs") or item.get("error"))
            self.steps.attach_to_step(
                index,
                Observation(call_id=call_id if isinstance(call_id, str) else None, content=content, is_error=failed),
            )
        return None

    def _call_output(self, item: dict, kind: str) -> str | None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            return f"{kind} has no call_id"
        content, exit_code, failed = parse_output(item.get("output"))
        failed = failed or item.get("status") == "failed"
        self.steps.attach(Observation(call_id=call_id, content=content, is_error=failed, exit_code=exit_code))
        return None


def count_item(item: JSONValue) -> dict[str, int]:
    """Raw tool calls and results one Responses item holds (a call item may carry its output)."""
    kind = item.get("type") if isinstance(item, dict) else None
    if not isinstance(kind, str):
        return {"calls": 0, "results": 0}
    if kind.endswith("_call_output"):
        return {"calls": 0, "results": 1}
    if kind.endswith("_call"):
        return {"calls": 1, "results": int(any(k in item for k in ("output", "error", "outputs")))}
    return {"calls": 0, "results": 0}


def parse_output(output: JSONValue) -> tuple[str, int | None, bool]:
    """Split a tool output into `(text, exit_code, is_error)`.

    Codex writes shell results as a JSON string `{"output": ..., "metadata": {"exit_code": N}}`
    or as text opening with `Exit code: N`; structured outputs may carry `success: false`.
    A stated exit code decides; plain text without one is judged by `looks_like_error`.
    """
    if isinstance(output, str):
        parsed = _json_object(output)
        if parsed is not None and isinstance(parsed.get("output"), str):
            metadata = parsed.get("metadata")
            code = as_int(metadata.get("exit_code")) if isinstance(metadata, dict) else None
            return parsed["output"], code, code not in (None, 0)
        code = exit_code_in(output)
        return output, code, code not in (None, 0) or (code is None and looks_like_error(output))
    if isinstance(output, dict):
        failed = output.get("success") is False or output.get("status") == "failed"
        return text_of(output.get("content", output.get("output"))), None, failed
    return text_of(output), None, False


def _json_object(text: str) -> dict | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_typed_item(value: dict) -> bool:
    kind = value.get("type")
    if not isinstance(kind, str):
        return False
    if kind == "reasoning" or kind.endswith("_call") or kind.endswith("_call_output"):
        return "call_id" in value or "summary" in value or "id" in value or "name" in value
    if kind == "message" and isinstance(value.get("role"), str) and value["role"] in _ROLES:
        content = value.get("content")
        if isinstance(content, str):
            return "stop_reason" not in value
        return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in _PART_TYPES for p in content)
    return False


def _is_record(value: dict) -> bool:
    if "messages" in value or "type" in value:
        return False
    lists = [value.get(k) for k in ("input", "output")]
    return any(isinstance(v, list) and any(isinstance(x, dict) and _is_typed_item(x) for x in v[:20]) for v in lists)
