"""Readers for Responses, Anthropic, Claude Code, Codex, OTLP and ATIF, on spec-written fixtures.

Documents are built here the way the ingest core builds them (a parsed JSON value, or a
re-iterable stream of `(line, value)` / `Skip` for JSONL), so each reader is tested on its own;
`test_load_traces_detects_and_reads_each_fixture` then goes through the real core.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trace2skill import ingest
from trace2skill.ingest import anthropic, atif, claude_code, codex, otlp, responses
from trace2skill.ingest.base import Document
from trace2skill.types import Skip, Trace

FORMATS = Path(__file__).parent / "data" / "formats"
MINE = {m.NAME: m for m in (responses, anthropic, claude_code, codex, otlp, atif)}


def document(path: Path) -> Document:
    """A Document for a fixture file; a broken JSONL line becomes a Skip, as in the core."""
    if path.suffix != ".jsonl":
        return Document(path=str(path), kind="json", _value=json.loads(path.read_text(encoding="utf-8")))

    def records():
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except ValueError as error:
                    yield Skip(path=str(path), record=f"line {number}", reason=f"invalid JSON: {error}")

    return Document(path=str(path), kind="jsonl", _records=records)


def read_all(module, path: Path, **options) -> tuple[list[Trace], list[Skip]]:
    items = list(module.read(document(path), **options))
    return [i for i in items if isinstance(i, Trace)], [i for i in items if isinstance(i, Skip)]


def one(traces: list[Trace], trace_id: str | None = None) -> Trace:
    if trace_id is None:
        assert len(traces) == 1, [t.id for t in traces]
        return traces[0]
    return next(t for t in traces if t.id == trace_id)


def sources(trace: Trace) -> list[str]:
    return [s.source for s in trace.steps]


def skip_reasons(skips: list[Skip]) -> list[tuple[str | None, str]]:
    return [(s.record, s.reason) for s in skips]


# ---------------------------------------------------------------- Responses


def test_responses_item_list_joins_outputs_and_reads_exit_codes():
    trace = one(read_all(responses, FORMATS / "responses" / "agent_items.json")[0])
    assert sources(trace) == ["system", "user", "agent", "agent", "agent", "agent"]
    assert trace.task.startswith("The test suite fails")
    first_call = trace.steps[2]
    assert first_call.reasoning == "Run the failing test first to see the error."
    assert [c.id for c in first_call.tool_calls] == ["call_run_tests"]
    (failed,) = first_call.observations
    assert (failed.call_id, failed.is_error, failed.exit_code) == ("call_run_tests", True, 1)
    assert failed.content.startswith("F.\nE   ValueError")
    assert trace.steps[3].reasoning == responses.ENCRYPTED_REASONING
    assert trace.steps[4].observations[0].is_error is False
    assert trace.steps[5].message.startswith("parse_date now rejects")
    assert trace.outcome == "unknown" and trace.format == "responses"


def test_responses_records_per_line_with_precise_skips():
    traces, skips = read_all(responses, FORMATS / "responses" / "records.jsonl")
    assert [t.id for t in traces] == ["resp_6830a1", "resp_6830a2"]
    paris = one(traces, "resp_6830a1")
    assert sources(paris) == ["system", "user", "agent"]
    assert paris.model == "gpt-4.1-2025-04-14" and paris.source.record == "line 1"
    atlantis = one(traces, "resp_6830a2")
    assert sources(atlantis) == ["user", "agent", "tool", "agent"]
    error = atlantis.steps[1].observations[0]
    assert (error.is_error, error.exit_code) == (True, 2)
    orphan = atlantis.steps[2]
    assert orphan.extra["unmatched_call"] is True and orphan.observations[0].call_id == "call_missing"
    assert skip_reasons(skips) == [
        ("line 2 output[2]", "unknown Responses item type 'hologram'"),
        ("line 3", "expected an input/output record like the earlier lines, got number"),
    ]


# ---------------------------------------------------------------- Anthropic


def test_anthropic_conversation_pairs_tool_results_in_user_turns():
    trace = one(read_all(anthropic, FORMATS / "anthropic" / "conversation.json")[0])
    assert sources(trace) == ["system", "user", "agent", "agent", "user", "agent"]
    assert trace.model == "claude-sonnet-4-5-20250929"
    wrong_path = trace.steps[2]
    assert wrong_path.reasoning == "I should check the file exists and count lines."
    assert wrong_path.tool_calls[0].arguments == '{"command": "wc -l data/order.csv"}'
    assert wrong_path.observations[0].is_error is True
    retry = trace.steps[3]
    assert (retry.observations[0].call_id, retry.observations[0].content, retry.observations[0].is_error) == (
        "toolu_01B",
        "1201 data/orders.csv",
        False,
    )
    assert trace.steps[4].message == "Remember the header line."


def test_anthropic_batch_skips_bad_messages_and_keeps_the_rest():
    traces, skips = read_all(anthropic, FORMATS / "anthropic" / "batch.jsonl")
    assert [t.id for t in traces] == ["conv-ok", "conv-messy"]
    ok = one(traces, "conv-ok")
    assert ok.steps[2].observations[0].content == '{"event_id": "ev_981", "status": "confirmed"}'
    messy = one(traces, "conv-messy")
    assert sources(messy) == ["system", "user", "agent", "tool"]
    assert messy.steps[3].extra == {"unmatched_call": True}
    assert skip_reasons(skips) == [
        ("line 2 messages[1]", "message has unknown role 'tool'"),
        ("line 2 messages[2]", "content[1]: unknown assistant block type 'sparkle'"),
        ("line 2 messages[3]", "content[1]: tool_result block has no tool_use_id"),
        ("line 2 messages[4]", "expected a message object, got string"),
        ("line 3", "expected a conversation object with 'messages' like the earlier lines, got array"),
    ]


# ---------------------------------------------------------------- Claude Code


def test_claude_code_rebuilds_the_main_chain():
    traces, skips = read_all(claude_code, FORMATS / "claude_code" / "session.jsonl")
    trace = one(traces)
    assert trace.id == "7f3c2a9e-4b1d-4c8e-9a57-2d0e6b1f3c11"
    assert trace.agent == "claude-code 2.0.14" and trace.model == "claude-sonnet-4-5-20250929"
    assert sources(trace) == ["user", "user", "agent", "agent", "agent", "agent", "agent", "system", "agent"]
    assert trace.steps[0].extra["meta"] is True
    assert trace.task.startswith("Make parse_date reject impossible dates")
    read_step = trace.steps[2]
    assert read_step.reasoning.startswith("Read the parser")
    assert read_step.message == "I'll start by reading the parser."
    assert [c.name for c in read_step.tool_calls] == ["Read"]
    failing = trace.steps[3].observations[0]
    assert (failing.call_id, failing.is_error, failing.exit_code) == ("toolu_02", True, 1)
    passing = trace.steps[6].observations[0]
    assert (passing.is_error, passing.content) == (False, "..\n2 passed in 0.03s")
    assert all("rewrite the whole module" not in s.message for s in trace.steps)
    assert trace.extra["off_chain_messages"] == 1
    assert trace.extra["summary"] == "Reject impossible dates in parse_date"
    assert {(s.record, s.reason.split(":")[0]) for s in skips} == {
        ("line 13", "invalid JSON"),
        ("line 23", "assistant event has no uuid"),
    }


def test_claude_code_sidechains_kept_apart_or_dropped():
    path = FORMATS / "claude_code" / "session.jsonl"
    kept = one(read_all(claude_code, path)[0])
    (sidechain,) = kept.extra["sidechains"]
    assert sidechain["task"] == "Find every caller of parse_date in src/."
    assert [s["source"] for s in sidechain["steps"]] == ["user", "agent", "agent"]
    assert sidechain["steps"][1]["observations"][0]["content"] == "src/dates.py\nsrc/report.py"
    assert all(s.message != "parse_date is called only from src/report.py." for s in kept.steps if s.source == "agent")
    dropped = one(read_all(claude_code, path, include_sidechains=False)[0])
    assert "sidechains" not in dropped.extra
    assert dropped.steps == kept.steps


def test_claude_code_sub_agent_file_is_its_own_trace():
    trace = one(read_all(claude_code, FORMATS / "claude_code" / "agent-a5d1e.jsonl")[0])
    assert trace.id == "7f3c2a9e-4b1d-4c8e-9a57-2d0e6b1f3c11/a5d1e"
    assert trace.extra["sidechain"] is True and sources(trace) == ["user", "agent"]


def _cc_line(uuid, parent, kind, content, session="s-1", **extra):
    message = {"role": kind, "content": content}
    return {
        "type": kind,
        "uuid": uuid,
        "parentUuid": parent,
        "sessionId": session,
        "isSidechain": False,
        "message": message,
        **extra,
    }


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_claude_code_follows_compaction_and_survives_cycles(tmp_path):
    lines = [
        _cc_line("u1", None, "user", "Original task before compaction."),
        _cc_line("a1", "u1", "assistant", [{"type": "text", "text": "Working on it."}]),
        {
            "type": "system",
            "subtype": "compact_boundary",
            "uuid": "c1",
            "parentUuid": None,
            "logicalParentUuid": "a1",
            "sessionId": "s-1",
            "content": "Conversation compacted",
        },
        _cc_line("u2", "c1", "user", "Summary of the earlier conversation.", isCompactSummary=True),
        _cc_line("a2", "u2", "assistant", [{"type": "text", "text": "Continuing."}]),
        _cc_line("x1", "x2", "user", "loop one", session="loop"),
        _cc_line("x2", "x1", "assistant", [{"type": "text", "text": "loop two"}], session="loop"),
    ]
    traces, skips = read_all(claude_code, _write_jsonl(tmp_path / "s.jsonl", lines))
    assert skips == []
    compacted = one(traces, "s-1")
    assert [s.message for s in compacted.steps] == [
        "Original task before compaction.",
        "Working on it.",
        "Conversation compacted",
        "Summary of the earlier conversation.",
        "Continuing.",
    ]
    assert compacted.task == "Original task before compaction." and compacted.source.record == "session s-1"
    assert [s.message for s in one(traces, "loop").steps] == ["loop one", "loop two"]


def test_claude_code_holds_one_session_at_a_time(tmp_path):
    lines = [
        _cc_line(f"{s}-{i}", f"{s}-{i - 1}" if i else None, "user", f"{s} message {i}", session=s)
        for i in range(3)
        for s in ("a", "b")
    ]
    path = _write_jsonl(tmp_path / "two.jsonl", lines)
    doc = document(path)
    passes = []

    def counted():
        passes.append(1)
        return doc._records()

    traces = [
        t for t in claude_code.read(Document(path=str(path), kind="jsonl", _records=counted)) if isinstance(t, Trace)
    ]
    assert [t.id for t in traces] == ["a", "b"]
    assert [len(t.steps) for t in traces] == [3, 3]
    assert len(passes) == 3


# ---------------------------------------------------------------- Codex


CODEX = FORMATS / "codex" / "rollout-2025-09-14T16-02-11-0199498f-2b7c-7d42-9a51-3f0c6e8d2a10.jsonl"


def test_codex_rollout_skips_injected_messages_and_unpacks_outputs():
    traces, skips = read_all(codex, CODEX)
    trace = one(traces)
    assert trace.id == "0199498f-2b7c-7d42-9a51-3f0c6e8d2a10"
    assert (trace.agent, trace.model) == ("codex 0.36.0", "gpt-5-codex")
    assert sources(trace) == ["user", "agent", "agent", "agent", "agent", "system"]
    assert trace.task.startswith("Stock can go negative")
    assert trace.extra["injected_messages"] == 2
    assert trace.extra["token_usage"]["total_tokens"] == 8522
    run_tests = trace.steps[1]
    assert run_tests.reasoning == responses.ENCRYPTED_REASONING
    assert (run_tests.observations[0].exit_code, run_tests.observations[0].is_error) == (1, True)
    assert run_tests.observations[0].content.startswith("F.\n____ test_reserve_never_negative")
    patch = trace.steps[2]
    assert patch.tool_calls[0].name == "apply_patch" and patch.tool_calls[0].arguments.startswith("*** Begin Patch")
    assert patch.observations[0].exit_code == 0
    assert trace.steps[3].observations[0].exit_code == 0
    assert trace.steps[5].extra == {"compacted": True}
    assert sum(1 for s in trace.steps if "all 10 tests pass" in s.message) == 1
    assert [s.record for s in skips] == ["line 14", "line 17"]
    assert skips[1].reason == "unknown rollout line type 'telemetry'"


# ---------------------------------------------------------------- OTLP


def test_otlp_current_conventions_order_results_and_failure():
    trace = one(read_all(otlp, FORMATS / "otlp" / "genai_current.json")[0])
    assert trace.id == "5b8efff798038103d269b633813fc60c"
    assert trace.outcome == "failure" and trace.extra["status_message"] == "run aborted: booking failed"
    assert sources(trace) == ["system", "user", "agent", "agent", "agent"]
    assert (trace.agent, trace.model, trace.extra["provider"]) == ("travel_agent", "gpt-4.1-2025-04-14", "openai")
    assert trace.extra["usage"] == {"input_tokens": 1250, "output_tokens": 101}
    search, book = trace.steps[2], trace.steps[3]
    assert search.reasoning == "Search flights first."
    assert [(o.call_id, o.is_error) for o in search.observations] == [("call_s1", False)]
    assert [(o.call_id, o.content, o.is_error) for o in book.observations] == [
        ("call_b1", "PaymentDeclined: card expired", True)
    ]
    assert json.loads(book.tool_calls[0].arguments) == {"flight": "TP1230"}


def test_otlp_indexed_attributes_two_traces_in_one_file():
    traces, skips = read_all(otlp, FORMATS / "otlp" / "genai_indexed.json")
    assert skips == [] and [t.id for t in traces] == [
        "0af7651916cd43dd8448eb211c80319c",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    ]
    todo = traces[0]
    assert sources(todo) == ["system", "user", "agent", "agent"]
    assert todo.outcome == "unknown" and todo.extra["provider"] == "Anthropic"
    assert [(o.call_id, o.content) for o in todo.steps[2].observations] == [("toolu_t1", "added #7")]
    assert [s.message for s in traces[1].steps] == ["What is 17 * 23?", "391"]


def test_otlp_openinference_jsonl_groups_a_trace_across_lines():
    traces, skips = read_all(otlp, FORMATS / "otlp" / "openinference.jsonl")
    trace = one(traces)
    assert (trace.model, trace.agent) == ("gpt-4o-mini", "sql-agent")
    assert sources(trace) == ["system", "user", "agent", "agent", "agent"]
    first, second = trace.steps[2], trace.steps[3]
    assert [(c.id, c.name) for c in first.tool_calls] == [("call_q1", "run_sql")]
    assert [(o.call_id, o.is_error) for o in first.observations] == [("call_q1", True)]
    assert [(o.content, o.is_error) for o in second.observations] == [("412", False)]
    assert skip_reasons(skips) == [("line 3", "resourceSpans[0].scopeSpans[0].spans[0]: span has no traceId")]


def test_otlp_jsonl_emits_a_trace_once_its_last_line_is_read(tmp_path):
    source = [json.loads(line) for line in (FORMATS / "otlp" / "openinference.jsonl").read_text().splitlines()]
    other = json.loads(
        json.dumps(source[0]).replace("7d2c1f0e9b8a47f6a5e4d3c2b1a09f8e", "ffff1f0e9b8a47f6a5e4d3c2b1a09f8e")
    )
    path = _write_jsonl(tmp_path / "spans.jsonl", [source[0], source[1], other])
    consumed: list[int] = []

    def records():
        for number, value in document(path)._records():
            consumed.append(number)
            yield number, value

    order = []
    for item in otlp.read(Document(path=str(path), kind="jsonl", _records=records)):
        order.append((item.id, consumed[-1]))
    assert order == [("7d2c1f0e9b8a47f6a5e4d3c2b1a09f8e", 2), ("ffff1f0e9b8a47f6a5e4d3c2b1a09f8e", 3)]


def test_otlp_unflatten_and_any_value():
    attrs = {
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "f",
        "llm.model_name": "m",
    }
    assert otlp.unflatten(attrs, "llm.input_messages") == [
        {"message": {"role": "system"}},
        {"message": {"role": "user", "tool_calls": [{"tool_call": {"function": {"name": "f"}}}]}},
    ]
    assert otlp.unflatten(attrs, "gen_ai.prompt") is None
    raw = {
        "arrayValue": {
            "values": [{"intValue": "7"}, {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}]
        }
    }
    assert otlp.any_value(raw) == [7, {"k": True}]


# ---------------------------------------------------------------- ATIF


def test_atif_foreign_trajectory_with_outcome_and_metrics():
    trace = one(read_all(atif, FORMATS / "atif" / "harbor_success.json")[0])
    assert trace.id == "harbor-run-2f91c0/regex-log"
    assert (trace.outcome, trace.reward) == ("success", 1.0)
    assert (trace.agent, trace.model, trace.format) == ("terminus-2 2.0.0", "anthropic/claude-sonnet-4-5", "atif")
    assert sources(trace) == ["system", "user", "agent", "agent", "agent"]
    assert trace.steps[2].extra["metrics"]["prompt_tokens"] == 1520
    assert trace.steps[2].reasoning == "I need sample lines before writing the pattern."
    missing = trace.steps[3].observations[0]
    assert (missing.is_error, missing.exit_code) == (True, 2)
    assert [o.call_id for o in trace.steps[4].observations] == ["call_3", "call_4"]
    assert json.loads(trace.steps[4].tool_calls[1].arguments) == {}


def test_atif_batch_failure_and_precise_skips():
    traces, skips = read_all(atif, FORMATS / "atif" / "batch.jsonl")
    failed = one(traces)
    assert (failed.outcome, failed.reward) == ("failure", 0.0)
    assert failed.steps[0].message == "Make /srv/data readable by the web group.\n[image]"
    assert failed.steps[1].observations[0].is_error is True
    assert skip_reasons(skips) == [
        ("line 2", "invalid ATIF trajectory: steps[1].source must be one of ('system', 'user', 'agent'), got 'tool'"),
        ("line 3", "not an ATIF trajectory: schema_version '2.0' is not 'ATIF-v1.x'"),
    ]


# ---------------------------------------------------------------- detection


def _fixture_files() -> list[tuple[str, Path]]:
    return [
        (folder.name, path)
        for folder in sorted(p for p in FORMATS.iterdir() if p.is_dir())
        for path in sorted(folder.iterdir())
        if path.suffix in (".json", ".jsonl", ".traj")
    ]


def _sample(path: Path):
    doc = document(path)
    if doc.kind == "json":
        return doc.value()
    return next(v for item in doc.records() if not isinstance(item, Skip) for v in [item[1]])


@pytest.mark.parametrize(("folder", "path"), _fixture_files(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_sniff_accepts_own_fixtures_and_rejects_the_others(folder, path):
    sample = _sample(path)
    for name, module in MINE.items():
        assert module.sniff(sample) is (name == folder), f"{name}.sniff on {folder}/{path.name}"


def test_load_traces_detects_and_reads_each_fixture(tmp_path):
    for name in MINE:
        assert name in ingest.READERS, f"{name} is not registered"
        for path in sorted((FORMATS / name).glob("*.json*")):
            assert ingest.detect_format(_sample(path)) == name, path.name
            result = ingest.load_traces([path])
            assert {t.format for t in result.traces} == {name}, f"{path.name}: {result.skips}"
            expected = sum(isinstance(i, Trace) for i in MINE[name].read(document(path)))
            assert len(result.traces) == expected, path.name
