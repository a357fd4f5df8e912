"""Fuzzing ingest: random and mutated files never crash it, and nothing is lost silently.

"Not lost" means: every file shows up as a trace or a skip, and every JSONL line that is not
valid JSON is quarantined with a skip naming that line (unless the whole file was skipped).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trace2skill.ingest import load_traces

DATA = Path(__file__).resolve().parent / "data" / "formats"
SEEDS = [
    DATA / "openai_chat" / "refund-conversation.json",
    DATA / "openai_chat" / "shell-conversations.jsonl",
    DATA / "tau_bench" / "retail-results.json",
    DATA / "swe_agent" / "demonstrations__function_calling_simple.traj",
]
KEYS = [
    "role", "content", "messages", "tool_calls", "tool_call_id", "id", "function", "name", "arguments",
    "traj", "task_id", "trial", "reward", "info", "trajectory", "action", "observation", "history",
    "trajectory_format", "type", "payload", "sessionId", "parentUuid", "uuid", "message", "instances",
    "resolved", "instance_id", "steps", "schema_version", "resourceSpans", "input", "output",
]
WORDS = ["user", "assistant", "tool", "system", "function", "mini-swe-agent-1", "text", "tool_use", "message"]
FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12) | st.sampled_from(WORDS)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)


def _check_nothing_lost(folder: Path) -> None:
    result = load_traces([folder])
    seen = {(t.source.path, t.source.record) for t in result.traces} | {(s.path, s.record) for s in result.skips}
    assert all(skip.reason for skip in result.skips)
    for path in sorted(folder.iterdir()):
        shown = str(path)
        assert any(p == shown or p.startswith(shown + "!") for p, _ in seen), f"{shown} vanished"
        if path.suffix == ".jsonl" and (shown, None) not in {(s.path, s.record) for s in result.skips}:
            for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
                if line.strip() and not _valid_json(line):
                    assert any(p == shown and r and r.split(",")[0] == f"line {number}" for p, r in seen), (
                        f"broken line {number} of {shown} was not quarantined"
                    )


def _valid_json(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return True


def _write_and_check(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        _check_nothing_lost(folder)


@FUZZ
@given(st.lists(json_values, min_size=1, max_size=4), st.booleans())
def test_random_json_values(values, as_jsonl):
    if as_jsonl:
        files = {"random.jsonl": "\n".join(json.dumps(v) for v in values).encode()}
    else:
        files = {f"random-{i}.json": json.dumps(v).encode() for i, v in enumerate(values)}
    _write_and_check(files)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_real_files(seed, data):
    raw = bytearray(seed.read_bytes())
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        position = data.draw(st.integers(0, len(raw)), label="position")
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "truncate"]), label="action")
        if action == "flip" and position < len(raw):
            raw[position] = data.draw(st.integers(0, 255), label="byte")
        elif action == "cut":
            del raw[position : position + data.draw(st.integers(1, 64), label="length")]
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        else:
            del raw[position:]
    name = seed.name if seed.suffix in (".json", ".jsonl") else seed.name + ".json"
    _write_and_check({name: bytes(raw), "intact.json": (DATA / "openai_chat" / "math-messages.json").read_bytes()})


@FUZZ
@given(st.sampled_from(SEEDS[:3]), st.data())
def test_structurally_mutated_records(seed, data):
    """Replace random parts of real records with random JSON: wrong types, missing keys."""
    text = seed.read_text()
    values = [json.loads(line) for line in text.splitlines() if line.strip()] if seed.suffix == ".jsonl" else [json.loads(text)]
    mutated = [_mutate(value, data) for value in values]
    body = "\n".join(json.dumps(v) for v in mutated) if seed.suffix == ".jsonl" else json.dumps(mutated[0])
    _write_and_check({seed.name: body.encode()})


def _mutate(value, data, depth: int = 0):
    if depth > 0 and data.draw(st.integers(0, 5), label="replace?") == 0:
        return data.draw(json_values, label="replacement")
    if isinstance(value, dict):
        return {k: _mutate(v, data, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_mutate(v, data, depth + 1) for v in value]
    return value


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["x.json", "x.jsonl", "x.traj", "x.json.gz", "x.zip"]))
def test_random_bytes(data, name):
    _write_and_check({name: data})


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS[:3]), st.integers(100, 1200), st.data())
def test_deeply_nested_values_anywhere(seed, depth, data):
    """A deep chain planted at a random spot: parsed and read, or skipped, never a crash."""
    text = seed.read_text()
    values = [json.loads(line) for line in text.splitlines() if line.strip()] if seed.suffix == ".jsonl" else [json.loads(text)]
    planted = [_mutate(value, data) if i else _plant(value, data) for i, value in enumerate(values)]
    deep = '{"a": ' * depth + "0" + "}" * depth
    body = "\n".join(json.dumps(v).replace('"@@DEEP@@"', deep) for v in planted)
    if seed.suffix != ".jsonl":
        body = body.replace("\n", " ")
    _write_and_check({seed.name: body.encode()})


def _plant(value, data):
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value)), label="key")
        stop = data.draw(st.booleans(), label="here?")
        return {**value, key: "@@DEEP@@" if stop else _plant(value[key], data)}
    if isinstance(value, list) and value:
        index = data.draw(st.integers(0, len(value) - 1), label="index")
        stop = data.draw(st.booleans(), label="here?")
        return value[:index] + ["@@DEEP@@" if stop else _plant(value[index], data)] + value[index + 1 :]
    return "@@DEEP@@"
