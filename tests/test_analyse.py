import asyncio

from trace2skill.analyse import AnalystReport, ModelAnalyst, analyst_messages
from trace2skill.config import load_config
from trace2skill.testing import ScriptedLLM
from trace2skill.types import Observation, SourceRef, Step, ToolCall, Trace

TRACE = Trace(
    id="t-1", task="Fix the parser", outcome="failure", source=SourceRef(path="t.json"), format="test",
    steps=(
        Step(index=0, source="user", message="Fix the parser"),
        Step(index=1, source="agent", message="running tests", tool_calls=(ToolCall(name="bash", arguments="pytest tests/"),),
             observations=(Observation(content="bash: pytest:   command not found", is_error=True, exit_code=127),)),
    ),
)


def analyse_with(quote, steps):
    draft = dict(title="Invoke pytest via python", rule="Run python -m pytest.", when="When testing.", kind="pitfall",
                 subject="PyTest", polarity="do", steps=steps, quote=quote)
    llm = ScriptedLLM().enqueue("analyse-failure", AnalystReport(lessons=[draft]))
    config = load_config(overrides={"llm.model": "scripted"}, env={})
    return asyncio.run(ModelAnalyst(llm, config).analyse(TRACE)), llm


def test_failures_go_to_the_error_analyst_with_step_numbers_in_the_prompt():
    lessons, llm = analyse_with("pytest: command not found", [1])
    assert llm.count("analyse-failure") == 1
    prompt = llm.calls[0].messages[1]["content"]
    assert "[step 1]" in prompt and "FAILED" in prompt
    [lesson] = lessons.lessons
    assert lesson.subject == "pytest" and lesson.failing_support == 1
    assert lessons.sources == ("t-1",)


def test_a_real_quote_is_kept_even_with_different_spacing():
    lessons, _ = analyse_with("bash: pytest: command not found", [1])
    assert lessons.lessons[0].evidence[0].quote == "bash: pytest: command not found"


def test_an_invented_quote_is_replaced_by_a_verbatim_excerpt_and_bad_steps_dropped():
    lessons, _ = analyse_with("the agent clearly panicked", [1, 42])
    evidence = lessons.lessons[0].evidence[0]
    assert evidence.steps == (1,)
    assert evidence.quote == "running tests"


def test_success_prompt_differs_from_failure_prompt():
    config = load_config(env={})
    success = TRACE.model_copy(update={"outcome": "success"})
    assert "SUCCEEDED" in analyst_messages(success, config)[1]["content"]
    assert "FAILED" in analyst_messages(TRACE, config)[1]["content"]
