"""Reader for OpenTelemetry OTLP/JSON span exports of LLM agents.

Input: `{resourceSpans: [{resource, scopeSpans: [{scope, spans: [...]}]}]}`, a list of such
exports, or JSONL with one export per line (the collector's file exporter). Spans are grouped
by `traceId` into one trajectory each; for JSONL a first pass notes the last line holding each
trace, so a trace is emitted as soon as it is complete and memory holds only open traces.

Order comes from the span tree: depth-first from the roots, siblings by start time. Three
attribute dialects are understood, old and new alike:
- GenAI semantic conventions: `gen_ai.input.messages` / `gen_ai.output.messages` (JSON, with
  typed `parts`), `gen_ai.system_instructions`; the older indexed `gen_ai.prompt.{i}.*` and
  `gen_ai.completion.{i}.*`; and the event form (`gen_ai.user.message`, `gen_ai.choice`, ...).
- OpenInference: flattened `llm.input_messages.{i}.message.*` and `llm.output_messages.*`,
  re-nested before use; `openinference.span.kind`; `input.value` / `output.value`.
Every LLM span repeats the conversation so far, so only messages past the longest prefix
already seen become new steps. Tool spans (`execute_tool`, kind `TOOL`) become observations
joined to their call by `gen_ai.tool.call.id`, else by tool name; a tool span with no call
becomes an agent step holding both.

Outcome: OTLP has no task label. A root span with status ERROR means the run itself failed,
so the trajectory is labelled `failure`; otherwise `unknown` (status OK only says no exception).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, as_int, kind_of, looks_like_error, text_of
from .base import Document, Ledger, Sample

NAME = "otlp"

_LLM_OPERATIONS = ("chat", "text_completion", "generate_content", "completion")
_ERROR_CODES = (2, "2", "STATUS_CODE_ERROR", "ERROR", "error")
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def sniff(sample: Sample) -> bool:
    """True for an OTLP/JSON export (or a list of them)."""
    if isinstance(sample, list):
        return bool(sample) and sniff(sample[0])
    return isinstance(sample, dict) and isinstance(sample.get("resourceSpans"), list)


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: int
    attrs: JSONObject
    events: list[tuple[str, JSONObject]]
    failed: bool
    status_message: str
    resource: JSONObject = field(default_factory=dict)


def read(doc: Document) -> Iterator[Trace | Skip]:
    """Yield one trajectory per trace id, and a `Skip` per malformed export or span."""
    if doc.kind == "jsonl":
        yield from _read_jsonl(doc)
        return
    value = doc.value()
    exports = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for i, export in exports:
        for item in spans_of(export):
            if isinstance(item, str):
                yield doc.skip(item, f"item {i}" if i is not None else None)
            else:
                by_trace[item.trace_id].append(item)
    for trace_id, spans in by_trace.items():
        yield from _emit(doc, trace_id, spans)


def _read_jsonl(doc: Document) -> Iterator[Trace | Skip]:
    last_line: dict[str, int] = {}
    for entry in doc.records():
        if isinstance(entry, Skip):
            yield entry
            continue
        line, export = entry
        for item in spans_of(export):
            if isinstance(item, str):
                yield doc.skip(item, f"line {line}")
            else:
                last_line[item.trace_id] = line
    open_traces: dict[str, list[Span]] = defaultdict(list)
    for entry in doc.records():
        if isinstance(entry, Skip):
            continue
        line, export = entry
        for item in spans_of(export):
            if isinstance(item, Span):
                open_traces[item.trace_id].append(item)
        for trace_id in [t for t in open_traces if last_line.get(t) == line]:
            yield from _emit(doc, trace_id, open_traces.pop(trace_id))


def spans_of(export: JSONValue) -> Iterator[Span | str]:
    """Decode the spans of one export; yield a reason string for each malformed part."""
    if not isinstance(export, dict) or not isinstance(export.get("resourceSpans"), list):
        yield f"expected an OTLP export with a resourceSpans list, got {kind_of(export)}"
        return
    for r, resource_spans in enumerate(export["resourceSpans"]):
        if not isinstance(resource_spans, dict):
            yield f"resourceSpans[{r}] must be an object, got {kind_of(resource_spans)}"
            continue
        resource = resource_spans.get("resource")
        resource_attrs = attributes(resource.get("attributes")) if isinstance(resource, dict) else {}
        scopes = resource_spans.get("scopeSpans", resource_spans.get("instrumentationLibrarySpans"))
        if scopes is None:
            continue
        if not isinstance(scopes, list):
            yield f"resourceSpans[{r}].scopeSpans must be a list, got {kind_of(scopes)}"
            continue
        for s, scope_spans in enumerate(scopes):
            spans = scope_spans.get("spans") if isinstance(scope_spans, dict) else None
            if not isinstance(spans, list):
                yield f"resourceSpans[{r}].scopeSpans[{s}] has no spans list"
                continue
            for k, raw in enumerate(spans):
                span = _span(raw, resource_attrs)
                yield span if isinstance(span, Span) else f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}]: {span}"


def _span(raw: JSONValue, resource: JSONObject) -> Span | str:
    if not isinstance(raw, dict):
        return f"expected a span object, got {kind_of(raw)}"
    trace_id, span_id = raw.get("traceId"), raw.get("spanId")
    if not isinstance(trace_id, str) or not trace_id:
        return "span has no traceId"
    if not isinstance(span_id, str) or not span_id:
        return "span has no spanId"
    status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
    raw_events = raw.get("events") if isinstance(raw.get("events"), list) else []
    events = [
        (e["name"] if isinstance(e.get("name"), str) else "", attributes(e.get("attributes")))
        for e in raw_events
        if isinstance(e, dict)
    ]
    parent = raw.get("parentSpanId")
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent if isinstance(parent, str) and parent else None,
        name=raw.get("name") if isinstance(raw.get("name"), str) else "",
        start=as_int(raw.get("startTimeUnixNano")) or 0,
        attrs=attributes(raw.get("attributes")),
        events=events,
        failed=status.get("code") in _ERROR_CODES,
        status_message=status.get("message") if isinstance(status.get("message"), str) else "",
        resource=resource,
    )


def attributes(raw: JSONValue) -> JSONObject:
    """OTLP `[{key, value: AnyValue}]` as a plain dict (a dict is taken as already decoded)."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, list):
        return {}
    return {
        kv["key"]: any_value(kv.get("value")) for kv in raw if isinstance(kv, dict) and isinstance(kv.get("key"), str)
    }


def any_value(value: JSONValue) -> JSONValue:
    """Decode an OTLP AnyValue (`intValue` arrives as a string in OTLP/JSON)."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return as_int(value["intValue"])
    if "arrayValue" in value:
        items = value["arrayValue"].get("values", []) if isinstance(value["arrayValue"], dict) else []
        return [any_value(v) for v in items]
    if "kvlistValue" in value:
        items = value["kvlistValue"].get("values", []) if isinstance(value["kvlistValue"], dict) else []
        return attributes(items)
    return None


def unflatten(attrs: JSONObject, prefix: str) -> JSONValue:
    """Re-nest flattened keys: `p.0.message.role` -> `[{"message": {"role": ...}}]`."""
    root: JSONObject = {}
    for key, value in attrs.items():
        if not key.startswith(prefix + "."):
            continue
        *path, leaf = key[len(prefix) + 1 :].split(".")
        if len(path) > 32:
            continue
        node = root
        for part in path:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if not isinstance(node.get(leaf), dict):
            node[leaf] = value
    return _listify(root) if root else None


def _listify(node: JSONValue) -> JSONValue:
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


def _count(ledger: Ledger, spans: list[Span]) -> None:
    """Ledger: spans are the records; the calls are the distinct calls named in LLM messages
    and tool spans (every LLM span repeats the history, so each is counted once, by id, else by
    name and arguments), the results the distinct answers (tool messages, tool spans). A tool
    span with no call id answers the first call of its name it has not answered yet."""
    calls: dict[tuple, str] = {}
    results: set[tuple] = set()
    tools = []
    for span in spans:
        kind = _span_kind(span)
        if kind == "llm":
            for message in input_messages(span) + output_messages(span):
                calls.update({(("id", c.id) if c.id else ("anon", c.name, c.arguments)): c.name for c in message.calls})
                results.update(("id", r.call_id) if r.call_id else ("anon", r.content) for r in message.results)
        elif kind == "tool":
            tools.append(span)
        else:
            ledger.ignore("spans that are neither LLM nor tool calls (agent, chain, HTTP) structure the run; no message in them")
    taken: set[tuple] = set()
    for span in tools:
        call_id = _first_str(span.attrs, "gen_ai.tool.call.id", "tool_call.id")
        name = _first_str(span.attrs, "gen_ai.tool.name", "tool.name", "tool_call.function.name") or span.name
        key = ("id", call_id) if call_id else next((k for k, n in calls.items() if n == name and k not in taken), ("span", span.span_id))
        taken.add(key)
        calls.setdefault(key, name)
        results.add(key)
    ledger.saw(records=len(spans), calls=len(calls), results=len(results))


def _emit(doc: Document, trace_id: str, spans: list[Span]) -> Iterator[Trace | Skip]:
    _count(doc.ledger, spans)
    ordered = span_order(spans)
    conversation = _Conversation()
    for span in ordered:
        conversation.add_span(span)
    steps = conversation.steps.build()
    where = f"trace {trace_id}"
    if not steps:
        yield doc.skip(f"no LLM or tool spans among {len(spans)} span(s)", where)
        return
    root = ordered[0]
    extra: JSONObject = {"span_count": len(spans), **conversation.extra()}
    if root.failed and root.status_message:
        extra["status_message"] = root.status_message
    service = root.resource.get("service.name")
    yield Trace(
        id=trace_id,
        task=steps_task(conversation.steps, root),
        agent=conversation.agent or (service if isinstance(service, str) else None),
        model=conversation.model,
        steps=steps,
        outcome="failure" if root.failed else "unknown",
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


def trace_from_spans(doc: Document, trace_id: str, spans: list[Span], format_name: str) -> Iterator[Trace | Skip]:
    """One trajectory from the spans of one trace, for readers that map other span stores onto
    `Span` (Langfuse exports, Copilot's SQLite store) and name their own format."""
    for item in _emit(doc, trace_id, spans):
        yield item.model_copy(update={"format": format_name}) if isinstance(item, Trace) else item


def span_order(spans: list[Span]) -> list[Span]:
    """Depth-first from the roots, siblings (and roots) by start time then span id."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in spans:
        children[span.parent_id if span.parent_id in ids else None].append(span)
    ordered, seen, stack = [], set(), sorted(children[None], key=_start_key, reverse=True)
    while stack:
        span = stack.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        ordered.append(span)
        stack.extend(sorted(children.get(span.span_id, []), key=_start_key, reverse=True))
    ordered.extend(sorted((s for s in spans if s.span_id not in seen), key=_start_key))
    return ordered


def _start_key(span: Span) -> tuple[int, str]:
    return span.start, span.span_id


def steps_task(steps: StepList, root: Span) -> str:
    task = steps.first_message("user")
    if task:
        return task
    value = root.attrs.get("input.value")
    return value if isinstance(value, str) else ""


@dataclass
class _Message:
    role: str
    text: str = ""
    reasoning: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    results: list[Observation] = field(default_factory=list)

    def fingerprint(self) -> tuple:
        return (
            self.role,
            self.text.strip(),
            tuple(c.id or c.name for c in self.calls),
            tuple(r.call_id for r in self.results),
        )


class _Conversation:
    """Steps rebuilt from the spans of one trace, in order."""

    def __init__(self) -> None:
        self.steps = StepList()
        self.history: list[tuple] = []
        self.pending: list[tuple[ToolCall, int]] = []
        self.model: str | None = None
        self.agent: str | None = None
        self.provider: str | None = None
        self.tokens = {"input_tokens": 0, "output_tokens": 0}

    def add_span(self, span: Span) -> None:
        attrs = span.attrs
        self.agent = self.agent or _str(attrs.get("gen_ai.agent.name"))
        kind = _span_kind(span)
        if kind == "llm":
            self._llm(span)
        elif kind == "tool":
            self._tool(span)

    def extra(self) -> JSONObject:
        extra: JSONObject = {}
        if self.provider:
            extra["provider"] = self.provider
        if any(self.tokens.values()):
            extra["usage"] = dict(self.tokens)
        return extra

    def _llm(self, span: Span) -> None:
        attrs = span.attrs
        self.model = self.model or _first_str(attrs, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
        self.provider = self.provider or _first_str(
            attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"
        )
        for name, keys in (
            ("input_tokens", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")),
            (
                "output_tokens",
                ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
            ),
        ):
            self.tokens[name] += next((as_int(attrs[k]) or 0 for k in keys if k in attrs), 0)
        inputs, outputs = input_messages(span), output_messages(span)
        seen = [m.fingerprint() for m in inputs]
        shared = 0
        while shared < min(len(seen), len(self.history)) and seen[shared] == self.history[shared]:
            shared += 1
        for message in inputs[shared:]:
            self._add(message, span, is_output=False)
        for message in outputs:
            self._add(message, span, is_output=True)
        self.history = seen + [m.fingerprint() for m in outputs]

    def _add(self, message: _Message, span: Span, *, is_output: bool) -> None:
        for result in message.results:
            if not self.steps.has_result(result.call_id):
                self._resolve(result.call_id)
                self.steps.attach(result)
        if message.role == "tool" or (message.results and not message.text and not message.calls):
            return
        source = {"assistant": "agent", "user": "user", "system": "system", "developer": "system"}.get(
            message.role, "user"
        )
        if source != "agent" and not message.text:
            return
        extra = {"span_id": span.span_id} if is_output else {}
        index = self.steps.add(source, message.text, reasoning=message.reasoning or None, extra=extra)
        for call in message.calls:
            self.steps.add_call(index, call)
            self.pending.append((call, index))

    def _tool(self, span: Span) -> None:
        attrs = span.attrs
        call_id = _first_str(attrs, "gen_ai.tool.call.id", "tool_call.id")
        name = _first_str(attrs, "gen_ai.tool.name", "tool.name", "tool_call.function.name") or span.name
        result = _first_present(attrs, "gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
        content = arguments_text(result) if isinstance(result, (dict, list)) else text_of(result)
        observation = Observation(
            call_id=call_id,
            content=content,
            is_error=span.failed or "error.type" in attrs or looks_like_error(content),
        )
        if self.steps.knows_call(call_id):
            if not self.steps.has_result(call_id):
                self._resolve(call_id)
                self.steps.attach(observation)
            return
        match = next(((c, i) for c, i in self.pending if c.name == name and (call_id is None or c.id is None)), None)
        if match is not None:
            self.pending.remove(match)
            self.steps.attach_to_step(match[1], observation.model_copy(update={"call_id": match[0].id}))
            return
        arguments = _first_present(
            attrs, "gen_ai.tool.call.arguments", "tool_call.function.arguments", "input.value", "traceloop.entity.input"
        )
        index = self.steps.add("agent", extra={"span_id": span.span_id, "synthesized_call": True})
        self.steps.add_call(index, ToolCall(id=call_id, name=name, arguments=arguments_text(arguments)))
        self.steps.attach_to_step(index, observation)

    def _resolve(self, call_id: str | None) -> None:
        if call_id is not None:
            self.pending = [(c, i) for c, i in self.pending if c.id != call_id]


def _span_kind(span: Span) -> str:
    attrs = span.attrs
    operation = attrs.get("gen_ai.operation.name")
    oi_kind = str(attrs.get("openinference.span.kind", "")).upper()
    if operation == "execute_tool" or oi_kind == "TOOL" or attrs.get("traceloop.span.kind") == "tool":
        return "tool"
    if operation in _LLM_OPERATIONS or oi_kind == "LLM":
        return "llm"
    message_keys = (
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.prompt.",
        "gen_ai.completion.",
        "llm.input_messages.",
        "llm.output_messages.",
    )
    if any(k.startswith(message_keys) for k in attrs) or any(
        n in _MESSAGE_EVENTS or n.startswith(("gen_ai.choice", "gen_ai.content.")) for n, _ in span.events
    ):
        return "llm"
    return "tool" if "gen_ai.tool.name" in attrs else "other"


def input_messages(span: Span) -> list[_Message]:
    """The prompt of an LLM span, from whichever dialect it uses."""
    attrs = span.attrs
    messages = (
        [_Message("system", text_of(_json(attrs["gen_ai.system_instructions"])))]
        if "gen_ai.system_instructions" in attrs
        else []
    )
    if "gen_ai.input.messages" in attrs:
        return messages + [_from_parts(m) for m in _list(_json(attrs["gen_ai.input.messages"]))]
    for prefix in ("gen_ai.prompt", "llm.input_messages"):
        if (nested := unflatten(attrs, prefix)) is not None:
            return messages + [_from_chat(m) for m in _list(nested)]
    for name, event_attrs in span.events:
        if name == "gen_ai.content.prompt":
            return messages + [_from_chat(m) for m in _list(_json(event_attrs.get("gen_ai.prompt")))]
    return messages + [_from_event(_MESSAGE_EVENTS[n], a) for n, a in span.events if n in _MESSAGE_EVENTS]


def output_messages(span: Span) -> list[_Message]:
    """The reply of an LLM span, from whichever dialect it uses."""
    attrs = span.attrs
    if "gen_ai.output.messages" in attrs:
        return [_from_parts(m, default_role="assistant") for m in _list(_json(attrs["gen_ai.output.messages"]))]
    for prefix in ("gen_ai.completion", "llm.output_messages"):
        if (nested := unflatten(attrs, prefix)) is not None:
            return [_from_chat(m, default_role="assistant") for m in _list(nested)]
    replies = []
    for name, event_attrs in span.events:
        if name == "gen_ai.content.completion":
            replies.extend(
                _from_chat(m, default_role="assistant") for m in _list(_json(event_attrs.get("gen_ai.completion")))
            )
        elif name == "gen_ai.choice":
            message = _json(event_attrs.get("message"))
            replies.append(_from_chat(message if isinstance(message, dict) else event_attrs, default_role="assistant"))
    return replies


def _from_parts(message: JSONValue, default_role: str = "user") -> _Message:
    """A current-convention message `{role, parts: [{type, ...}]}`."""
    if not isinstance(message, dict):
        return _Message(default_role, text_of(message))
    result = _Message(_str(message.get("role")) or default_role)
    texts, reasoning = [], []
    for part in (
        _list(message.get("parts")) if "parts" in message else [{"type": "text", "content": message.get("content")}]
    ):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "tool_call":
            result.calls.append(
                ToolCall(
                    id=_str(part.get("id")),
                    name=_str(part.get("name")) or "unknown",
                    arguments=arguments_text(part.get("arguments")),
                )
            )
        elif kind == "tool_call_response":
            response = part.get("response", part.get("result"))
            result.results.append(
                Observation(
                    call_id=_str(part.get("id")),
                    content=response if isinstance(response, str) else arguments_text(response),
                )
            )
        elif kind == "reasoning":
            reasoning.append(text_of(part.get("content")))
        else:
            texts.append(text_of(part))
    result.text, result.reasoning = "\n".join(t for t in texts if t), "\n".join(r for r in reasoning if r)
    return result


def _from_chat(message: JSONValue, default_role: str = "user") -> _Message:
    """An OpenAI-chat-like message, as the indexed and OpenInference attributes re-nest."""
    if not isinstance(message, dict):
        return _Message(default_role, text_of(message))
    message = message.get("message", message) if isinstance(message.get("message"), dict) else message
    role = _str(message.get("role")) or default_role
    content = message.get("content") if message.get("content") is not None else message.get("contents")
    result = _Message(role, _content_text(content))
    for call in _list(_json(message.get("tool_calls"))):
        call = call.get("tool_call", call) if isinstance(call, dict) else {}
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        result.calls.append(
            ToolCall(
                id=_str(call.get("id")),
                name=_str(function.get("name")) or "unknown",
                arguments=arguments_text(function.get("arguments")),
            )
        )
    if role == "tool":
        call_id = _str(message.get("tool_call_id")) or _str(message.get("id"))
        result.results.append(Observation(call_id=call_id, content=result.text))
        result.text = ""
    return result


def _from_event(role: str, attrs: JSONObject) -> _Message:
    message = {"role": role, **attrs}
    if role == "tool" and "tool_call_id" not in message:
        message["tool_call_id"] = attrs.get("id")
    return _from_chat(message)


def _content_text(content: JSONValue) -> str:
    if isinstance(content, list):
        return "\n".join(
            t
            for t in (text_of(c.get("message_content", c)) if isinstance(c, dict) else text_of(c) for c in content)
            if t
        )
    return text_of(content)


def _json(value: JSONValue) -> JSONValue:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _list(value: JSONValue) -> list:
    return value if isinstance(value, list) else []


def _str(value: JSONValue) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_str(attrs: JSONObject, *keys: str) -> str | None:
    return next((attrs[k] for k in keys if _str(attrs.get(k))), None)


def _first_present(attrs: JSONObject, *keys: str) -> JSONValue:
    return next((attrs[k] for k in keys if k in attrs), None)
