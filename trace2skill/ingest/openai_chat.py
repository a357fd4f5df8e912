"""OpenAI chat-completions message lists (`tool_calls` plus `tool` replies).

Accepted shapes: a JSON list of messages, an object `{"messages": [...]}` (optionally with
`id`, `model`, `reward`, `outcome`), a JSON list of such conversations, or JSONL with one
conversation per line (or, when the first line is a single message, one message per line).

Tool replies are joined to the assistant step that made the call by `tool_call_id` (or the
first of SWE-agent's `tool_call_ids`); a reply
whose call never appeared is kept as a `tool` step flagged `unmatched_call` with a note, so
it is never lost. A message of the wrong type or with an unknown role becomes a `Skip` for
that message while the rest of the conversation is still read. The tau-bench and SWE-agent
readers reuse `build_steps` because their trajectories embed the same message shape.

OpenAI tool messages carry no error flag, so the shared `_steps.looks_like_error` decides
from the text (a traceback, `Error:`, a non-zero `Exit code: N`, in any case, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, derived_id, kind_of, looks_like_error, text_of
from .base import Document, Ledger, Sample

NAME = "openai_chat"
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_ID_KEYS = ("id", "conversation_id", "session_id", "trace_id", "task_id", "instance_id")
def is_message(value: JSONValue) -> bool:
    return isinstance(value, dict) and value.get("role") in ROLES and ("content" in value or "tool_calls" in value)


def is_conversation(value: JSONValue) -> bool:
    if isinstance(value, dict):
        value = value.get("messages")
    return isinstance(value, list) and bool(value) and all(is_message(m) for m in value[:3])


def sniff(sample: Sample) -> bool:
    if is_conversation(sample) or is_message(sample):
        return True
    return isinstance(sample, list) and bool(sample) and is_conversation(sample[0])


def lines_stand_alone(first: JSONValue) -> bool:
    """A conversation per line (not one conversation, a message per line): a large file may be
    cut into byte ranges (`stream.plan_shards`), each read with the whole file's mode."""
    return not is_message(first)


def read(doc: Document) -> Iterator[Trace | Skip]:
    for item in _conversations(doc):
        if isinstance(item, Skip):
            yield item
            continue
        record, value = item
        yield from conversation_trace(doc, record, value)


def _conversations(doc: Document) -> Iterator[tuple[str | None, JSONValue] | Skip]:
    if doc.kind == "json":
        value = doc.value()
        if is_conversation(value) or (isinstance(value, list) and not value):
            yield None, value
        elif isinstance(value, list):
            yield from ((f"item {i}", v) for i, v in enumerate(value))
        else:
            yield doc.skip(f"expected a message list or {{'messages': [...]}}, got {kind_of(value)}")
        return
    records = doc.records()
    first = None if doc.meta.get("lines_stand_alone") else first_record(doc)
    if first is not None and is_message(first[1]):
        yield from _one_conversation_per_file(doc, records)
    else:
        yield from ((r if isinstance(r, Skip) else (f"line {r[0]}", r[1])) for r in records)


def first_record(doc: Document) -> tuple[int, JSONValue] | None:
    """`(line, value)` of the first well-formed record of a JSONL document, None if none is."""
    records = doc.records()
    try:
        return next((item for item in records if not isinstance(item, Skip)), None)
    finally:
        records.close()  # type: ignore[attr-defined]


def _one_conversation_per_file(doc: Document, records: Iterator[JSONValue]) -> Iterator[tuple[str | None, JSONValue] | Skip]:
    messages: list[JSONValue] = []
    for item in records:
        if isinstance(item, Skip):
            yield item
        else:
            messages.append(item[1])
    yield None, messages


def conversation_trace(doc: Document, record: str | None, value: JSONValue) -> Iterator[Trace | Skip]:
    """Build one trace from a conversation value, yielding skips for its bad messages."""
    meta = value if isinstance(value, dict) else {}
    messages = meta.get("messages") if meta else value
    if not isinstance(messages, list):
        yield doc.skip(f"expected a list of messages, got {kind_of(messages)}", record)
        return
    problems: list[Skip] = []
    steps = build_steps(messages, lambda i, why: problems.append(doc.skip(why, _where(record, i))), doc.ledger).build()
    yield from problems
    if not steps:
        yield doc.skip("conversation has no usable messages", record)
        return
    reward = meta.get("reward")
    yield Trace(
        id=_trace_id(meta) or derived_id("chat", steps),
        task=next((s.message for s in steps if s.source == "user" and s.message), ""),
        model=meta.get("model") if isinstance(meta.get("model"), str) else None,
        steps=steps,
        outcome=_outcome(meta),
        reward=float(reward) if isinstance(reward, (int, float)) and not isinstance(reward, bool) else None,
        source=SourceRef(path=doc.path, record=record),
        format=NAME,
    )


def build_steps(messages: list[JSONValue], problem: Callable[[int, str], None], ledger: Ledger | None = None) -> StepList:
    """Convert OpenAI-style messages into steps; `problem(index, reason)` gets each bad one.

    With a `ledger`, each message is counted as a record, with the tool calls and tool
    results it holds (`ingest.fidelity`)."""
    steps = StepList()
    for i, message in enumerate(messages):
        if ledger is not None:
            ledger.saw(records=1, **count_message(message))
        if not isinstance(message, dict):
            problem(i, f"message is {kind_of(message)}, expected an object")
            continue
        role = message.get("role")
        text = text_of(message.get("content"))
        if role in ("system", "developer"):
            steps.add("system", text)
        elif role == "user":
            steps.add("user", text)
        elif role == "assistant":
            _add_assistant(steps, message, text)
        elif role in ("tool", "function"):
            _add_tool_result(steps, message, text)
        else:
            problem(i, f"unknown role {role!r}; expected one of {sorted(ROLES)}")
    return steps


def count_message(message: JSONValue) -> dict[str, int]:
    """Raw tool calls and tool results one OpenAI-style message holds."""
    if not isinstance(message, dict):
        return {"calls": 0, "results": 0}
    calls = message.get("tool_calls")
    n_calls = sum(isinstance(c, dict) for c in calls) if isinstance(calls, list) else 0
    n_calls += isinstance(message.get("function_call"), dict)
    return {"calls": n_calls, "results": int(message.get("role") in ("tool", "function"))}


def _add_assistant(steps: StepList, message: JSONObject, text: str) -> None:
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    index = steps.add("agent", text, reasoning=reasoning if isinstance(reasoning, str) else None)
    calls = message.get("tool_calls") or []
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            function = call.get("function") if isinstance(call.get("function"), dict) else call
            call_id = call.get("id")
            steps.add_call(
                index,
                ToolCall(
                    id=call_id if isinstance(call_id, str) else None,
                    name=str(function.get("name") or "unknown"),
                    arguments=arguments_text(function.get("arguments")),
                ),
            )
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        steps.add_call(
            index, ToolCall(name=str(legacy.get("name") or "unknown"), arguments=arguments_text(legacy.get("arguments")))
        )


def _add_tool_result(steps: StepList, message: JSONObject, text: str) -> None:
    call_id = message.get("tool_call_id")
    several = message.get("tool_call_ids")
    if call_id is None and isinstance(several, list) and several:
        call_id = several[0]
    call_id = call_id if isinstance(call_id, str) else None
    observation = Observation(call_id=call_id, content=text, is_error=looks_like_error(text))
    last = steps.last()
    if call_id is None and last is not None and last.source == "agent" and last.tool_calls:
        steps.attach_to_step(len(steps) - 1, observation)
        return
    note = (
        f"tool result for call {call_id!r} has no matching tool call"
        if call_id
        else "tool result without a tool_call_id and no preceding call"
    )
    steps.attach(observation, extra={"note": note} if not steps.knows_call(call_id) else None)


def _trace_id(meta: JSONObject) -> str | None:
    for key in _ID_KEYS:
        value = meta.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _outcome(meta: JSONObject) -> str:
    for key in ("outcome", "label", "resolved", "success"):
        value = meta.get(key)
        if isinstance(value, bool):
            return "success" if value else "failure"
        if isinstance(value, str) and value.lower() in ("success", "failure", "unknown"):
            return value.lower()
    return "unknown"


def _where(record: str | None, message_index: int) -> str:
    return f"{record}, message {message_index}" if record else f"message {message_index}"
