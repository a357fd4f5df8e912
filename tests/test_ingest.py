"""Ingest core and the SWE-style, OpenAI chat and tau-bench readers, on real files."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from trace2skill.config import AnalyseConfig, Config
from trace2skill.errors import ConfigError, NoInputError
from trace2skill.ingest import (
    READERS,
    detect_format,
    iter_documents,
    iter_traces,
    load_traces,
    stream_report,
)
from trace2skill.types import Skip, Trace

DATA = Path(__file__).resolve().parent / "data" / "formats"
MINI_ZIP = DATA / "mini_swe_agent" / "mini-swe-agent-500.zip"


def _config(**analyse) -> Config:
    return Config(analyse=AnalyseConfig(**analyse))


def _extract(members: list[str], folder: Path) -> list[Path]:
    with zipfile.ZipFile(MINI_ZIP) as archive:
        for member in members:
            archive.extract(member, folder)
    return [folder / m for m in members]


def _mini_member(instance: str) -> str:
    return f"trajs/{instance}/{instance}.traj.json"


@pytest.fixture(scope="module")
def mini() -> dict:
    result = load_traces([MINI_ZIP])
    return {"result": result, "by_id": {t.id: t for t in result.traces}}


def test_all_500_mini_swe_agent_trajectories_join_results_summary(mini):
    result = mini["result"]
    assert len(result.traces) == 500
    assert result.outcomes == {"success": 371, "failure": 129, "unknown": 0}
    assert result.skips == []
    assert result.formats == {"mini_swe_agent": 500}
    assert result.label_sources == [f"{MINI_ZIP}!results_summary.json"]
    with zipfile.ZipFile(MINI_ZIP) as archive:
        summary = json.loads(archive.read("results_summary.json"))
    expected = {i["instance_id"]: ("success" if i["resolved"] else "failure") for i in summary["instances"]}
    assert {t.id: t.outcome for t in result.traces} == expected
    assert [t.id for t in result.traces] == sorted(expected)


def test_mini_swe_agent_steps_calls_and_observations(mini):
    trace = mini["by_id"]["astropy__astropy-13033"]
    assert trace.format == "mini_swe_agent"
    assert trace.agent == "mini-swe-agent 1.15.0" and trace.model == "google/gemini-3-pro-preview"
    assert trace.task.startswith("TimeSeries: misleading exception")
    assert [s.source for s in trace.steps[:3]] == ["system", "user", "agent"]
    grep_nothing = trace.steps[4]
    assert grep_nothing.tool_calls[0].arguments == 'grep "class TimeSeries" astropy/timeseries/core.py'
    assert grep_nothing.observations[0].exit_code == 1 and not grep_nothing.observations[0].is_error
    crash = trace.steps[19].observations[0]
    assert crash.exit_code == 1 and crash.is_error and "Traceback" in crash.content
    format_error = trace.steps[28]
    assert format_error.tool_calls == () and format_error.extra == {"actions_found": 2}
    assert format_error.observations[0].is_error and format_error.observations[0].exit_code is None
    assert trace.steps[-1].observations[0].content.startswith("diff --git")
    assert trace.extra["submission"].startswith("diff --git") and trace.extra["exit_status"] == "Submitted"
    assert trace.steps[2].reasoning and "```bash" not in trace.steps[2].message


def test_mini_swe_agent_timeouts_are_errors(mini):
    timeouts = [
        o
        for t in mini["result"].traces
        for s in t.steps
        for o in s.observations
        if o.content.startswith("The last command <command>")
    ]
    assert len(timeouts) == 26
    assert all(o.is_error and o.exit_code is None for o in timeouts)


@pytest.mark.parametrize(
    ("command", "code", "output", "is_error"),
    [
        ("grep -n foo setup.py", 1, "", False),
        ("cat setup.py | grep foo", 1, "", False),
        ("cd /testbed && git grep foo", 1, "", False),
        ("grep -n foo setup.py", 2, "grep: setup.py: No such file", True),
        ("diff a.py b.py", 1, "1c1\n< a\n---\n> b", False),
        ("python repro.py", 1, "Traceback ...", True),
        ("grep foo x || python repro.py", 1, "", True),
        ("ls", 0, "a b", False),
    ],
)
def test_mini_swe_agent_exit_status_rule(tmp_path, command, code, output, is_error):
    traj = {
        "instance_id": "demo__demo-1",
        "trajectory_format": "mini-swe-agent-1.1",
        "info": {"exit_status": "Submitted"},
        "messages": [
            {"role": "system", "content": "You run bash."},
            {"role": "user", "content": "<pr_description>\nFix it\n</pr_description>"},
            {"role": "assistant", "content": f"THOUGHT: try\n\n```bash\n{command}\n```"},
            {"role": "user", "content": f"<returncode>{code}</returncode>\n<output>\n{output}\n</output>"},
        ],
    }
    (tmp_path / "demo.traj.json").write_text(json.dumps(traj))
    trace = load_traces([tmp_path]).traces[0]
    assert trace.task == "Fix it"
    observation = trace.steps[2].observations[0]
    assert (observation.exit_code, observation.is_error) == (code, is_error)


def test_swe_agent_traj_files():
    result = load_traces([DATA / "swe_agent"])
    assert result.skips == [] and result.formats == {"swe_agent": 4}
    by_id = {t.id: t for t in result.traces}
    repo = by_id["swe-agent__test-repo-i1"]
    assert repo.task.startswith("SyntaxError: invalid syntax")
    assert [s.source for s in repo.steps] == ["system", "user"] + ["agent"] * 5
    assert [s.tool_calls[0].name for s in repo.steps[2:]] == ["find_file", "open", "edit", "python", "submit"]
    assert repo.steps[2].observations[0].content.startswith('Found 1 matches for "missing_colon.py"')
    assert repo.extra["exit_status"] == "submitted" and repo.outcome == "unknown"
    demo = by_id["demonstrations__function_calling_simple"]
    calls = [c for s in demo.steps for c in s.tool_calls]
    answered = {o.call_id for s in demo.steps for o in s.observations}
    assert calls and {c.id for c in calls} <= answered
    marshmallow = by_id["replay__marshmallow-code__marshmallow-1867__default__t-0.20___marshmallow-code__marshmallow-1867"]
    assert marshmallow.task.startswith("TimeDelta serialization precision")
    assert any(o.is_error for s in marshmallow.steps for o in s.observations)


def test_openai_chat_fixtures_pair_calls_and_keep_orphan_results():
    result = load_traces([DATA / "openai_chat"])
    assert result.skips == [] and result.formats == {"openai_chat": 5}
    by_id = {t.id: t for t in result.traces}
    refund = by_id["refund-42"]
    assert refund.outcome == "success" and refund.model == "gpt-4.1-mini"
    assert refund.steps[2].tool_calls[0].name == "get_order" and refund.steps[2].observations[0].is_error
    assert [o.call_id for o in refund.steps[3].observations] == ["call_a2", "call_a3"]
    orphan = refund.steps[4]
    assert orphan.source == "tool" and orphan.observations[0].call_id == "call_zz"
    assert orphan.extra["unmatched_call"] and "no matching tool call" in orphan.extra["note"]
    assert (by_id["ls-1"].outcome, by_id["ls-2"].outcome, by_id["ls-3"].outcome) == ("success", "failure", "unknown")
    assert by_id["ls-2"].steps[1].observations[0].is_error
    assert by_id["ls-1"].source.record == "line 1"
    bare = [t for t in result.traces if t.id.startswith("chat-")]
    assert len(bare) == 1 and bare[0].task == "What is 17 * 23?"


def test_openai_chat_jsonl_one_message_per_line(tmp_path):
    lines = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x", "content": "ok"},
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (trace,) = load_traces([tmp_path]).traces
    assert len(trace.steps) == 2 and trace.steps[1].observations[0].content == "ok"


@pytest.mark.parametrize(("threshold", "successes"), [(1.0, 1), (0.5, 2)])
def test_tau_bench_reward_threshold(threshold, successes):
    result = load_traces([DATA / "tau_bench"], _config(success_threshold=threshold))
    assert [t.id for t in result.traces] == ["task-0-trial-0", "task-1-trial-0", "task-1-trial-1"]
    assert [t.reward for t in result.traces] == [1.0, 0.0, 0.6]
    assert result.outcomes == {"success": successes, "failure": 3 - successes, "unknown": 0}
    first = result.traces[0]
    assert first.task.startswith("You are Yusuf Rossi") and first.format == "tau_bench"
    assert result.traces[1].steps[3].observations[0].is_error


def test_labels_precedence_explicit_over_discovered_over_in_trace(tmp_path):
    inputs = tmp_path / "run"
    inputs.mkdir()
    for ident in ("a", "b", "c"):
        conversation = {"id": ident, "outcome": "success", "messages": [{"role": "user", "content": ident}]}
        (inputs / f"{ident}.json").write_text(json.dumps(conversation))
    summary = {"instances": [{"instance_id": "b", "resolved": False}, {"instance_id": "c", "resolved": False}]}
    (tmp_path / "results_summary.json").write_text(json.dumps(summary))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,reward\nc,0.9\n")
    result = load_traces([inputs], _config(labels=labels, success_threshold=0.8))
    assert {t.id: t.outcome for t in result.traces} == {"a": "success", "b": "failure", "c": "success"}
    assert result.traces[2].reward == 0.9 and result.traces[2].extra["label_source"] == str(labels)
    assert result.label_sources == [str(labels), str(tmp_path / "results_summary.json")]


def test_swe_bench_report_json_and_labels_file_shapes(tmp_path):
    for ident in ("x__x-1", "x__x-2"):
        (tmp_path / f"{ident}.json").write_text(json.dumps({"id": ident, "messages": [{"role": "user", "content": "go"}]}))
    report = tmp_path / "logs" / "x__x-1"
    report.mkdir(parents=True)
    (report / "report.json").write_text(json.dumps({"resolved": True, "tests_status": {}}))
    result = load_traces([tmp_path])
    assert {t.id: t.outcome for t in result.traces} == {"x__x-1": "success", "x__x-2": "unknown"}
    assert result.skips == []
    for name, text in [
        ("map.json", json.dumps({"x__x-2": "resolved"})),
        ("list.json", json.dumps([{"instance_id": "x__x-2", "resolved": True}])),
        ("keyed.json", json.dumps({"x__x-2": {"resolved": True, "tests_status": {}}})),
    ]:
        labels = tmp_path.parent / name
        labels.write_text(text)
        assert load_traces([tmp_path], _config(labels=labels)).outcomes["success"] == 2


def test_bad_labels_files_raise(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_traces([DATA / "tau_bench"], _config(labels=tmp_path / "nope.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,comment\nx,looks fine\n")
    with pytest.raises(Exception, match="row 1"):
        load_traces([DATA / "tau_bench"], _config(labels=bad))


def test_results_file_with_another_name_is_reported_not_lost(tmp_path):
    (tmp_path / "my-results.json").write_text(json.dumps({"instances": [{"instance_id": "a", "resolved": True}]}))
    (skip,) = load_traces([tmp_path]).skips
    assert "results (labels) file" in skip.reason and "--labels" in skip.reason


def test_corrupted_file_in_folder_is_skipped_and_the_rest_read(tmp_path):
    ids = ["django__django-11099", "sympy__sympy-24539", "astropy__astropy-12907"]
    paths = _extract([_mini_member(i) for i in ids], tmp_path)
    broken = paths[0].read_bytes()
    paths[0].write_bytes(broken[: len(broken) // 2])
    result = load_traces([tmp_path])
    assert sorted(t.id for t in result.traces) == sorted(ids[1:])
    (skip,) = result.skips
    assert skip.path == str(paths[0]) and skip.reason.startswith("truncated JSON")


BAD_INPUTS = {
    "truncated.json": (b'{"messages": [{"role": "user", "content": "hi"', "truncated JSON"),
    "binary.json": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
    "latin1.json": ('{"messages": [{"role": "user", "content": "caf\xe9"}]}'.encode("latin-1"), "not UTF-8: byte 0xe9"),
    "empty.json": (b"  \n", "empty file"),
    "deep.json": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "unknown.json": (b'{"foo": 1, "bar": [2]}', "unknown trajectory format"),
    "wrong-types.traj.json": (b'{"trajectory_format": "mini-swe-agent-1", "messages": "oops"}', "expected an object with a 'messages' list"),
    "utf16.json": ('{"a": 1}'.encode("utf-16"), "UTF-16"),
    "null.jsonl": (b"null\n", "unknown trajectory format: a JSON null"),
    "deep-extra.json": (
        b'[{"task_id": 1, "reward": 1, "traj": [{"role": "user", "content": "hi"}], "info": {"reward_info": '
        + b'{"a": ' * 900 + b"0" + b"}" * 900 + b"}}]",
        "cannot be serialised",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_become_precise_skips(tmp_path, name):
    data, reason = BAD_INPUTS[name]
    (tmp_path / name).write_bytes(data)
    (tmp_path / "good.json").write_text(json.dumps([{"role": "user", "content": "fine"}]))
    result = load_traces([tmp_path])
    assert len(result.traces) == 1
    (skip,) = result.skips
    assert skip.path == str(tmp_path / name) and reason in skip.reason


def test_jsonl_broken_lines_are_skipped_with_line_numbers(tmp_path):
    good = json.dumps({"id": "ok-{}", "messages": [{"role": "user", "content": "x"}]})
    lines = [good.replace("{}", "1"), '{"id": "cut", "messages": [', "", good.replace("{}", "2"), "[1, 2]", "\xff"]
    (tmp_path / "dump.jsonl").write_bytes("\n".join(lines).encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    result = load_traces([tmp_path])
    assert [t.id for t in result.traces] == ["ok-1", "ok-2"]
    assert [s.record for s in result.skips] == ["line 2", "line 5, message 0", "line 5, message 1", "line 5", "line 6"]
    assert "invalid JSON" in result.skips[0].reason and "not UTF-8" in result.skips[-1].reason


def test_fifty_megabyte_single_line(tmp_path):
    huge = {"id": "huge", "messages": [{"role": "user", "content": "x" * (50 * 1024 * 1024)}]}
    small = {"id": "small", "messages": [{"role": "user", "content": "y"}]}
    path = tmp_path / "big.jsonl"
    with path.open("w") as out:
        out.write(json.dumps(huge) + "\n" + json.dumps(small) + "\n")
    del huge
    read = load_traces([path])
    assert [t.id for t in read.traces] == ["huge", "small"] and read.skips == []
    capped = load_traces([path], max_bytes=8 * 1024 * 1024)
    assert [t.id for t in capped.traces] == ["small"]
    (skip,) = capped.skips
    assert skip.record == "line 1" and "above the 8 MiB cap" in skip.reason
    single = tmp_path / "big.json"
    path.rename(single)
    capped = load_traces([single], max_bytes=8 * 1024 * 1024)
    assert [t.id for t in capped.traces] == ["small"]


def test_archives_gzip_and_nested_zip(tmp_path):
    conversation = json.dumps({"id": "gz", "messages": [{"role": "user", "content": "x"}]})
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(conversation.encode()))
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.writestr("inner/c.json", conversation.replace('"gz"', '"zipped"'))
        archive.writestr("inner/d.zip", b"PK")
        archive.writestr("inner/notes.txt", "ignored: not a trace file name")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    result = load_traces([tmp_path])
    assert [t.id for t in result.traces] == ["gz", "zipped"]
    reasons = {s.path: s.reason for s in result.skips}
    assert "nested zip" in reasons[f"{tmp_path / 'b.zip'}!inner/d.zip"]
    assert "cannot read" in reasons[str(tmp_path / "broken.gz")]


def test_duplicate_ids_are_disambiguated_and_exact_copies_reported(tmp_path):
    base = {"id": "same", "messages": [{"role": "user", "content": "one"}]}
    other = {"id": "same", "messages": [{"role": "user", "content": "two"}]}
    (tmp_path / "1.json").write_text(json.dumps(base))
    (tmp_path / "2.json").write_text(json.dumps(other))
    (tmp_path / "3.json").write_text(json.dumps(base))
    result = load_traces([tmp_path])
    ids = [t.id for t in result.traces]
    assert len(ids) == 2 and all(i.startswith("same~") for i in ids) and ids == sorted(ids)
    (skip,) = result.skips
    assert skip.path == str(tmp_path / "3.json") and "exact duplicate" in skip.reason
    again = load_traces([tmp_path])
    assert [t.digest() for t in again.traces] == [t.digest() for t in result.traces]


def test_missing_paths_and_forced_format(tmp_path):
    with pytest.raises(NoInputError):
        load_traces([tmp_path / "missing"])
    with pytest.raises(NoInputError):
        load_traces([])
    with pytest.raises(ConfigError, match="unknown trace format"):
        load_traces([DATA / "tau_bench"], _config(format="nope"))
    forced = load_traces([DATA / "openai_chat" / "math-messages.json"], _config(format="openai-chat"))
    assert forced.formats == {"openai_chat": 1}
    wrong = load_traces([DATA / "openai_chat" / "refund-conversation.json"], _config(format="tau_bench"))
    assert wrong.traces == [] and "expected a record with a 'traj'" in wrong.skips[0].reason
    assert load_traces([tmp_path]).traces == []


def test_detect_format_and_streaming_api(tmp_path):
    assert detect_format({"trajectory_format": "mini-swe-agent-1", "messages": []}) == "mini_swe_agent"
    assert detect_format([{"task_id": 1, "reward": 1, "traj": []}]) == "tau_bench"
    assert detect_format({"trajectory": [{"action": "ls", "observation": ""}]}) == "swe_agent"
    assert detect_format([{"role": "user", "content": "x"}]) == "openai_chat"
    assert detect_format({"hello": "world"}) is None
    assert list(READERS)[-1] == "openai_chat"
    (tmp_path / "x.json").write_text("{}")
    documents = list(iter_documents([tmp_path / "x.json", tmp_path / "nope"]))
    assert documents[0].value() == {} and isinstance(documents[1], Skip)
    items = list(iter_traces([DATA / "tau_bench"]))
    assert all(isinstance(i, Trace) for i in items) and len(items) == 3


def test_check_report_is_json_ready(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    report = json.loads(json.dumps(stream_report([DATA / "tau_bench", tmp_path])))
    assert report["traces"] == 3 and report["skipped"] == 1 and report["formats"] == {"tau_bench": 3}
    assert report["skips"][0]["path"] == str(tmp_path / "bad.json")


def test_labels_file_inside_the_input_folder_is_not_read_as_a_trace(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "x"}]}))
    (tmp_path / "labels.json").write_text(json.dumps({"a": 0.2}))
    result = load_traces([tmp_path], _config(labels=tmp_path / "labels.json", success_threshold=0.1))
    assert result.skips == [] and result.outcomes["success"] == 1 and result.traces[0].reward == 0.2


def test_a_file_reached_twice_is_read_once(tmp_path):
    folder = tmp_path / "tau"
    folder.mkdir()
    (folder / "results.json").write_bytes((DATA / "tau_bench" / "retail-results.json").read_bytes())
    result = load_traces([folder, folder / "results.json", folder])
    assert len(result.traces) == 3 and result.skips == []


def test_invalid_json_reason_reads_naturally(tmp_path):
    good = json.dumps({"id": "ok", "messages": [{"role": "user", "content": "x"}]})
    (tmp_path / "dump.jsonl").write_bytes(good.encode() + b'\n{"id": "tab\there"}\n')
    (skip,) = load_traces([tmp_path]).skips
    assert skip.record == "line 2" and skip.reason.startswith("invalid JSON: Invalid control character at column "), skip.reason


def test_a_swe_bench_predictions_file_beside_trajectories_is_not_a_skip(tmp_path):
    from trace2skill.ingest import load_traces

    folder = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parent.parent / "traces" / "mini-swe-agent-swebench-verified", folder)
    instance = next((folder / "trajs").iterdir()).name
    (folder / "trajs" / "preds.json").write_text(json.dumps(
        {instance: {"instance_id": instance, "model_name_or_path": "m", "model_patch": "diff --git a/x b/x"}}))
    result = load_traces([folder])
    assert len(result.traces) == 40 and result.skips == []
    (folder / "trajs" / "other.json").write_text(json.dumps({"a": {"instance_id": "b", "model_patch": ""}}))
    assert [s.path.endswith("other.json") for s in load_traces([folder]).skips] == [True]
