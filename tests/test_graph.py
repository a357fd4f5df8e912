"""The real LangGraph graph driven by the scripted model."""

import re
from collections import Counter

import pytest

from trace2skill.analyse import AnalystReport, analyst_for
from trace2skill.config import load_config
from trace2skill.consolidate import MergeDecision
from trace2skill.fleet import Work
from trace2skill.ingest import IngestResult
from trace2skill.pipeline import analyse_and_consolidate, read_corpus
from trace2skill.prefetch import in_memory
from trace2skill.testing import ScriptedLLM
from trace2skill.types import Observation, SourceRef, Step, ToolCall, Trace


def make_trace(i: int) -> Trace:
    outcome = "failure" if i % 3 == 0 else "success"
    steps = (
        Step(index=0, source="user", message=f"Fix bug number {i}"),
        Step(index=1, source="agent", message="run tests", tool_calls=(ToolCall(name="bash", arguments="pytest tests/"),),
             observations=(Observation(content="bash: pytest: command not found", is_error=True, exit_code=127),)),
    )
    return Trace(id=f"trace-{i:02d}", task=f"Fix bug number {i}", steps=steps, outcome=outcome, source=SourceRef(path=f"t{i}.json"), format="test")


def analyst(messages, output, purpose):
    """Answers like an analyst would: one lesson about pytest, one specific to the task's parity."""
    found = re.search(r"Fix bug number (\d+)", messages[1]["content"])
    number = int(found.group(1)) if found else len(messages[1]["content"])
    lessons = [
        dict(title="Invoke pytest through python", rule="Run `python -m pytest` because `pytest` is not on PATH.",
             when="When running tests.", kind="pitfall", subject="pytest", polarity="do", steps=[1], quote="pytest: command not found"),
        dict(title=f"Parity {number % 2} habit", rule=f"Apply habit {number % 2} before editing.", when="Before editing.",
             kind="procedure", subject=f"habit-{number % 2}", polarity="do", steps=[0, 99], quote="Fix bug"),
    ]
    return AnalystReport(lessons=lessons)


def merger(messages, output, purpose):
    return MergeDecision(groups=[], contradictions=[])


def responder(messages, output, purpose):
    return analyst(messages, output, purpose) if purpose.startswith("analyse") else merger(messages, output, purpose)


def run_graph(traces, llm, config, concurrency):
    """The fleet and the consolidation graph over `traces`, as a run drives them; the progress
    ticks count analyses and merges."""
    config = config.model_copy(update={"analyse": config.analyse.model_copy(update={"concurrency": concurrency})})
    held = IngestResult(traces=traces, skips=[], outcomes={}, redactions={})
    corpus = read_corpus(config, False, ingested=held)
    counts: Counter[str] = Counter()

    def progress(stage, done, total, **_):
        counts[stage] = done

    work = Work(analyst_for(config, llm))
    final, failed, _ = analyse_and_consolidate(corpus, in_memory(traces, config, []), work, config, progress)
    return counts, {"final": final, "failed": [{"trace_id": f.path} for f in failed]}


@pytest.mark.parametrize("concurrency", [1, 2])
def test_fan_out_count_in_equals_count_out_and_merge_levels(concurrency):
    traces = [make_trace(i) for i in range(12)]
    config = load_config(overrides={"consolidate.fan_in": 3, "llm.model": "scripted"}, env={})
    llm = ScriptedLLM(responder)
    counts, state = run_graph(traces, llm, config, concurrency)
    final = state["final"]

    assert counts["analyse"] == llm.count("analyse-failure") + llm.count("analyse-success") == 12
    assert llm.count("analyse-failure") == 4
    assert final.sources == tuple(t.id for t in traces)
    assert final.level == 2  # 12 sets -> 4 groups -> 1 group of 4 -> 1
    assert counts["merge"] == 4 + 1

    by_subject = {l.subject: l for l in final.lessons}
    pytest_rule = by_subject["pytest"]
    assert (pytest_rule.failing_support, pytest_rule.succeeding_support) == (4, 8)
    assert pytest_rule.trace_ids == tuple(t.id for t in traces)
    assert by_subject["habit-0"].support == 6 and by_subject["habit-1"].support == 6
    assert all(e.steps == (0,) for e in by_subject["habit-0"].evidence), "step indices the trace does not have are dropped"
    leaves = {leaf for l in final.lessons for leaf in l.merged_from}
    assert len(leaves) == 24, "every analyst lesson is accounted for at the top"


def test_failed_analysis_is_recorded_and_the_rest_goes_on():
    from trace2skill.errors import LLMError

    traces = [make_trace(i) for i in range(4)]
    config = load_config(overrides={"llm.model": "scripted"}, env={})
    llm = ScriptedLLM(responder).enqueue("analyse-failure", LLMError("provider down"))
    _, state = run_graph(traces, llm, config, 2)
    final = state["final"]
    assert [f["trace_id"] for f in state["failed"]] == ["trace-00"]
    assert final.sources == tuple(t.id for t in traces)
    assert next(l for l in final.lessons if l.subject == "pytest").support == 3


def test_single_trace_needs_no_merge():
    config = load_config(overrides={"llm.model": "scripted"}, env={})
    llm = ScriptedLLM(responder)
    counts, state = run_graph([make_trace(1)], llm, config, 1)
    assert counts.get("merge", 0) == 0 and llm.count("merge") == 0
    assert state["final"].level == 0


def test_the_drain_switch_drains_the_graphs_run_control_before_and_after_it_is_made():
    """SIGTERM sets the run's `DrainSwitch` (no LangGraph needed to read it); the consolidation
    graph's `RunControl`, made later, must be drained whether the request came before or after."""
    import subprocess
    import sys

    from langgraph.runtime import RunControl

    from conftest import ROOT
    from trace2skill.fleet import DrainSwitch

    early = DrainSwitch()
    early.request_drain("sigterm")
    made = early.for_graph()
    assert isinstance(made, RunControl) and made.drain_requested and made.drain_reason == "sigterm"
    late = DrainSwitch()
    control = late.for_graph()
    assert not control.drain_requested and not late.drain_requested
    late.request_drain("sigterm")
    assert control.drain_requested and control.drain_reason == "sigterm"
    code = "import sys\nfrom trace2skill.fleet import DrainSwitch\nDrainSwitch().request_drain()\nprint('langgraph' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "False", "reading and setting the switch imports no LangGraph"
