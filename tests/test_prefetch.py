"""The model path's prompts, prepared ahead in worker processes (`prefetch`), on real demo runs.

What the workers send back is compared with what the analyst builds from the trace in this
process (`analyse.analyst_messages`, `analyse.step_texts`), and the quote check with a plain
re-statement of its rule over the trace's own fields.
"""

from __future__ import annotations

import json

from trace2skill.analyse import verified_quote
from trace2skill.prepare import analyst_messages, step_texts
from trace2skill.config import load_config
from trace2skill.executor.process import ProcessExecutor
from trace2skill.ingest import load_traces
from trace2skill.pipeline import read_corpus
from trace2skill.prefetch import prompts
from trace2skill.stream import ShardJob, label_book, plan_shards

from conftest import DEMO_CORPUS, DEMO_IDS, demo_subset


def _config(**overrides):
    return load_config(overrides={"llm.model": "scripted", **overrides}, env={})


def test_the_workers_prompts_are_the_ones_the_analyst_builds_here_in_stream_order(tmp_path):
    folder = demo_subset(tmp_path / "c", DEMO_IDS[:6])
    config = _config()
    executor = ProcessExecutor(1, inline=False)
    corpus = read_corpus(config, False, [folder], executor=executor)
    traces = {t.id: t for t in load_traces([str(folder)], config).traces}
    recorded = {traces[DEMO_IDS[2]].digest()}
    made = list(prompts(corpus, config, executor, [], recorded))
    assert [p.id for p in made] == DEMO_IDS[:6]  # one folder per run, walked in name order
    for p in made:
        trace = traces[p.id]
        assert p.digest == trace.digest() and p.outcome == trace.outcome
        if p.digest in recorded:
            assert p.messages is None, "the journal holds it: no prompt"
            continue
        assert p.messages == analyst_messages(trace, config)
        assert p.steps == step_texts(trace) and p.redo is not None
        again = p.redo(1000)
        assert again.budget == 1000 and again.messages == analyst_messages(trace, config, (), 1000)


def test_the_prompt_pass_runs_at_most_ahead_shards_before_the_caller(tmp_path):
    folder = demo_subset(tmp_path / "c", DEMO_IDS[:12])
    config = _config()
    shards = [s for s in plan_shards([folder], config)[0] if s.path.endswith(".traj.json")]
    assert len(shards) == 12
    job = ShardJob(config, label_book([folder], config), "prompt")
    executor = ProcessExecutor(2, inline=False)
    results = executor.map(shards, job, ahead=3)
    first = next(results)
    assert executor._pool is not None and len(executor._pool._cache) <= 3  # tasks submitted and not yet taken
    assert len(first.prompts) == 1 and len(list(results)) == 11
    assert executor._pool is None, "the pool is closed once the pass is done"


def test_a_quote_is_kept_only_where_the_cited_steps_say_it():
    [trace] = [t for t in load_traces([str(DEMO_CORPUS)], _config()).traces if t.id == DEMO_IDS[0]]
    texts = step_texts(trace)
    step = next(s for s in trace.steps if s.observations and s.observations[0].content.strip())
    words = step.observations[0].content.split()[:6]
    quote = "  ".join(words)  # extra whitespace: matched normalised
    assert verified_quote(texts, (step.index,), quote) == " ".join(words)[:200]
    other = next(s for s in trace.steps if s.index != step.index and " ".join(words) not in json.dumps(s.model_dump()))
    first_text = next(" ".join(t.split()) for t in (other.message, *(c.arguments for c in other.tool_calls),
                                                     *(o.content for o in other.observations)) if t.strip())
    assert verified_quote(texts, (other.index,), quote) == first_text[:200], "not in the cited step: its own text instead"
    assert verified_quote(texts, (), "no such words anywhere in it 12345") == ""



def test_the_model_paths_fork_server_starts_when_its_executor_is_made_and_forks_warm_workers(tmp_path):
    """A fresh process each (the fork server is one per process): making the model path's
    executor starts the server, which loads the tokenizer before it forks a worker; an offline
    `--executor process` starts it at its first map, without the tokenizer."""
    import subprocess
    import sys

    probe = """
import sys
from pathlib import Path
from trace2skill.executor.process import ProcessExecutor, _context
if __name__ == "__main__":
    executor = ProcessExecutor(2, inline=sys.argv[1] == "offline")
    started = any(p.read_text().split() for p in Path("/proc/self/task").glob("*/children"))
    with (executor._server or _context(warm=False)).Pool(1) as pool:
        loaded = pool.apply(eval, ("__import__('trace2skill.compress').compress._encoding.cache_info().currsize",))
    print(started, loaded)
"""
    (tmp_path / "probe.py").write_text(probe, encoding="utf-8")
    model = subprocess.run([sys.executable, "probe.py", "model"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    offline = subprocess.run([sys.executable, "probe.py", "offline"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert model.stdout.split() == ["True", "1"], model.stderr
    assert offline.stdout.split() == ["False", "0"], offline.stderr
