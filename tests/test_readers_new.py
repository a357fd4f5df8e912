"""The new readers (OpenHands, Inspect AI, tau2-bench, Gemini CLI, Aider, SpecStory, Langfuse,
Cline) on real files: the tool calls and tool results counted in each raw file by a few lines
of plain Python here must equal what `ingest --emit atif` writes (within 1 %), or the
difference must be explained by the reader's ledger.

The files under tests/data/real/ are copied byte for byte from ../shared/data/real-formats/
(licence files beside them); tests/data/real/cline/ was built from Cline's source (README there).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.ingest import iter_documents, load_traces, reader_for
from trace2skill.types import Skip

REAL = Path(__file__).parent / "data" / "real"
runner = CliRunner()


def emitted(path: Path, tmp_path: Path) -> tuple[int, int, list[dict]]:
    """Tool calls and observation results in the ATIF that `ingest --emit atif` writes."""
    out = tmp_path / "out.atif.jsonl"
    result = runner.invoke(app, ["ingest", str(path), "--emit", "atif", str(out)])
    assert result.exit_code == 0, result.output
    trajectories = [json.loads(line) for line in out.read_text().splitlines()]
    calls = sum(len(s.get("tool_calls") or []) for t in trajectories for s in t["steps"])
    results = sum(len((s.get("observation") or {}).get("results") or []) for t in trajectories for s in t["steps"])
    return calls, results, trajectories


def close(got: int, want: int) -> bool:
    return abs(got - want) <= 0.01 * max(want, 1)


def ledger_of(path: Path, reader: str):
    """The reader's ledger for one file (read directly, so the accounting can be checked)."""
    doc = next(d for d in iter_documents([path]) if not isinstance(d, Skip))
    list(reader_for(reader).read(doc))
    return doc.ledger


# --- OpenHands --------------------------------------------------------------------------


def openhands_raw(path: Path) -> tuple[int, int]:
    if path.suffix == ".jsonl":
        streams = [json.loads(line)["history"] for line in path.read_text().splitlines() if line.strip()]
    else:
        streams = [json.loads(path.read_text())]
    calls = results = 0
    for events in streams:
        call_ids = {e["id"] for e in events if e.get("source") == "agent" and "action" in e
                    and e["action"] not in ("message", "system", "change_agent_state", "recall")}
        calls += len(call_ids)
        results += sum(1 for e in events if "observation" in e and e.get("cause") in call_ids)
    return calls, results


@pytest.mark.parametrize("name", ["basic.json", "basic_gui_mode.json", "output.jsonl", "session_6264da56_event_cache_25-50.json"])
def test_openhands_counts_match_the_raw_file(name, tmp_path):
    path = REAL / "openhands" / name
    want_calls, want_results = openhands_raw(path)
    calls, results, _ = emitted(path, tmp_path)
    assert want_calls > 0
    assert close(calls, want_calls) and close(results, want_results), (calls, results, want_calls, want_results)


def test_openhands_exit_codes_and_ignored_bookkeeping():
    traces = load_traces([REAL / "openhands" / "basic_gui_mode.json"]).traces
    observations = [o for s in traces[0].steps for o in s.observations]
    # basic_gui_mode.json event 14: `python3 -m http.server` "executed with exit code -1" (timed out)
    assert [o.exit_code for o in observations if o.exit_code is not None] == [0, -1]
    assert [o.is_error for o in observations if o.exit_code == -1] == [True]
    ledger = ledger_of(REAL / "openhands" / "basic_gui_mode.json", "openhands")
    assert ledger.records == 18 and not ledger.dropped
    # 4 agent_state_changed + 3 'null' observations + change_agent_state action, all by rule
    assert sum(ledger.ignored.values()) == 8


def test_openhands_v1_sdk_events(tmp_path):
    """V1 (`openhands-sdk`) events, fields as in `openhands/sdk/event/llm_convertible/*.py`."""
    text = lambda t: [{"type": "text", "text": t}]
    call = lambda i, name: {"id": i, "name": name, "arguments": '{"command": "ls"}', "origin": "completion"}
    history = [
        {"kind": "SystemPromptEvent", "id": "e0", "timestamp": "t", "source": "agent", "system_prompt": {"type": "text", "text": "You are OpenHands."}, "tools": []},
        {"kind": "MessageEvent", "id": "e1", "timestamp": "t", "source": "user", "llm_message": {"role": "user", "content": text("Fix the bug")}},
        {"kind": "ActionEvent", "id": "e2", "timestamp": "t", "source": "agent", "thought": text("Look first."), "tool_name": "terminal",
         "tool_call_id": "c1", "tool_call": call("c1", "terminal"), "llm_response_id": "r1", "action": {"kind": "TerminalAction", "command": "ls"}},
        {"kind": "ActionEvent", "id": "e3", "timestamp": "t", "source": "agent", "thought": [], "tool_name": "file_editor",
         "tool_call_id": "c2", "tool_call": call("c2", "file_editor"), "llm_response_id": "r1", "action": None},
        {"kind": "ObservationEvent", "id": "e4", "timestamp": "t", "source": "environment", "tool_name": "terminal", "tool_call_id": "c1",
         "action_id": "e2", "observation": {"kind": "TerminalObservation", "content": text("a.py"), "is_error": False, "exit_code": 0}},
        {"kind": "AgentErrorEvent", "id": "e5", "timestamp": "t", "source": "agent", "tool_name": "file_editor", "tool_call_id": "c2", "error": "missing command"},
        {"kind": "ConversationStateUpdateEvent", "id": "e6", "timestamp": "t", "source": "environment", "key": "execution_status", "value": "finished"},
    ]
    path = tmp_path / "output.jsonl"
    path.write_text(json.dumps({"instance_id": "x__y-1", "instruction": "Fix the bug", "history": history, "test_result": {"report": {"resolved": False}}}) + "\n")
    trace = load_traces([path]).traces[0]
    assert trace.id == "x__y-1" and trace.outcome == "failure"
    assert [s.source for s in trace.steps] == ["system", "user", "agent"]  # both calls came from response r1
    agent = trace.steps[2]
    assert [c.id for c in agent.tool_calls] == ["c1", "c2"] and [o.is_error for o in agent.observations] == [False, True]
    assert ledger_of(path, "openhands").ignored  # the state update


# --- Inspect AI -------------------------------------------------------------------------


def inspect_samples(path: Path) -> list[dict]:
    if path.suffix == ".eval":
        with zipfile.ZipFile(path) as archive:
            return [json.loads(archive.read(n)) for n in archive.namelist() if n.startswith("samples/")]
    return json.loads(path.read_text()).get("samples") or []


@pytest.mark.parametrize("name", ["METR-inspect-action_small_oxdna_simple.eval", "input-task.eval", "log_tool_call_error.json",
                                  "log_formats.json",
                                  "inspect_scout_2025-11-07T10-59-47-05-00_websearch-addition-problem_LqPDntDnkk4h2fSqQ8i6CE.eval"])
def test_inspect_counts_match_the_raw_file(name, tmp_path):
    path = REAL / "inspect" / name
    samples = inspect_samples(path)
    want_calls = sum(len(m.get("tool_calls") or []) for s in samples for m in s["messages"] if m["role"] == "assistant")
    want_results = sum(1 for s in samples for m in s["messages"] if m["role"] == "tool")
    calls, results, trajectories = emitted(path, tmp_path)
    assert len(trajectories) == len(samples)
    assert close(calls, want_calls) and close(results, want_results), (calls, results, want_calls, want_results)


def test_inspect_scores_map_to_outcomes_and_tool_errors_are_flagged():
    by_file = {t.source.path.rsplit("/", 1)[-1]: t for t in load_traces([REAL / "inspect"]).traces}
    # log_formats.json: the `match` scorer's value is "I" (incorrect) -> reward 0 -> failure
    assert by_file["log_formats.json"].reward == 0.0 and by_file["log_formats.json"].outcome == "failure"
    # input-task.eval: `model_graded_fact` is "C" (correct) -> reward 1 -> success
    assert by_file["input-task.eval"].outcome == "success"
    # log_tool_call_error.json: every one of its 11 tool messages carries an `error`
    errors = [o.is_error for s in by_file["log_tool_call_error.json"].steps for o in s.observations]
    assert errors == [True] * 11
    ledger = ledger_of(REAL / "inspect" / "input-task.eval", "inspect_ai")
    assert ledger.version and ledger.version.startswith("log v")
    assert ledger.ignored  # _journal/, summaries.json, reductions.json


# --- tau2-bench -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["telecom_gpt-4o.json", "activegraph_20260601-041151-558787_results.json"])
def test_tau2_counts_match_the_raw_file(name, tmp_path):
    path = REAL / "tau2" / name
    sims = json.loads(path.read_text())["simulations"]
    messages = [m for s in sims for m in s["messages"] or []]
    agent_calls = sum(1 for m in messages for c in m.get("tool_calls") or [] if c.get("requestor", "assistant") == "assistant")
    user_calls = sum(1 for m in messages for c in m.get("tool_calls") or [] if c.get("requestor") == "user")
    agent_results = sum(1 for m in messages if m["role"] == "tool" and m.get("requestor", "assistant") == "assistant")
    calls, results, trajectories = emitted(path, tmp_path)
    assert close(calls, agent_calls) and close(results, agent_results), (calls, results, agent_calls, agent_results)
    # the simulated user's own device calls are kept as user text, and the ledger says why
    user_lines = sum(s.get("message", "").count("[user tool]") for t in trajectories for s in t["steps"] if s["source"] == "user")
    assert user_lines == user_calls
    ledger = ledger_of(path, "tau2")
    assert ledger.calls == agent_calls + user_calls
    assert sum(ledger.ignored.values()) == 2 * user_calls  # each user call and its result


def test_tau2_rewards_become_outcomes():
    traces = load_traces([REAL / "tau2" / "telecom_gpt-4o.json"]).traces
    rewards = [s["reward_info"]["reward"] for s in json.loads((REAL / "tau2" / "telecom_gpt-4o.json").read_text())["simulations"]]
    assert sorted(t.reward for t in traces) == sorted(rewards)
    assert all(t.outcome == ("success" if t.reward == 1.0 else "failure") for t in traces)


def test_tau2_full_duplex_ticks(tmp_path):
    """The newer schema keeps the conversation in `ticks` (fields as in tau2's `Tick`)."""
    tick = lambda i, **kw: {"tick_id": i, "timestamp": f"t{i}", "agent_chunk": None, "agent_tool_calls": [], "agent_tool_results": [],
                            "user_chunk": None, "user_tool_calls": [], "user_tool_results": [], **kw}
    call = {"id": "c1", "name": "get_order", "arguments": {"id": "7"}, "requestor": "assistant"}
    sim = {"id": "s1", "task_id": "0", "trial": 0, "messages": None, "mode": "full_duplex", "review": {"agent_error": False, "has_errors": False},
           "reward_info": {"reward": 1.0}, "termination_reason": "user_stop",
           "ticks": [tick(0, user_chunk={"role": "user", "content": "Where is "}), tick(1, user_chunk={"role": "user", "content": "order 7?"}),
                     tick(2, agent_chunk={"role": "assistant", "content": "Checking."}, agent_tool_calls=[call],
                          agent_tool_results=[{"id": "c1", "role": "tool", "content": "shipped", "requestor": "assistant", "error": False}]),
                     tick(3, agent_chunk={"role": "assistant", "content": "It shipped."})]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"info": {}, "tasks": [], "simulations": [sim]}))
    trace = load_traces([path]).traces[0]
    assert [s.source for s in trace.steps] == ["user", "agent", "agent"]
    assert trace.steps[0].message == "Where is order 7?"
    assert trace.steps[1].observations[0].content == "shipped" and trace.outcome == "success"
    assert trace.extra["review"] == {"agent_error": False, "has_errors": False}


# --- Gemini CLI -------------------------------------------------------------------------


def test_gemini_history_counts_match_the_raw_file(tmp_path):
    path = REAL / "gemini_cli" / "gemini-cli_trajectory.json"
    contents = json.loads(path.read_text())
    want_calls = sum(1 for c in contents for p in c["parts"] if "functionCall" in p)
    want_results = sum(1 for c in contents for p in c["parts"] if "functionResponse" in p)
    errors = sum(1 for c in contents for p in c["parts"] if "error" in p.get("functionResponse", {}).get("response", {}))
    calls, results, _ = emitted(path, tmp_path)
    assert (calls, results) == (want_calls, want_results)
    observations = [o for t in load_traces([path]).traces for s in t.steps for o in s.observations]
    # the 5 responses with an `error` key, and the 3 `npm run build` outputs ending in
    # "Found 1 error." (TypeScript compile errors reported by run_shell_command)
    assert errors == 5
    assert all(o.is_error for o in observations if o.content.startswith(("Failed to edit", "[Operation Cancelled]")))
    assert sum(o.is_error for o in observations if "Found 1 error." in o.content) == 3


def test_gemini_session_record(tmp_path):
    """The automatic session file (`chatRecordingService.ts`): toolCalls carry their results."""
    record = {"sessionId": "abc", "projectHash": "h", "startTime": "t0", "lastUpdated": "t1", "messages": [
        {"id": "1", "timestamp": "t0", "type": "user", "content": "list files"},
        {"id": "2", "timestamp": "t1", "type": "gemini", "content": "", "model": "gemini-2.5-pro",
         "thoughts": [{"subject": "Plan", "description": "use ls", "timestamp": "t1"}],
         "toolCalls": [{"id": "c1", "name": "run_shell_command", "args": {"command": "ls"}, "status": "error", "timestamp": "t1",
                        "result": [{"functionResponse": {"id": "c1", "name": "run_shell_command", "response": {"error": "denied"}}}]}]},
        {"id": "3", "timestamp": "t2", "type": "info", "content": "Request cancelled."}]}
    (tmp_path / "chats").mkdir()
    path = tmp_path / "chats" / "session-1.json"
    path.write_text(json.dumps(record))
    (tmp_path / "logs.json").write_text(json.dumps([{"sessionId": "abc", "messageId": 0, "type": "user", "message": "list files", "timestamp": "t0"}]))
    result = load_traces([tmp_path])
    assert result.skips == [] and len(result.traces) == 1  # the prompt log is passed over by rule
    trace = result.traces[0]
    assert trace.id == "abc" and trace.model == "gemini-2.5-pro" and trace.task == "list files"
    observation = trace.steps[1].observations[0]
    assert observation.is_error and observation.content == "denied" and trace.steps[1].reasoning == "Plan: use ls"


# --- Aider, SpecStory (Markdown) ---------------------------------------------------------


def test_aider_counts_match_the_raw_file(tmp_path):
    path = REAL / "aider" / "afi-core.aider.chat.history.md"
    text = path.read_text()
    want = len(re.findall(r"^> (Applied edit to |Running |# \d+ SEARCH/REPLACE blocks? failed to match)", text, re.M))
    sessions = len(re.findall(r"^# aider chat started at", text, re.M))
    calls, results, trajectories = emitted(path, tmp_path)
    assert calls == results == want == 28
    assert len(trajectories) == sessions - 1  # session 1 (line 3) has only a question and ^C: no reply
    failed = [o for t in load_traces([path]).traces for s in t.steps for o in s.observations if o.is_error]
    assert len(failed) == 1 and "SEARCH/REPLACE block failed to match" in failed[0].content


def test_specstory_turns_and_tool_blocks(tmp_path):
    path = REAL / "specstory" / "resolving-typescript-process-error.md"
    text = path.read_text()
    users, agents = len(re.findall(r"^_\*\*User\*\*_", text, re.M)), len(re.findall(r"^_\*\*Assistant\*\*_", text, re.M))
    tools = len(re.findall(r"<tool-use\b|<summary>Tool use:|^Error calling tool '", text, re.M))
    calls, results, trajectories = emitted(path, tmp_path)
    assert (calls, results) == (tools, tools)
    steps = trajectories[0]["steps"]
    assert sum(s["source"] == "user" for s in steps) == users and sum(s["source"] == "agent" for s in steps) == agents


def test_specstory_v2_tool_use_blocks(tmp_path):
    """SpecStory Markdown v2 (`<tool-use data-tool-name=...>`, as written by specstory-cli)."""
    path = tmp_path / "2026-07-13_13-40Z-fix.md"
    path.write_text('<!-- Generated by SpecStory, Markdown v2.1.0 -->\n\n_**User (2026-07-13 13:40:49Z)**_\n\nfix it\n\n---\n\n'
                    '_**Agent (claude-opus-4-8 2026-07-13 13:40:56Z)**_\n\nLooking.\n\n<tool-use data-tool-type="shell" data-tool-name="Bash"><details>\n'
                    '<summary>Tool use: **Bash**</summary>\n`pytest -q`\n</details></tool-use>\n\n'
                    '<tool-use data-tool-type="write" data-tool-name="Edit" data-edit-status="rejected"><details>\n<summary>Edit a.py</summary>\nx\n'
                    '</details></tool-use>\nDone.\n')
    trace = load_traces([path]).traces[0]
    agent = trace.steps[1]
    assert [c.name for c in agent.tool_calls] == ["Bash", "Edit"] and [o.is_error for o in agent.observations] == [False, True]
    assert trace.model == "claude-opus-4-8" and agent.message == "Looking.\n\nDone."


def test_markdown_in_folders_is_read_only_with_a_signature(tmp_path):
    (tmp_path / "README.md").write_text("# A project\n")
    (tmp_path / ".aider.chat.history.md").write_text("\n# aider chat started at 2025-01-01 10:00:00\n\n#### hi\n\nHello.\n")
    (tmp_path / ".specstory" / "history").mkdir(parents=True)
    (tmp_path / ".specstory" / "history" / "chat.md").write_text("## SpecStory\n\n_**User**_\n\nhi\n\n---\n\n_**Assistant**_\n\nHello.\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("## SpecStory\n\n_**User**_\n\nnot walked\n")
    result = load_traces([tmp_path])
    assert sorted(t.format for t in result.traces) == ["aider", "specstory"] and result.skips == []
    named = load_traces([tmp_path / "README.md"])
    assert named.traces == [] and "signature" in named.skips[0].reason


# --- Langfuse ---------------------------------------------------------------------------


def langfuse_raw(path: Path) -> tuple[int, int]:
    observations = json.loads(path.read_text())["observations"]
    attrs = lambda o: (json.loads(o["metadata"]) if isinstance(o["metadata"], str) else o["metadata"] or {}).get("attributes") or {}
    tools = [o for o in observations if o["type"] == "TOOL"]
    ids = {attrs(o).get("gen_ai.tool.call.id") or o["id"] for o in tools}
    for o in observations:  # calls the model made that no TOOL observation executed (output tools)
        output = o.get("output") if o["type"] == "GENERATION" else None
        for message in output if isinstance(output, list) else []:
            ids |= {p["id"] for p in message.get("parts") or [] if p.get("type") == "tool_call"}
    return len(ids), len(tools)


@pytest.mark.parametrize("name", ["openai-agents-2025-09-30.trace.json", "pydantic-ai-tools-2025-12-04.trace.json",
                                  "microsoft-agent-2025-12-17.trace.json"])
def test_langfuse_counts_match_the_raw_file(name, tmp_path):
    path = REAL / "langfuse" / name
    want_calls, want_results = langfuse_raw(path)
    calls, results, trajectories = emitted(path, tmp_path)
    assert (calls, results) == (want_calls, want_results)
    assert trajectories[0]["extra"]["trace2skill"]["format"] == "langfuse"
    ledger = ledger_of(path, "langfuse")
    assert (ledger.records, ledger.calls, ledger.results) == (len(json.loads(path.read_text())["observations"]), want_calls, want_results)


# --- Cline ------------------------------------------------------------------------------


def test_cline_task_folders(tmp_path):
    folder = REAL / "cline" / "tasks"
    want_calls = want_results = 0
    for history in folder.glob("*/api_conversation_history.json"):
        for message in json.loads(history.read_text()):
            for block in message["content"]:
                text = block.get("text", "")
                want_calls += block["type"] == "tool_use" or len(re.findall(r"<(list_files|attempt_completion|read_file)>", text))
                want_results += block["type"] == "tool_result" or bool(re.match(r"\[\w+[^\]]*\] Result:", text))
    calls, results, trajectories = emitted(folder, tmp_path)
    assert (calls, results) == (want_calls, want_results) == (8, 6)
    assert len(trajectories) == 2  # ui_messages.json and task_metadata.json are side files, not traces
    result = load_traces([folder])
    assert result.skips == []
    native = next(t for t in result.traces if t.id == "cline-1759140000000")
    assert native.model == "claude-sonnet-4-5-20250929" and native.agent == "Cline 3.32.7"
    assert [o.is_error for s in native.steps for o in s.observations] == [False, True, False, False, False]
    assert "environment_details" not in " ".join(s.message for s in native.steps)


# --- VS Code Copilot OTel SQLite store --------------------------------------------------


def test_copilot_sqlite_counts_match_the_raw_file(tmp_path):
    import sqlite3

    path = REAL / "copilot_otel" / "git-ai_copilot-otel_traces.db"
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    tools = db.execute("SELECT count(*) FROM spans WHERE operation_name = 'execute_tool'").fetchone()[0]
    traces = db.execute("SELECT count(DISTINCT trace_id) FROM spans WHERE operation_name != 'execute_hook'").fetchone()[0]
    db.close()
    before = sorted(path.parent.iterdir())
    calls, results, trajectories = emitted(path, tmp_path)
    assert sorted(path.parent.iterdir()) == before  # opened immutable: no -wal / -shm left beside it
    assert (calls, results) == (tools, tools) == (5, 5)
    assert len(trajectories) == traces
    ledger = ledger_of(path, "copilot_otel")
    assert ledger.records == 24 and sum(ledger.ignored.values()) == 8  # 4 PreToolUse + 4 PostToolUse hook spans


# --- Robustness: mutated real files never make a new reader raise -----------------------

MUTATED = {"openhands": "openhands/basic_gui_mode.json", "tau2": "tau2/activegraph_20260601-041151-558787_results.json",
           "gemini_cli": "gemini_cli/gemini-cli_trajectory.json", "langfuse": "langfuse/pydantic-ai-tools-2025-12-04.trace.json",
           "cline": "cline/tasks/1759140000000/api_conversation_history.json", "inspect_ai": "inspect/log_tool_call_error.json"}


@pytest.mark.parametrize("reader", sorted(MUTATED))
def test_mutated_real_files_do_not_break_a_reader(reader):
    """Values replaced by junk (None, numbers, lists, dicts) and keys removed at random, seeded:
    a reader must turn what it cannot use into skips or drops, never raise (the core would
    then lose the whole file as 'reader failed')."""
    import copy
    import random

    from trace2skill.ingest.base import Document

    rng = random.Random(7)
    junk = [None, 0, 1.5, True, "", "x", [], {}, [None], {"a": None}]

    def mutate(value):
        if isinstance(value, dict):
            return {k: rng.choice(junk) if rng.random() < 0.05 else mutate(v) for k, v in value.items() if rng.random() > 0.025}
        if isinstance(value, list):
            return [rng.choice(junk) if rng.random() < 0.05 else mutate(v) for v in value]
        return value

    base = json.loads((REAL / MUTATED[reader]).read_text())
    for _ in range(25):
        doc = Document(path="mutated.json", kind="json", _value=mutate(copy.deepcopy(base)))
        list(reader_for(reader).read(doc))
