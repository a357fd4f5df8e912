"""Cost quoted before it is spent, caps that halt cleanly, and runs that resume afterwards."""

import json

import pytest
from langgraph.runtime import RunControl
from typer.testing import CliRunner

from trace2skill.budget import preflight, quote
from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.consolidate import merge_count
from trace2skill.errors import BudgetExceeded, ConfigError, Interrupted
from trace2skill.pipeline import distill, read_corpus
from trace2skill.testing import ScriptedLLM

from test_graph import responder


def analyst_calls(llm: ScriptedLLM) -> int:
    return llm.count("analyse-failure") + llm.count("analyse-success")


def test_quote_counts_every_call_the_run_will_make(demo_traces):
    config = load_config(env={})
    traces = read_corpus(config, False, [demo_traces]).entries
    estimate = quote(traces, config, price=(1e-6, 4e-6))
    analyse, merge, repair, preflight_stage = estimate.stages
    # 40 analyses of at most 3 lessons, fan-in 5: 8 merges of 15 lessons (one window each), then
    # 75 and 45 lessons (two windows of at most 40 each), then 120 lessons (three windows).
    assert preflight_stage.calls == 1 and analyse.calls == 40 and merge.calls == 8 + 2 + 2 + 3
    assert merge_count(40, 5) == 11 and repair.calls == 2  # 3 % of 55, rounded up
    assert 0 < analyse.input_tokens <= 40 * (config.analyse.token_budget + 1000)
    assert estimate.cost == pytest.approx(sum(s.input_tokens * 1e-6 + s.output_tokens * 4e-6 for s in estimate.stages))
    assert quote(traces, config, price=None).cost is None


def test_a_run_quoted_above_the_budget_is_refused_before_any_call(demo_traces):
    config = load_config(overrides={"budget.max_cost": 0.0001}, env={})
    traces = read_corpus(config, False, [demo_traces]).entries
    with pytest.raises(BudgetExceeded, match="exceeds --budget"):
        preflight(traces, config, "openai/gpt-4o-mini")
    assert preflight(traces, config, "scripted").cost == 0, "the scripted model is free"
    with pytest.raises(ConfigError, match="llm.price_in"):
        preflight(traces, config, "openai/a-model-nobody-prices")
    priced = load_config(overrides={"budget.max_cost": 100.0, "llm.price_in": 1.0, "llm.price_out": 2.0}, env={})
    assert preflight(traces, priced, "openai/a-model-nobody-prices").cost > 0


def test_a_run_above_the_approval_threshold_needs_yes(demo_traces):
    traces = read_corpus(load_config(env={}), False, [demo_traces]).entries
    needs_approval = load_config(overrides={"budget.approve_above": 0.0001}, env={})
    with pytest.raises(BudgetExceeded, match="--yes"):
        preflight(traces, needs_approval, "openai/gpt-4o-mini")
    approved = load_config(overrides={"budget.approve_above": 0.0001, "budget.approved": True}, env={})
    assert preflight(traces, approved, "openai/gpt-4o-mini").cost > 0.0001


def test_call_cap_halts_with_exit_75_and_a_larger_cap_resumes(demo_traces, tmp_path):
    llm = ScriptedLLM(responder)
    args = ["distill", str(demo_traces), "--out", str(tmp_path / "out"), "--skill", "demo", "--model", "scripted"]
    capped = CliRunner().invoke(app, [*args, "--max-calls", "5"], obj={"llm_factory": lambda c: llm})
    assert capped.exit_code == 75, capped.output
    assert "call cap reached" in capped.output and not (tmp_path / "out" / "demo").exists()
    before = analyst_calls(llm)
    assert before == 5

    resumed = CliRunner().invoke(app, [*args, "--max-calls", "1000", "--json"], obj={"llm_factory": lambda c: llm})
    assert resumed.exit_code == 0, resumed.output
    assert analyst_calls(llm) == 40, "analyses finished before the cap are not paid for twice"
    assert json.loads(resumed.stdout)["analysed"] == 40


def test_a_drained_run_stops_resumably_and_finishes_on_the_next_invocation(demo_traces, tmp_path):
    control = RunControl()

    def drain_after_three(messages, output, purpose):
        if analyst_calls(llm) == 3:
            control.request_drain("sigterm")
        return responder(messages, output, purpose)

    llm = ScriptedLLM(drain_after_three)
    config = load_config(overrides={"llm.model": "scripted", "skill.out": tmp_path / "out", "skill.name": "demo",
                                    "analyse.concurrency": 1}, env={})
    checkpoint = tmp_path / "state" / "checkpoints.sqlite"
    with pytest.raises(Interrupted, match="resume"):
        distill(config, llm, [demo_traces], checkpoint=checkpoint, control=control)
    assert 3 <= analyst_calls(llm) < 40
    assert not (tmp_path / "out" / "demo").exists()

    llm._responder = responder
    result, _ = distill(config, llm, [demo_traces], checkpoint=checkpoint)
    assert analyst_calls(llm) == 40 and result.analysed == 40


def test_a_client_without_its_own_meter_keeps_one_budget_wrapper_for_the_command():
    """Every run a command makes with one client (preflight, main run, gate folds) spends from
    one meter: a second `with_budget` returns the same wrapper, not a fresh meter."""
    from trace2skill.budget import BudgetedClient, with_budget
    from trace2skill.config import load_config
    from trace2skill.testing import ScriptedLLM

    config = load_config(overrides={"llm.model": "scripted", "budget.max_calls": 3}, env={})
    client = ScriptedLLM()
    first, second = with_budget(client, config), with_budget(client, config)
    assert isinstance(first, BudgetedClient) and second is first
