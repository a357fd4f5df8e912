"""The scheduled refresh on real git repositories (a bare on-disk "remote", no network)."""

import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.refresh import refresh
from trace2skill.state import load_state, run_lock
from trace2skill.testing import ScriptedLLM

from conftest import DEMO_TRACES, ROOT, refresh_world
from test_graph import responder

SKILL = "swe-demo"
CORPUS = DEMO_TRACES / "mini-swe-agent-swebench-verified"
ALL_IDS = sorted(p.name for p in (CORPUS / "trajs").iterdir())


@pytest.fixture
def world(tmp_path):
    """A skills repo with main pushed to a bare remote, a trace folder and a state folder."""
    return refresh_world(tmp_path)


def add_traces(world, ids):
    for instance in ids:
        shutil.copytree(CORPUS / "trajs" / instance, world["traces"] / "trajs" / instance)


def config_for(world, **extra):
    overrides = {"skill.name": SKILL, "skill.out": world["root"] / "skills", "publish.mode": "branch",
                 "state_dir": world["state"], "analyse.concurrency": 1, **extra}
    return load_config(overrides=overrides, env={})


def bot_branch(world):
    return world["repo"].heads[f"trace2skill/{SKILL}"]


def skill_text(world, ref):
    return world["repo"].git.show(f"{ref}:skills/{SKILL}/SKILL.md")


def land(world):
    """A reviewer merges the bot's pull request into main."""
    repo = world["repo"]
    repo.heads.main.checkout()
    repo.git.merge("--no-ff", "-m", "Merge skill PR", f"trace2skill/{SKILL}")
    repo.remote("origin").push("main")


def commit_on_main(world, path, message):
    """A person commits on main and pushes, as the remote's main is what the bot merges from."""
    world["repo"].index.add([str(path)])
    world["repo"].index.commit(message)
    world["repo"].remote("origin").push("main")


def test_new_trajectories_make_one_commit_with_trailers_and_a_tag(world):
    add_traces(world, ALL_IDS[:10])
    outcome = refresh(config_for(world), None, [world["traces"]])
    assert outcome.changed and outcome.new_traces == 10
    head = bot_branch(world).commit
    assert head.parents[0] == world["repo"].heads.main.commit, "exactly one commit on top of main"
    trailers = head.trailers_dict
    assert trailers["Trace2Skill-Run"] == [outcome.result.run_id]
    assert trailers["Trace2Skill-Trajectories"] == ["10"]
    assert trailers["Trace2Skill-Model"] == ["offline"]
    assert f"{SKILL}/v1.0.0" in [t.name for t in world["repo"].tags]
    assert world["repo"].active_branch.name == "main", "the user's branch is checked out again"
    assert not (world["root"] / "skills" / SKILL).exists(), "main is untouched until the PR lands"

    add_traces(world, ALL_IDS[10:20])
    second = refresh(config_for(world), None, [world["traces"]])
    assert second.new_traces == 10 and second.changed
    assert bot_branch(world).commit.parents[0] == head
    version = second.result.version
    assert version != "1.0.0" and f"{SKILL}/v{version}" in [t.name for t in world["repo"].tags]
    state = load_state(world["state"]).skill(SKILL)
    assert len(state.trace_digests) == 20 and state.version == version


def test_nothing_new_means_no_model_call_no_commit_and_exit_zero(world):
    add_traces(world, ALL_IDS[:6])
    runner = CliRunner()
    args = ["refresh", str(world["traces"]), "--skill", SKILL, "--out", str(world["root"] / "skills"),
            "--publish", "branch", "--state-dir", str(world["state"]), "--model", "scripted"]
    llm = ScriptedLLM(responder)
    first = runner.invoke(app, args, obj={"llm_factory": lambda c: llm})
    assert first.exit_code == 0, first.output
    calls, head = llm.count(), bot_branch(world).commit
    again = runner.invoke(app, args, obj={"llm_factory": lambda c: llm})
    assert again.exit_code == 0, again.output
    assert "no changes" in again.stdout
    assert llm.count() == calls and bot_branch(world).commit == head


def test_hand_edit_on_main_survives_the_next_refresh(world):
    add_traces(world, ALL_IDS[:8])
    refresh(config_for(world), None, [world["traces"]])
    land(world)
    skill_md = world["root"] / "skills" / SKILL / "SKILL.md"
    edited = skill_md.read_text().replace("## Gotchas\n", "## Gotchas\n\n- **Ask before deleting files.** A human wrote this rule.\n", 1)
    assert edited != skill_md.read_text()
    skill_md.write_text(edited)
    commit_on_main(world, skill_md, "Human edit")

    add_traces(world, ALL_IDS[8:16])
    outcome = refresh(config_for(world), None, [world["traces"]])
    assert outcome.changed
    assert "- **Ask before deleting files.** A human wrote this rule." in skill_text(world, f"trace2skill/{SKILL}")


def test_rule_removed_in_review_is_not_proposed_again(world):
    add_traces(world, ALL_IDS[:12])
    refresh(config_for(world), None, [world["traces"]])
    repo = world["repo"]
    bot_branch(world).checkout()
    skill_md = world["root"] / "skills" / SKILL / "SKILL.md"
    lines = skill_md.read_text().splitlines(keepends=True)
    victim = next(line for line in lines if "<!-- rule:" in line)
    rule_id = victim.split("<!-- rule:")[1].split(" ")[0].rstrip("->").strip()
    skill_md.write_text("".join(l for l in lines if l != victim))
    repo.index.add([str(skill_md)])
    repo.index.commit("Review: drop a rule")
    repo.remote("origin").push(f"trace2skill/{SKILL}", force=True)
    land(world)

    add_traces(world, ALL_IDS[12:16])
    refresh(config_for(world), None, [world["traces"]])
    assert rule_id in load_state(world["state"]).skill(SKILL).rejected
    assert f"rule:{rule_id}" not in skill_text(world, f"trace2skill/{SKILL}")


class Crash(Exception):
    """Stands in for the process being killed in the middle of analysis."""


class CrashingLLM:
    """Delegates to the scripted model but dies before the n-th analyst call."""

    def __init__(self, inner, crash_at):
        self.inner, self.crash_at, self.model, self.started = inner, crash_at, inner.model, 0

    @property
    def usage(self):
        return self.inner.usage

    async def complete(self, messages, *, output, purpose):
        if purpose.startswith("analyse"):
            self.started += 1
            if self.started == self.crash_at:
                raise Crash("killed")
        return await self.inner.complete(messages, output=output, purpose=purpose)


def test_killed_refresh_resumes_without_repeating_finished_analyses(world):
    add_traces(world, ALL_IDS[:9])
    scripted = ScriptedLLM(responder)
    config = config_for(world, **{"llm.model": "scripted"})
    with pytest.raises(Crash):
        refresh(config, CrashingLLM(scripted, crash_at=5), [world["traces"]])
    finished_before = scripted.count("analyse-failure") + scripted.count("analyse-success")
    assert 0 < finished_before < 9
    assert load_state(world["state"]).skill(SKILL).trace_digests == {}, "the watermark did not move"
    assert world["repo"].active_branch.name == "main"

    outcome = refresh(config, scripted, [world["traces"]])
    assert outcome.changed
    assert scripted.count("analyse-failure") + scripted.count("analyse-success") == 9


def _hold_lock(state_dir, ready, release):
    with run_lock(Path(state_dir)):
        ready.set()
        release.wait(30)


def test_second_concurrent_refresh_exits_75_and_touches_nothing(world):
    add_traces(world, ALL_IDS[:4])
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(world["state"]), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        run = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "refresh", str(world["traces"]), "--skill", SKILL,
             "--out", str(world["root"] / "skills"), "--publish", "branch", "--state-dir", str(world["state"])],
            capture_output=True, text=True, cwd=world["root"], env={**__import__("os").environ, "CI": "1"},
        )
    finally:
        release.set()
        holder.join(30)
    assert run.returncode == 75, run.stderr
    assert "lock" in run.stderr.lower() and "Traceback" not in run.stderr
    assert f"trace2skill/{SKILL}" not in [h.name for h in world["repo"].heads]
    assert not (world["state"] / "state.json").exists()

    outcome = refresh(config_for(world), None, [world["traces"]])
    assert outcome.changed, "after the other run, the refresh works normally"


KILLED_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_graph import responder
from trace2skill.config import load_config
from trace2skill.refresh import refresh
from trace2skill.testing import ScriptedLLM

log = Path({log!r})

def hang_on_fifth(messages, output, purpose):
    if purpose.startswith("analyse"):
        done = len(log.read_text().splitlines()) if log.exists() else 0
        if done == 4:
            log.with_suffix(".hanging").write_text("")
            time.sleep(600)
        answer = responder(messages, output, purpose)
        with log.open("a") as f:
            f.write("done\\n")
        return answer
    return responder(messages, output, purpose)

config = load_config(overrides={overrides!r}, env={{}})
refresh(config, ScriptedLLM(hang_on_fifth), [Path({traces!r})])
"""


def test_refresh_killed_with_sigkill_resumes_and_never_repeats_an_analysis(world, tmp_path):
    import os
    import signal
    import time

    add_traces(world, ALL_IDS[:9])
    log = tmp_path / "calls.log"
    overrides = {"skill.name": SKILL, "skill.out": str(world["root"] / "skills"), "publish.mode": "branch",
                 "state_dir": str(world["state"]), "analyse.concurrency": 1, "llm.model": "scripted"}
    script = KILLED_RUN.format(tests=str(ROOT / "tests"), log=str(log), overrides=overrides, traces=str(world["traces"]))
    child = subprocess.Popen([sys.executable, "-c", script], cwd=world["root"], env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not log.with_suffix(".hanging").exists():
        assert child.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert len(log.read_text().splitlines()) == 4
    assert not (world["state"] / "state.json").exists() or load_state(world["state"]).skill(SKILL).trace_digests == {}

    scripted = ScriptedLLM(responder)
    outcome = refresh(config_for(world, **{"llm.model": "scripted"}), scripted, [world["traces"]])
    assert outcome.changed
    assert scripted.count("analyse-failure") + scripted.count("analyse-success") == 9 - 4
    assert len(load_state(world["state"]).skill(SKILL).trace_digests) == 9


def test_publishing_a_pr_without_a_remote_fails_before_any_analysis(world):
    world["repo"].delete_remote("origin")
    add_traces(world, ALL_IDS[:3])
    llm = ScriptedLLM(responder)
    from trace2skill.errors import PublishError

    with pytest.raises(PublishError, match="remote"):
        refresh(config_for(world, **{"publish.mode": "gh", "llm.model": "scripted"}), llm, [world["traces"]])
    assert llm.count() == 0


def test_a_refresh_with_a_model_quotes_once(world, monkeypatch):
    """The quote refresh makes before touching git is the one the run uses: the work is quoted
    once, and each trajectory's prompt is prepared once (in a worker process: the driver
    compresses nothing, and the quote estimates tokens without compressing)."""
    import trace2skill.compress as compress
    import trace2skill.pipeline as pipeline
    import trace2skill.prefetch as prefetch

    add_traces(world, ALL_IDS[:4])
    seen: list[str] = []
    compressed_here: list[str] = []
    quotes: list[int] = []
    real_prompts, real_preflight = prefetch.prompts, pipeline.preflight

    def counted(*args, **kwargs):  # the prompts, compressed in the worker processes
        for prepared in real_prompts(*args, **kwargs):
            seen.append(prepared.id)
            yield prepared

    def in_driver(trace, *args, **kwargs):
        compressed_here.append(trace.id)
        raise AssertionError("the driver compressed a trajectory")

    def quoted(entries, *args, **kwargs):
        quotes.append(len(entries))
        return real_preflight(entries, *args, **kwargs)

    monkeypatch.setattr(prefetch, "prompts", counted)
    monkeypatch.setattr(compress, "compress_trace", in_driver)
    monkeypatch.setattr(pipeline, "preflight", quoted)
    scripted = ScriptedLLM(responder)
    outcome = refresh(config_for(world, **{"llm.model": "scripted"}), scripted, [world["traces"]])
    assert outcome.changed
    assert scripted.count("analyse-failure") + scripted.count("analyse-success") == 4
    assert quotes == [4], quotes
    assert sorted(seen) == sorted(ALL_IDS[:4]), sorted(seen)
    assert compressed_here == []


def test_a_refresh_with_the_heldout_gate_quotes_it_and_refuses_the_two_together_above_the_budget(world):
    """As `distill` does: the gate's own work (fold distils, judge calls) is quoted before any
    call, and a budget that covers the run or the gate alone but not both refuses the refresh
    before git is touched or a model call is made."""
    from trace2skill.errors import BudgetRefused
    from trace2skill.pipeline import heldout_quote, plan
    from trace2skill.refresh import read_new

    model = {"llm.model": "scripted", "llm.price_in": 1, "llm.price_out": 1}
    add_traces(world, ALL_IDS[:4])
    assert refresh(config_for(world, **model), ScriptedLLM(responder), [world["traces"]]).changed
    land(world)
    add_traces(world, ALL_IDS[4:12])
    gated = config_for(world, **model, **{"gate.mode": "heldout", "gate.folds": 2})
    _, fresh = read_new(gated, False, [world["traces"]], load_state(world["state"]), SKILL, None)
    run = plan(gated, ScriptedLLM(responder), fresh, None, check=False).quote
    gate = heldout_quote(gated, ScriptedLLM(responder), fresh)
    assert any(s.stage == "gate-judge" for s in gate.stages) and gate.cost > 0 and run.cost > 0
    head, scripted, quotes = bot_branch(world).commit, ScriptedLLM(responder), []
    capped = config_for(world, **model, **{"gate.mode": "heldout", "gate.folds": 2,
                                           "budget.max_cost": max(run.cost, gate.cost) * 1.01})
    with pytest.raises(BudgetRefused, match="the run and its held-out gate"):
        refresh(capped, scripted, [world["traces"]], on_quote=quotes.append)
    assert [q.cost for q in quotes] == [run.cost, gate.cost], "both quoted (printed by the CLI) before the refusal"
    assert scripted.count() == 0, "no model call"
    assert bot_branch(world).commit == head, "git untouched"
