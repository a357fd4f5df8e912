"""Reader for Anthropic Messages API conversations.

Accepted shapes: `{system?, messages: [...], model?, id?}` (a request body or a logged
conversation), a list of those, a bare list of messages, or JSONL with one conversation or
one message per line.

Assistant turns become agent steps (`text` as message, `thinking` as reasoning, `tool_use` as
calls). Tool results arrive as `tool_result` blocks inside the *next user turn*; they are
joined to their `tool_use` by id and `is_error` is kept, and a user turn that holds only
results makes no user step. Messages carry no task outcome, so outcome stays `unknown`.
`add_message` is shared with the Claude Code reader, whose lines wrap the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, derived_id, exit_code_in, kind_of, string_id, text_of
from .base import Document, Ledger, Sample

NAME = "anthropic"

_ONLY_ANTHROPIC = ("tool_use", "tool_result", "thinking", "redacted_thinking", "server_tool_use")

ResultReader = Callable[[dict], Observation]


def sniff(sample: Sample) -> bool:
    """True for an Anthropic conversation, a list of them, or a list of Anthropic messages."""
    if isinstance(sample, list):
        heads = [x for x in sample[:50] if isinstance(x, dict)]
        if heads and isinstance(heads[0].get("messages"), list):
            return _is_conversation(heads[0])
        return bool(heads) and _has_anthropic_blocks(heads)
    if isinstance(sample, dict):
        if isinstance(sample.get("messages"), list):
            return _is_conversation(sample)
        return "role" in sample and _has_anthropic_blocks([sample])
    return False


def read(doc: Document) -> Iterator[Trace | Skip]:
    """Yield one trajectory per conversation, and a `Skip` per unusable message or block."""
    if doc.kind == "jsonl":
        yield from _read_jsonl(doc)
        return
    value = doc.value()
    if isinstance(value, dict) and "messages" in value:
        yield from _read_conversation(doc, value, None)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "messages" in v for v in value):
        for i, conversation in enumerate(value):
            yield from _read_conversation(doc, conversation, f"item {i}")
    elif isinstance(value, list):
        yield from _read_conversation(doc, {"messages": value}, None, label="")
    else:
        yield doc.skip(f"expected an Anthropic conversation or message list, got {kind_of(value)}")


def _read_jsonl(doc: Document) -> Iterator[Trace | Skip]:
    """The first object decides: conversations give a trajectory per line, messages one per file."""
    steps: StepList | None = None
    per_line: bool | None = None
    for entry in doc.records():
        if isinstance(entry, Skip):
            yield entry
            continue
        line, value = entry
        if per_line is None and isinstance(value, dict):
            per_line = "messages" in value
        if per_line and isinstance(value, dict) and "messages" in value:
            yield from _read_conversation(doc, value, f"line {line}")
        elif per_line:
            yield doc.skip(
                f"expected a conversation object with 'messages' like the earlier lines, got {kind_of(value)}",
                f"line {line}",
            )
        else:
            steps = steps or StepList()
            for reason in _add_one(steps, value, doc.ledger):
                yield doc.skip(reason, f"line {line}")
    if steps is not None:
        yield from _finish(doc, steps, {}, None)


def _read_conversation(
    doc: Document, conversation: dict, where: str | None, *, label: str = "messages"
) -> Iterator[Trace | Skip]:
    messages = conversation.get("messages")
    if not isinstance(messages, list):
        yield doc.skip(f"'messages' must be a list, got {kind_of(messages)}", where)
        return
    steps = StepList()
    system = conversation.get("system")
    if system:
        steps.add("system", text_of(system))
    for i, message in enumerate(messages):
        prefix = f"{where} " if where else ""
        record = f"{prefix}{label}[{i}]" if label else f"{prefix}item {i}"
        for reason in _add_one(steps, message, doc.ledger):
            yield doc.skip(reason, record)
    yield from _finish(doc, steps, conversation, where)


def _add_one(steps: StepList, message: JSONValue, ledger: Ledger) -> list[str]:
    calls, results = count_blocks(message.get("content") if isinstance(message, dict) else None)
    ledger.saw(records=1, calls=calls, results=results)
    if not isinstance(message, dict):
        return [f"expected a message object, got {kind_of(message)}"]
    return add_message(steps, message.get("role"), message.get("content"))


def _finish(doc: Document, steps: StepList, conversation: dict, where: str | None) -> Iterator[Trace | Skip]:
    built = steps.build()
    if not built:
        yield doc.skip("conversation has no usable messages", where)
        return
    trace_id = conversation.get("id")
    model = conversation.get("model")
    extra = {k: conversation[k] for k in ("metadata", "stop_reason", "usage") if conversation.get(k) is not None}
    yield Trace(
        id=string_id(trace_id) or derived_id(NAME, built),
        task=steps.first_message("user"),
        model=model if isinstance(model, str) else None,
        steps=built,
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


def add_message(
    steps: StepList,
    role: JSONValue,
    content: JSONValue,
    *,
    extra: JSONObject | None = None,
    continues_turn: bool = False,
    read_result: ResultReader | None = None,
) -> list[str]:
    """Add one Anthropic message to `steps`; return a reason for each unusable part.

    Args:
        steps: the trajectory under construction.
        role: `user` or `assistant`.
        content: a string or a list of content blocks.
        extra: fields for the step this message creates.
        continues_turn: the message is a further piece of the previous assistant response
            (Claude Code writes one line per block), so it extends the last agent step.
        read_result: turns a `tool_result` block into an `Observation` (default: its text and
            `is_error`); Claude Code passes one that also reads `toolUseResult`.
    """
    if role not in ("user", "assistant"):
        return [f"message has unknown role {role!r}"]
    if isinstance(content, str):
        blocks: list[JSONValue] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        return [f"message content must be a string or a list of blocks, got {kind_of(content)}"]
    if role == "assistant":
        return _add_assistant(steps, blocks, extra or {}, continues_turn)
    return _add_user(steps, blocks, extra or {}, read_result or result_observation)


def _add_assistant(steps: StepList, blocks: list, extra: JSONObject, continues_turn: bool) -> list[str]:
    index = steps.open_agent_step() if continues_turn else steps.add("agent", extra=extra)
    problems = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            steps.append_text(index, text_of(block.get("text")))
        elif kind == "thinking":
            steps.append_reasoning(index, text_of(block.get("thinking")))
        elif kind == "redacted_thinking":
            steps.append_reasoning(index, "[redacted thinking]")
        elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
            name = block.get("name")
            if not isinstance(name, str) or not name:
                problems.append(f"content[{i}]: {kind} block has no name")
                continue
            call_id = block.get("id")
            steps.add_call(
                index,
                ToolCall(
                    id=call_id if isinstance(call_id, str) else None,
                    name=name,
                    arguments=arguments_text(block.get("input")),
                ),
            )
        elif isinstance(kind, str) and kind.endswith("_tool_result"):
            steps.attach(result_observation(block))
        else:
            problems.append(
                f"content[{i}]: unknown assistant block type {kind!r}"
                if isinstance(block, dict)
                else f"content[{i}]: expected a block object, got {kind_of(block)}"
            )
    return problems


def _add_user(steps: StepList, blocks: list, extra: JSONObject, read_result: ResultReader) -> list[str]:
    texts, problems = [], []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                problems.append(f"content[{i}]: tool_result block has no tool_use_id")
                continue
            steps.attach(read_result(block))
        elif kind == "text":
            texts.append(text_of(block.get("text")))
        elif kind in ("image", "document"):
            texts.append(f"[{kind}]")
        else:
            problems.append(
                f"content[{i}]: unknown user block type {kind!r}"
                if isinstance(block, dict)
                else f"content[{i}]: expected a block object, got {kind_of(block)}"
            )
    text = "\n\n".join(t for t in texts if t)
    if text:
        steps.add("user", text, extra=extra)
    return problems


def count_blocks(content: JSONValue) -> tuple[int, int]:
    """Raw `(tool calls, tool results)` in a message's content blocks, for the ledger."""
    if not isinstance(content, list):
        return 0, 0
    kinds = [b.get("type") for b in content if isinstance(b, dict) and isinstance(b.get("type"), str)]
    calls = sum(k in ("tool_use", "server_tool_use", "mcp_tool_use") for k in kinds)
    return calls, sum(k == "tool_result" or k.endswith("_tool_result") for k in kinds)


def result_observation(block: dict) -> Observation:
    """A `tool_result` (or server tool result) block as an observation: an error when the
    block says `is_error`, or its text states a non-zero exit code."""
    call_id = block.get("tool_use_id")
    content = text_of(block.get("content"))
    code = exit_code_in(content)
    return Observation(
        call_id=call_id if isinstance(call_id, str) else None,
        content=content,
        is_error=block.get("is_error") is True or code not in (None, 0),
        exit_code=code,
    )


def _is_conversation(value: dict) -> bool:
    messages = [m for m in value["messages"][:50] if isinstance(m, dict)]
    if any(m.get("role") not in ("user", "assistant") or "tool_calls" in m for m in messages):
        return False
    return "system" in value or _has_anthropic_blocks(messages)


def _has_anthropic_blocks(messages: list[dict]) -> bool:
    return any(
        message.get("role") in ("user", "assistant")
        and isinstance(message.get("content"), list)
        and any(isinstance(b, dict) and b.get("type") in _ONLY_ANTHROPIC for b in message["content"])
        for message in messages
    )
