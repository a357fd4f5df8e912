"""Fidelity on real files: every tool call and tool result in a file is read, or explained.

The expected numbers come from a few lines of plain Python over the raw files written here,
never from the readers: each test counts the calls and results in the raw JSON and compares
them with what `ingest --emit atif` wrote (within 1 % per file), then checks that
`ingest --check --strict` agrees. The real files are in `tests/data/real/` (README there).
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.ingest._steps import looks_like_error

REAL = Path(__file__).parent / "data" / "real"
V2 = Path(__file__).parent / "data" / "formats" / "mini_swe_agent" / "v2"
runner = CliRunner()


# ---------------------------------------------------------------- independent raw counts


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _blocks(message: object, kind: str) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    return sum(isinstance(b, dict) and b.get("type") == kind for b in content) if isinstance(content, list) else 0


def raw_claude_code(session: Path) -> tuple[int, int]:
    """Calls and results of a session: its lines, its `subagents/agent-*.jsonl` files, and the
    sub-agent messages streamed in `agent_progress` lines when that agent has no file."""
    folder = session.with_suffix("") / "subagents"
    files = [f for f in folder.glob("agent-*.jsonl") if not f.name.startswith("agent-acompact-")] if folder.is_dir() else []
    with_file = {f.name[len("agent-"):-len(".jsonl")] for f in files}
    calls = results = 0
    streamed = {}
    for path in [session, *files]:
        for line in _jsonl(path):
            calls += _blocks(line.get("message"), "tool_use")
            results += _blocks(line.get("message"), "tool_result")
            data = line.get("data") if line.get("type") == "progress" else None
            if isinstance(data, dict) and data.get("type") == "agent_progress" and data.get("agentId") not in with_file:
                inner = data.get("message") or {}
                streamed[inner.get("uuid")] = inner.get("message")
    calls += sum(_blocks(m, "tool_use") for m in streamed.values())
    results += sum(_blocks(m, "tool_result") for m in streamed.values())
    return calls, results


def raw_codex(path: Path) -> tuple[int, int]:
    calls = results = 0
    for line in _jsonl(path):
        kind = (line.get("payload") or {}).get("type", "") if line.get("type") == "response_item" else ""
        calls += kind.endswith("_call")
        results += kind.endswith("_call_output") or (kind.endswith("_call") and "output" in line["payload"])
    return calls, results


def raw_atif(path: Path) -> tuple[int, int]:
    steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    return (sum(len(s.get("tool_calls") or []) for s in steps),
            sum(len((s.get("observation") or {}).get("results") or []) for s in steps))


def raw_mini_swe_v2(path: Path) -> tuple[int, int]:
    messages = json.loads(path.read_text(encoding="utf-8"))["messages"]
    calls = sum(len(m.get("tool_calls") or (m.get("extra") or {}).get("actions") or []) for m in messages if m["role"] == "assistant")
    results = sum(m["role"] == "tool" or "returncode" in (m.get("extra") or {}) for m in messages)
    return calls, results


def raw_mini_swe_v1(path: Path) -> tuple[int, int]:
    """1.x: an assistant message with exactly one ```bash block is a call; the user message
    right after an assistant message is its result."""
    messages = json.loads(path.read_text(encoding="utf-8"))["messages"]
    calls = sum(m["role"] == "assistant" and m["content"].count("```bash") == 1 for m in messages)
    results = sum(a["role"] == "assistant" and b["role"] == "user" for a, b in zip(messages, messages[1:]))
    return calls, results


def raw_swe_agent(path: Path) -> tuple[int, int]:
    """An entry of `trajectory` with an action is a call and its observation the result; a
    file with only `history` holds chat messages (`tool_calls`, `tool` replies)."""
    value = json.loads(path.read_text(encoding="utf-8"))
    entries = value.get("trajectory") or []
    if entries:
        return (sum(bool(e["action"].strip()) for e in entries),
                sum(bool(e["observation"] or e["action"].strip()) for e in entries))
    history = [m for m in value["history"] if not m.get("is_demo")]
    return sum(len(m.get("tool_calls") or []) for m in history), sum(m["role"] == "tool" for m in history)


def emitted(tmp_path: Path, *paths: Path, extra: tuple[str, ...] = ()) -> tuple[dict[str, list[int]], dict]:
    """Run `ingest --emit atif --json`; calls and results written, per source file, and the report."""
    out = tmp_path / "out.atif.jsonl"
    result = runner.invoke(app, ["ingest", *map(str, paths), "--emit", "atif", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in out.read_text(encoding="utf-8").splitlines():
        trajectory = json.loads(line)
        ours = trajectory["extra"]["trace2skill"]
        steps = list(trajectory["steps"])
        for side in ours["extra"].get("sidechains", []):
            steps += [{"tool_calls": s["tool_calls"], "observation": {"results": s["observations"]}} for s in side["steps"]]
        counts = per_file[ours["source"]["path"]]
        counts[0] += sum(len(s.get("tool_calls") or []) for s in steps)
        counts[1] += sum(len((s.get("observation") or {}).get("results") or []) for s in steps)
    return per_file, json.loads(result.stdout)


def close(read: int, raw: int) -> bool:
    return abs(read - raw) <= 0.01 * raw


# ---------------------------------------------------------------- every real file


@pytest.mark.parametrize("fmt, raw, pattern", [
    ("claude_code", raw_claude_code, "*.jsonl"),
    ("codex", raw_codex, "*.jsonl"),
    ("atif", raw_atif, "*.json"),
])
def test_every_real_file_is_read_whole(tmp_path, fmt, raw, pattern):
    folder = REAL / fmt
    sessions = [p for p in sorted(folder.rglob(pattern)) if "subagents" not in p.parts]
    per_file, report = emitted(tmp_path, folder)
    rows = {row["file"]: row for row in report["fidelity"]}
    assert sessions
    for path in sessions:
        calls, results = raw(path)
        read_calls, read_results = per_file.get(str(path), [0, 0])
        row = rows[str(path)]
        explained = row["ignored"] or row["dropped"]
        assert close(read_calls, calls) or explained, (path, read_calls, calls)
        assert close(read_results, results) or explained, (path, read_results, results)
        assert (row["calls_in_file"], row["results_in_file"]) == (calls, results), path
    assert all(row["clean"] for row in report["fidelity"])
    assert runner.invoke(app, ["ingest", str(folder), "--check", "--strict"]).exit_code == 0


@pytest.mark.parametrize("folder, raw, pattern", [
    (Path(__file__).parent.parent / "traces", raw_mini_swe_v1, "*.traj.json"),
    (Path(__file__).parent / "data" / "formats" / "swe_agent", raw_swe_agent, "*.traj"),
])
def test_the_older_corpora_are_read_whole(tmp_path, folder, raw, pattern):
    per_file, report = emitted(tmp_path, folder)
    files = sorted(folder.rglob(pattern))
    assert files
    for path in files:
        assert per_file[str(path)] == list(raw(path)), path
    assert report["fidelity_summary"]["unexplained_calls"] == 0 and report["fidelity_summary"]["dropped"] == 0


def test_the_five_long_claude_code_sessions_lose_no_call(tmp_path):
    """The issue's case: 99 of the calls were read before. Now every one, parallel calls and
    sub-agents included (the spotter sessions with a `subagents/` folder)."""
    long_ones = [p for p in sorted((REAL / "claude_code" / "spotter").glob("*.jsonl")) if p.with_suffix("").is_dir()]
    assert len(long_ones) == 5
    per_file, _ = emitted(tmp_path, *long_ones)
    raw = [raw_claude_code(p) for p in long_ones]
    assert [per_file[str(p)] for p in long_ones] == [list(r) for r in raw]
    assert sum(c for c, _ in raw) > 1000


def test_mini_swe_agent_2x_tool_calls_results_and_labels(tmp_path):
    per_file, report = emitted(tmp_path, V2)
    for path in sorted(V2.rglob("*.traj.json")):
        assert per_file[str(path)] == list(raw_mini_swe_v2(path)), path
    assert report["outcomes"] == {"success": 1, "failure": 1, "unknown": 0}  # from report.json
    out = tmp_path / "out.atif.jsonl"
    toolcall = next(json.loads(line) for line in out.read_text().splitlines() if "toolcall" in line.split('"session_id"')[1][:40])
    results = [r for s in toolcall["steps"] for r in (s.get("observation") or {}).get("results", [])]
    # the file: call_1_1 ran the failing check (returncode 1, traceback), call_3_0 `ls tests` (returncode 2)
    flagged = {r["source_call_id"] for r in results if (r.get("extra") or {}).get("is_error")}
    assert flagged == {"call_1_1", "call_3_0"}
    assert toolcall["final_metrics"]["extra"] == {"outcome": "success"}


# ---------------------------------------------------------------- strict mode


def _splice(session: Path, out: Path, line: dict) -> str:
    """Insert `line` into the chain after the first assistant tool_use line; return its uuid."""
    rows = _jsonl(session)
    at = next(i for i, r in enumerate(rows) if r.get("type") == "assistant" and _blocks(r.get("message"), "tool_use"))
    parent = rows[at]["uuid"]
    for row in rows:
        if row.get("parentUuid") == parent:
            row["parentUuid"] = line["uuid"]
    rows.insert(at + 1, {**line, "parentUuid": parent, "sessionId": rows[at]["sessionId"], "isSidechain": False})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return parent


def test_strict_passes_an_unknown_line_type_in_the_chain_that_costs_nothing(tmp_path):
    session = REAL / "claude_code" / "spotter" / "tool_heavy.jsonl"
    spliced = tmp_path / "spliced.jsonl"
    _splice(session, spliced, {"type": "telemetry-beacon", "uuid": "spliced-1", "payload_v": 3})
    result = runner.invoke(app, ["ingest", str(spliced), "--check", "--strict", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["fidelity"]
    assert (row["calls_read"], row["calls_in_file"]) == raw_claude_code(session)[:1] * 2
    assert row["ignored"]["line type 'telemetry-beacon' is not known; it holds no message (passed through)"] == 1


def test_strict_fails_when_an_unknown_line_type_costs_a_tool_call(tmp_path):
    session = REAL / "claude_code" / "spotter" / "tool_heavy.jsonl"
    spliced = tmp_path / "spliced.jsonl"
    message = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_spliced", "name": "Bash", "input": {"command": "ls"}}]}
    _splice(session, spliced, {"type": "assistant-v9", "uuid": "spliced-2", "message": message})
    result = runner.invoke(app, ["ingest", str(spliced), "--check", "--strict"])
    assert result.exit_code == 65, result.output
    assert "line type 'assistant-v9' is not known and holds a message; not read" in result.output
    calls, _ = raw_claude_code(session)
    assert f"{calls}/{calls + 1}" in result.output


def test_drop_sidechains_is_explained_and_warned_about(tmp_path):
    session = REAL / "claude_code" / "spotter" / "258c7280-ae70-4798-800f-63464d01a85d.jsonl"
    folder = tmp_path / "projects" / "-home-u-spotter"
    shutil.copytree(session.with_suffix(""), folder / session.stem)
    shutil.copy(session, folder)
    check = runner.invoke(app, ["ingest", str(folder), "--check", "--strict", "--json", "--drop-sidechains"])
    assert check.exit_code == 0, check.output
    rows = {Path(r["file"]).name: r for r in json.loads(check.stdout)["fidelity"]}
    sub = session.with_suffix("") / "subagents" / "agent-a881341.jsonl"
    sub_calls = sum(_blocks(line.get("message"), "tool_use") for line in _jsonl(sub))
    assert sub_calls == 2
    assert (rows[sub.name]["calls_read"], rows[sub.name]["calls_in_file"], rows[sub.name]["unexplained_calls"]) == (0, 2, 0)
    assert rows[session.name]["calls_read"] == raw_claude_code(session)[0] - sub_calls
    run = runner.invoke(app, ["distill", str(folder), "--out", str(tmp_path / "skills"), "--skill", "cc", "--drop-sidechains", "--json"])
    # One unlabelled session in which no error recurs teaches nothing (exit 3, nothing written),
    # and the loss is still reported.
    assert run.exit_code == 3, run.output
    warnings = [line for line in run.stderr.splitlines() if line.startswith("trace2skill: warning:")]
    assert any("read 0 of 2 tool calls" in w and sub.name in w for w in warnings)


def test_distill_prints_a_one_line_fidelity_summary(tmp_path):
    run = runner.invoke(app, ["distill", str(V2), "--out", str(tmp_path / "skills"), "--skill", "v2"])
    # Two scripted runs with no recurring error teach nothing (exit 3); the summary is still printed.
    assert run.exit_code == 3, run.output
    raw = [raw_mini_swe_v2(p) for p in V2.rglob("*.traj.json")]
    calls, results = sum(c for c, _ in raw), sum(r for _, r in raw)
    assert f"fidelity: {calls}/{calls} tool calls and {results}/{results} results read from 2 counted file(s) of 3" in run.output


def test_one_command_reads_a_claude_projects_tree(tmp_path):
    """A `~/.claude/projects` tree: sessions per project, sub-agent and compaction files in
    `<session>/subagents/`, tool output spill files; one trace per session, nothing lost."""
    projects = tmp_path / ".claude" / "projects"
    spotter = REAL / "claude_code" / "spotter"
    for name, project in (("fa812bfe-b295-4cca-9c2f-fdf01028cb46", "-home-marco-spotter"), ("short", "-home-marco-other")):
        (projects / project).mkdir(parents=True, exist_ok=True)
        shutil.copy(spotter / f"{name}.jsonl", projects / project)
        if (spotter / name).is_dir():
            shutil.copytree(spotter / name, projects / project / name)
            (projects / project / name / "tool-results").mkdir()
            (projects / project / name / "tool-results" / "toolu_x.txt").write_text("long output")
    result = runner.invoke(app, ["ingest", str(projects), "--check", "--strict", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["traces"] == 2 and report["skipped"] == 0
    raw = [raw_claude_code(projects / "-home-marco-spotter" / "fa812bfe-b295-4cca-9c2f-fdf01028cb46.jsonl"),
           raw_claude_code(projects / "-home-marco-other" / "short.jsonl")]
    assert report["fidelity_summary"]["calls_read"] == sum(c for c, _ in raw)


# ---------------------------------------------------------------- errors in words


@pytest.mark.parametrize("text, error", [
    ("Exit code: 1\nWall time: 0.2 s", True),
    ("exit code 0\nok", False),
    ("EXIT STATUS 2", True),
    ("Process exited with code 0", False),
    ("error: pathspec 'x' did not match", True),
    ("Error: no such option --frobnicate", True),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1", True),
    ('{"status": "error", "message": "quota"}', True),
    ('{"is_error": true}', True),
    ("3 passed in 0.02s", False),
    ("the word error: in the middle of a line", False),
])
def test_error_words_any_case(text, error):
    assert looks_like_error(text) is error


# ---------------------------------------------------------------- the Claude Code tree


def _line(uuid, parent, kind, content, **more):
    return {"type": kind, "uuid": uuid, "parentUuid": parent, "sessionId": "s", "isSidechain": False,
            "message": {"role": kind, "content": content, **({"id": more.pop("mid")} if "mid" in more else {})}, **more}


def test_parallel_answers_are_kept_and_a_rewound_branch_is_left_out_with_its_rule(tmp_path):
    """Lines 2-3 are one response with two tool_use blocks; 4 answers the first (its parent is
    line 2) and hangs off the chain, 5 answers the second; 6 continues from 5. Line 7 branches
    from line 1 and goes nowhere: line 8, the newest message, is on the other branch, so 7 was
    rewound and is left out (with its call), named by its rule."""
    use = lambda i: [{"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {"command": f"cmd {i}"}}]  # noqa: E731
    answer = lambda i: [{"type": "tool_result", "tool_use_id": f"t{i}", "content": f"out {i}"}]  # noqa: E731
    lines = [
        _line("u1", None, "user", "Do the thing."),
        _line("a1", "u1", "assistant", use(1), mid="m1"),
        _line("a2", "a1", "assistant", use(2), mid="m1"),
        _line("r1", "a1", "user", answer(1)),
        _line("r2", "a2", "user", answer(2)),
        _line("a3", "r2", "assistant", use(3), mid="m2"),
        _line("x1", "u1", "assistant", use(9), mid="m9"),
        _line("r3", "a3", "user", answer(3)),
    ]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(path), "--check", "--strict", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["fidelity"]
    assert (row["calls_in_file"], row["calls_read"], row["results_read"], row["results_paired"]) == (4, 3, 3, 3)
    assert row["ignored"] == {"messages on an abandoned branch: the conversation was rewound or retried from an earlier message": 1}
    assert row["unexplained_calls"] == 0
