"""ATIF write support: the canonical model survives a trip through ATIF.

Round-trip equality, as promised in `trace2skill.ingest.atif`: for a `Trace` whose `extra`
values are JSON values, reading back what `emit_atif` wrote gives a `Trace` that is `==` to
the original, every field included (`source` too: it keeps pointing at the file the trace
was first read from). The emitted documents must also be valid ATIF, checked here against
the constraints of the ATIF RFC (and against the reference `atif` models when installed).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_readers import FORMATS, MINE, document

from trace2skill.errors import TraceFormatError
from trace2skill import ingest
from trace2skill.ingest import atif
from trace2skill.ingest.base import Document
from trace2skill.types import Observation, Skip, SourceRef, Step, ToolCall, Trace

text = st.text(max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(text, json_values, max_size=3)
iso_stamps = st.datetimes().map(lambda d: d.isoformat() + "Z")


@st.composite
def arguments(draw) -> str:
    """Argument strings as agents write them: compact or spaced JSON objects, raw text, other JSON."""
    obj = draw(json_objects)
    return draw(
        st.sampled_from(
            [
                json.dumps(obj, ensure_ascii=False),
                json.dumps(obj, separators=(",", ":")),
                json.dumps(obj, indent=2),
                draw(text),
                json.dumps(draw(json_values)),
            ]
        )
    )


@st.composite
def steps(draw, position: int) -> Step:
    calls = draw(
        st.lists(st.builds(ToolCall, id=st.none() | text, name=text.filter(bool), arguments=arguments()), max_size=3)
    )
    call_ids = [c.id for c in calls] + ["t2s-0-0"]
    observation = st.builds(
        Observation,
        call_id=st.none() | text | st.sampled_from(call_ids),
        content=text,
        is_error=st.booleans(),
        exit_code=st.none() | st.integers(-300, 300),
    )
    extra = draw(json_objects)
    if draw(st.booleans()):
        extra["timestamp"] = draw(iso_stamps | text)
    return Step(
        index=draw(st.just(position) | st.integers(0, 50)),
        source=draw(st.sampled_from(["system", "user", "agent", "tool"])),
        message=draw(text),
        reasoning=draw(st.none() | text),
        tool_calls=calls,
        observations=draw(st.lists(observation, max_size=3)),
        extra=extra,
    )


@st.composite
def traces(draw) -> Trace:
    count = draw(st.integers(0, 7))
    return Trace(
        id=draw(text.filter(bool)),
        task=draw(text),
        agent=draw(st.none() | text | st.just("claude-code 2.0.14")),
        model=draw(st.none() | text),
        steps=tuple(draw(steps(i)) for i in range(count)),
        outcome=draw(st.sampled_from(["success", "failure", "unknown"])),
        reward=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        source=draw(st.builds(SourceRef, path=text.filter(bool), record=st.none() | text)),
        format=draw(st.sampled_from(["claude_code", "codex", "otlp", "openai_chat", "atif", "unknown"])),
        extra=draw(json_objects),
    )


def read_back(path: Path) -> list[Trace | Skip]:
    return list(atif.read(document(path)))


def assert_valid_atif(doc: dict) -> None:
    """The ATIF RFC's structural rules that the reference models enforce."""
    assert doc["schema_version"].startswith("ATIF-v1.")
    assert isinstance(doc["session_id"], str)
    assert isinstance(doc["agent"]["name"], str) and isinstance(doc["agent"]["version"], str)
    for number, step in enumerate(doc["steps"], start=1):
        assert step["step_id"] == number
        assert step["source"] in ("system", "user", "agent")
        assert isinstance(step["message"], str)
        if step["source"] != "agent":
            assert not {"reasoning_content", "tool_calls", "metrics", "model_name"} & set(step)
        call_ids = set()
        for call in step.get("tool_calls", []):
            assert isinstance(call["tool_call_id"], str) and isinstance(call["function_name"], str)
            assert isinstance(call["arguments"], dict)
            call_ids.add(call["tool_call_id"])
        for result in step.get("observation", {"results": []})["results"]:
            assert result.get("source_call_id") is None or result["source_call_id"] in call_ids


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_trace_survives_atif(trace):
    document_value = json.loads(json.dumps(atif.trace_to_atif(trace), allow_nan=False))
    assert_valid_atif(document_value)
    back = atif.trace_from_atif(document_value, SourceRef(path="elsewhere.jsonl", record="line 1"))
    assert back == trace
    assert back.digest() == trace.digest()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(traces(), max_size=3), st.booleans())
def test_emit_then_read_gives_the_same_traces(batch, gzipped):
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / ("nested" if gzipped else "") / ("out.atif.jsonl.gz" if gzipped else "out.atif.jsonl")
        assert atif.emit_atif(batch, out) == len(batch)
        assert not list(out.parent.glob("*.partial"))
        if gzipped:
            import gzip

            lines = gzip.decompress(out.read_bytes()).decode("utf-8").splitlines()
        else:
            lines = out.read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(batch)
        plain = Path(folder) / "plain.jsonl"
        plain.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        assert read_back(plain) == batch


def test_tool_steps_fold_into_the_agent_step_and_come_back():
    trace = Trace(
        id="fold",
        source=SourceRef(path="t.json"),
        steps=(
            Step(index=0, source="tool", observations=(Observation(call_id="early", content="before any call"),)),
            Step(index=1, source="agent", tool_calls=(ToolCall(id="c1", name="bash", arguments="ls -la"),)),
            Step(
                index=2,
                source="tool",
                message="env",
                observations=(Observation(call_id="c1", content="a\nb", is_error=True, exit_code=2),),
            ),
            Step(index=3, source="tool", observations=(Observation(content="stray"),), extra={"unmatched_call": True}),
        ),
    )
    doc = atif.trace_to_atif(trace)
    assert [s["source"] for s in doc["steps"]] == ["system", "agent"]
    agent_step = doc["steps"][1]
    assert agent_step["tool_calls"] == [
        {"tool_call_id": "c1", "function_name": "bash", "arguments": {"input": "ls -la"}}
    ]
    assert agent_step["observation"]["results"] == [
        {"source_call_id": "c1", "content": "a\nb", "extra": {"is_error": True, "exit_code": 2}},
        {"content": "stray"},
    ]
    assert atif.trace_from_atif(doc, SourceRef(path="other")) == trace


def test_outcome_and_error_flags_sit_in_standard_atif_fields():
    """ATIF v1.7: a result's own `extra` carries its error flag; `final_metrics.extra` the run's
    outcome and reward. A reader that knows nothing of our namespace finds them there."""
    trace = Trace(
        id="std", source=SourceRef(path="t.json"), outcome="failure", reward=0.25,
        steps=(Step(index=0, source="agent", tool_calls=(ToolCall(id="c1", name="bash", arguments="{}"),),
                    observations=(Observation(call_id="c1", content="Exit code: 1", is_error=True, exit_code=1),)),),
    )
    doc = atif.trace_to_atif(trace)
    assert doc["schema_version"] == "ATIF-v1.7"
    assert doc["final_metrics"] == {"total_steps": 1, "extra": {"outcome": "failure", "reward": 0.25}}
    assert doc["steps"][0]["observation"]["results"][0]["extra"] == {"is_error": True, "exit_code": 1}
    del doc["extra"]  # read it as a foreign file: only the standard fields remain
    foreign = atif.trace_from_atif(doc, SourceRef(path="x"))
    assert (foreign.outcome, foreign.reward) == ("failure", 0.25)
    assert foreign.steps[0].observations[0].is_error and foreign.steps[0].observations[0].exit_code == 1


def test_reading_our_file_restores_the_original_source_and_format(tmp_path):
    trace = Trace(
        id="t1", source=SourceRef(path="runs/a.jsonl", record="line 4"), format="codex", outcome="failure", reward=0.0
    )
    out = tmp_path / "out.jsonl"
    atif.emit_atif([trace], out)
    (back,) = read_back(out)
    assert back.source == SourceRef(path="runs/a.jsonl", record="line 4")
    assert (back.format, back.outcome, back.reward) == ("codex", "failure", 0.0)


def test_emit_refuses_values_json_cannot_carry(tmp_path):
    bad = Trace(id="nan", source=SourceRef(path="x"), reward=float("nan"))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    with pytest.raises(TraceFormatError, match="'nan'"):
        atif.emit_atif([Trace(id="ok", source=SourceRef(path="x")), bad], out)
    assert out.read_text() == "previous\n"
    assert not list(tmp_path.glob("*.partial"))


def test_corrupt_namespace_is_a_skip_not_a_crash(tmp_path):
    doc = atif.trace_to_atif(
        Trace(id="t", source=SourceRef(path="x"), steps=(Step(index=0, source="user", message="hi"),))
    )
    doc["extra"]["trace2skill"]["version"] = 99
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    (skip,) = read_back(path)
    assert isinstance(skip, Skip) and skip.reason.startswith(
        "invalid ATIF trajectory: extra.trace2skill is not version 1 data"
    )


def _fixture_traces() -> list[tuple[str, Path]]:
    return [(name, path) for name in MINE for path in sorted((FORMATS / name).glob("*.json*"))]


@pytest.mark.parametrize(("name", "path"), _fixture_traces(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_each_fixture_round_trips_through_atif(name, path, tmp_path):
    originals = [t for t in MINE[name].read(document(path)) if isinstance(t, Trace)]
    assert originals
    out = tmp_path / "out.jsonl"
    atif.emit_atif(originals, out)
    for line in out.read_text(encoding="utf-8").splitlines():
        assert_valid_atif(json.loads(line))
    assert read_back(out) == originals


def test_other_readers_fixtures_round_trip_through_atif(tmp_path):
    paths = [
        p
        for folder in FORMATS.iterdir()
        if folder.is_dir() and folder.name not in MINE
        for p in folder.iterdir()
        if p.suffix in (".json", ".jsonl", ".traj")
    ]
    originals = ingest.load_traces(paths).traces
    assert originals
    out = tmp_path / "others.jsonl"
    atif.emit_atif(originals, out)
    assert read_back(out) == originals


def test_emitted_documents_validate_against_reference_models(tmp_path):
    reference = pytest.importorskip("atif", reason="the reference `atif` package is optional")
    for name, path in _fixture_traces():
        for trace in MINE[name].read(document(path)):
            if isinstance(trace, Trace):
                reference.Trajectory.model_validate(json.loads(json.dumps(atif.trace_to_atif(trace))))


def test_document_helper_matches_a_jsonl_document(tmp_path):
    """Guards the helper itself: records are `(line, value)` and re-iterable."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n')
    doc = document(path)
    assert isinstance(doc, Document) and list(doc.records()) == list(doc.records()) == [(1, {"a": 1}), (3, {"b": 2})]
