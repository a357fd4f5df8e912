"""Langfuse trace exports: `{trace, observations}` as the Langfuse UI and API export them.

Not OTLP: Langfuse stores each OpenTelemetry span it received as an *observation* (`{id,
traceId, parentObservationId, type: SPAN | GENERATION | TOOL | AGENT | ..., name, startTime,
level, statusMessage, input, output, model, metadata}`), with the span's attributes kept in
`metadata.attributes` (a JSON string in some exports) and its resource in
`metadata.resourceAttributes`. Each observation is turned into the OTLP reader's `Span`, and
the OTLP reader builds the trajectory, so the `gen_ai.*` (GenAI semantic conventions) and
`openinference.*` attribute mapping, and the ledger's count of the spans, calls and results,
live in one place (`otlp.py`). Where the attributes lack
what Langfuse moved into its own fields, those fill in: a GENERATION's `input` / `output`
become `gen_ai.input.messages` / `gen_ai.output.messages`, a TOOL's `input` / `output` its
call arguments and result, `model` the request model, and `level: ERROR` the error status.

Outcome: Langfuse `scores` are user-defined evaluations with no fixed meaning, so they are
kept in `extra` and the outcome is `unknown`, except that a root observation at level ERROR
labels the run `failure` (the OTLP rule).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from ..types import JSONObject, JSONValue, Skip, Trace
from ._steps import kind_of
from .base import Document, Sample
from .otlp import Span, trace_from_spans

NAME = "langfuse"

_MESSAGE_KEYS = ("gen_ai.input.messages", "gen_ai.prompt.", "llm.input_messages.")


def _observations(value: JSONValue) -> list[JSONValue] | None:
    if not isinstance(value, dict):
        return None
    found = value.get("observations")
    if found is None and isinstance(value.get("trace"), dict):
        found = value["trace"].get("observations")
    return found if isinstance(found, list) else None


def sniff(sample: Sample) -> bool:
    if isinstance(sample, list):
        return bool(sample) and sniff(sample[0])
    observations = _observations(sample)
    if not observations or not isinstance(observations[0], dict):
        return False
    return "traceId" in observations[0] and "type" in observations[0]


def read(doc: Document) -> Iterator[Trace | Skip]:
    value = doc.value() if doc.kind == "json" else None
    exports = value if isinstance(value, list) else [value]
    for index, export in enumerate(exports):
        observations = _observations(export)
        if observations is None:
            doc.ledger.drop("export without observations")
            yield doc.skip(f"expected a Langfuse trace export with observations, got {kind_of(export)}", f"item {index}")
            continue
        yield from _read_export(doc, export, observations)


def _read_export(doc: Document, export: JSONObject, observations: list[JSONValue]) -> Iterator[Trace | Skip]:
    spans: list[Span] = []
    for observation in observations:
        if not isinstance(observation, dict) or not isinstance(observation.get("id"), str):
            doc.ledger.saw(records=1)
            doc.ledger.drop("observation without an id")
            continue
        spans.append(_span(observation))
        doc.ledger.version = doc.ledger.version or _scope(observation)
    if not spans:
        yield doc.skip("no observations in the export")
        return
    trace = export.get("trace") if isinstance(export.get("trace"), dict) else {}
    trace_id = str(trace.get("id") or spans[0].trace_id)
    for item in trace_from_spans(doc, trace_id, spans, NAME):
        if isinstance(item, Trace) and (trace.get("scores") or trace.get("name")):
            extra = {**item.extra, "langfuse_trace_name": trace.get("name"), "scores": trace.get("scores") or []}
            item = item.model_copy(update={"extra": extra})
        yield item


def _span(observation: JSONObject) -> Span:
    metadata = _json(observation.get("metadata"))
    metadata = metadata if isinstance(metadata, dict) else {}
    attrs = _json(metadata.get("attributes"))
    attrs = dict(attrs) if isinstance(attrs, dict) else {}
    kind = observation.get("type")
    if kind == "GENERATION" and not any(k.startswith(_MESSAGE_KEYS) for k in attrs):
        for key, field in (("gen_ai.input.messages", "input"), ("gen_ai.output.messages", "output")):
            if isinstance(_json(observation.get(field)), list):
                attrs[key] = _json(observation[field])
        if "openinference.span.kind" not in attrs:
            attrs.setdefault("gen_ai.operation.name", "chat")
    if kind == "GENERATION" and isinstance(observation.get("model"), str):
        attrs.setdefault("gen_ai.request.model", observation["model"])
    if kind == "TOOL":
        if "openinference.span.kind" not in attrs:
            attrs.setdefault("gen_ai.operation.name", "execute_tool")
            attrs.setdefault("gen_ai.tool.name", observation.get("name"))
        if "input.value" not in attrs:
            attrs.setdefault("gen_ai.tool.call.arguments", observation.get("input"))
        if "output.value" not in attrs:
            attrs.setdefault("gen_ai.tool.call.result", observation.get("output"))
    resource = metadata.get("resourceAttributes") if isinstance(metadata.get("resourceAttributes"), dict) else {}
    return Span(
        trace_id=str(observation.get("traceId") or ""),
        span_id=observation["id"],
        parent_id=observation.get("parentObservationId") if isinstance(observation.get("parentObservationId"), str) else None,
        name=str(observation.get("name") or ""),
        start=_nanoseconds(observation.get("startTime")),
        attrs=attrs,
        events=[],
        failed=observation.get("level") == "ERROR",
        status_message=str(observation.get("statusMessage") or ""),
        resource=resource,
    )


def _scope(observation: JSONObject) -> str | None:
    """The instrumentation that wrote the span (`pydantic-ai 1.26.0`), not Langfuse's own SDK."""
    metadata = _json(observation.get("metadata"))
    scope = metadata.get("scope") if isinstance(metadata, dict) and isinstance(metadata.get("scope"), dict) else {}
    name = scope.get("name")
    if not isinstance(name, str) or name.startswith("langfuse"):
        return None
    return f"{name} {scope.get('version')}" if scope.get("version") else name


def _json(value: JSONValue) -> JSONValue:
    """A JSON-encoded string decoded (Langfuse stores many fields that way); other values as they are."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _nanoseconds(stamp: JSONValue) -> int:
    if not isinstance(stamp, str):
        return 0
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1_000_000_000)
    except ValueError:
        return 0
