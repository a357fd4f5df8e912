"""VS Code Copilot Chat's OpenTelemetry SQLite store (`traces.db`, written by its local OTel
exporter): tables `spans` (one row per span: ids, name, times, `status_code`, and GenAI
columns), `span_attributes` (`span_id, key, value`: the full `gen_ai.*` and `copilot_chat.*`
attributes) and `span_events` (`span_id, name, timestamp_ms, attributes` JSON).

Each row becomes the OTLP reader's `Span` (attributes from `span_attributes`, events from
`span_events`), spans are grouped by `trace_id`, and the OTLP reader builds one trajectory per
trace, so the GenAI attribute mapping stays in `otlp.py`. `execute_hook` spans (Copilot's
Pre/PostToolUse hooks) hold no agent action: they are ignored by rule. The other spans, and
the calls and results in them, are counted by the OTLP reader's ledger.

The store is read only when named on the command line (folders are not searched for `.db`
files). Outcome: none is recorded; `unknown`, except a root span with status ERROR (2).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing

from ..types import JSONObject, JSONValue, Skip, Trace
from .base import Document, Sample
from .documents import SQLiteFile
from .otlp import Span, trace_from_spans

NAME = "copilot_otel"

_TABLES = {"spans", "span_attributes", "span_events"}
_HOOKS = "execute_hook spans (Copilot's Pre/PostToolUse hooks) run user hooks, not agent actions"


def sniff(sample: Sample) -> bool:
    return isinstance(sample, SQLiteFile) and _TABLES <= sample.tables()


def read(doc: Document) -> Iterator[Trace | Skip]:
    store = doc.value() if doc.kind == "sqlite" else None
    if not isinstance(store, SQLiteFile):
        yield doc.skip("not a SQLite trace store")
        return
    try:
        with closing(store.connect()) as db:
            spans = _spans(doc, db)
    except sqlite3.Error as exc:
        yield doc.skip(f"cannot read the SQLite store: {exc}")
        return
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    for trace_id in sorted(by_trace):
        yield from trace_from_spans(doc, trace_id, by_trace[trace_id], NAME)


def _spans(doc: Document, db: sqlite3.Connection) -> list[Span]:
    if "schema_version" in {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
        version = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        doc.ledger.version = f"store schema v{version}" if version is not None else None
    attrs: dict[str, JSONObject] = defaultdict(dict)
    for span_id, key, value in db.execute("SELECT span_id, key, value FROM span_attributes ORDER BY span_id, key"):
        attrs[span_id][key] = value
    events: dict[str, list[tuple[str, JSONObject]]] = defaultdict(list)
    for span_id, name, raw in db.execute("SELECT span_id, name, attributes FROM span_events ORDER BY id"):
        events[span_id].append((name, _object(raw)))
    spans: list[Span] = []
    rows = db.execute("SELECT span_id, trace_id, parent_span_id, name, start_time_ms, status_code, status_message, operation_name FROM spans")
    for span_id, trace_id, parent, name, start, status, message, operation in rows:
        if operation == "execute_hook":
            doc.ledger.saw(records=1)
            doc.ledger.ignore(_HOOKS)
            continue
        span_attrs = dict(attrs.get(span_id, {}))
        span_attrs.setdefault("gen_ai.operation.name", operation)
        spans.append(Span(trace_id=trace_id, span_id=span_id, parent_id=parent, name=name or "", start=int(float(start or 0) * 1_000_000),
                          attrs=span_attrs, events=events.get(span_id, []), failed=status == 2, status_message=message or ""))
    return spans  # the OTLP reader's ledger counts these spans, their calls and their results


def _object(raw: JSONValue) -> JSONObject:
    """A span event's attributes (a JSON object in the store); {} when absent or not JSON."""
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
