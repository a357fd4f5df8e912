"""Held-out evaluation: the split by task, coverage against an independent count, the CLI, the judge.

The labelled corpus is written here as tau-bench records (two trials per task). Each trajectory
carries a known set of failure kinds, each produced by one tool output the offline analyst
reads (`pytest: command not found`, a timed-out pytest, a `ModuleNotFoundError` traceback).
The expected figures are computed below from those labels alone: a kind becomes a rule when at
least two training trajectories show it (the offline analyst's documented pitfall support), and a
held-out run is flagged when it shows a kind that is a rule.
"""

from __future__ import annotations

import hashlib
import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.evaluate import addresses, split_folds, task_id
from trace2skill.ingest import load_traces
from trace2skill.testing import ScriptedLLM

from conftest import DEMO_TRACES

OUTPUTS = {
    "pytest-missing": ("pytest tests/", "bash: pytest: command not found"),
    "timeout": ("python -m pytest tests/", "The command timed out after 60 seconds"),
    "module": ("python run.py", 'Traceback (most recent call last):\n  File "run.py", line 1, in <module>\n'
                                "    import yaml\nModuleNotFoundError: No module named 'yaml'"),
    "file": ("python load.py", 'Traceback (most recent call last):\n  File "load.py", line 2, in <module>\n'
                               "    open('data.csv')\nFileNotFoundError: [Errno 2] No such file or directory: 'data.csv'"),
}


def record(task: int, trial: int, success: bool, kinds: list[str]) -> dict:
    traj = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": f"Solve task {task}."}]
    calls = [OUTPUTS[k] for k in kinds] + [("ls", "a.py b.py")]
    for i, (command, output) in enumerate(calls):
        traj.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "bash", "arguments": json.dumps({"command": command})}}]})
        traj.append({"role": "tool", "tool_call_id": f"c{i}", "content": output})
    traj.append({"role": "assistant", "content": "Done."})
    return {"task_id": task, "trial": trial, "reward": 1.0 if success else 0.0, "traj": traj}


def labelled_corpus() -> list[tuple[int, int, bool, list[str]]]:
    """24 runs of 12 tasks: (task, trial, success, kinds). Every third run succeeds."""
    rows = []
    for i in range(24):
        kinds = (["pytest-missing"] if i % 4 == 0 else []) + (["timeout"] if i % 5 == 0 else []) + (["module"] if i == 11 else [])
        rows.append((i // 2, i % 2, i % 3 == 1, kinds))
    return rows


def write_corpus(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([record(*row) for row in rows]), encoding="utf-8")
    return path


def hash_folds(tasks: list[str], k: int) -> dict[str, int]:
    """The documented split, in plain Python: tasks ordered by SHA-256 of their id, dealt round-robin."""
    ordered = sorted(tasks, key=lambda t: (hashlib.sha256(t.encode()).hexdigest(), t))
    return {task: i % k for i, task in enumerate(ordered)}


def test_split_keeps_every_task_in_one_fold_and_ignores_input_order(tmp_path):
    rows = labelled_corpus()
    ingested = load_traces([write_corpus(tmp_path / "runs.json", rows)], load_config(env={}))
    assert len(ingested.traces) == 24
    folds = split_folds(ingested.traces, 4)
    assert len(folds) == 4 and sum(len(f) for f in folds) == 24
    task_sets = [{t.extra["task_id"] for t in fold} for fold in folds]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not task_sets[a] & task_sets[b], "a task leaked across folds"
    assert sorted(len(s) for s in task_sets) == [3, 3, 3, 3]
    shuffled = list(ingested.traces)
    random.Random(7).shuffle(shuffled)
    assert [[t.id for t in f] for f in split_folds(shuffled, 4)] == [[t.id for t in f] for f in folds]
    expected = hash_folds([f"task_id:{task}" for task in range(12)], 4)
    assert all(expected[task_id(t)] == i for i, fold in enumerate(folds) for t in fold)


def test_heldout_coverage_matches_an_independent_count(tmp_path):
    rows = labelled_corpus()
    corpus = write_corpus(tmp_path / "runs.json", rows)
    result = CliRunner().invoke(app, ["eval", str(corpus), "--folds", "4", "--json", "--plot", str(tmp_path / "c.svg")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    fold_of = hash_folds([f"task_id:{task}" for task in range(12)], 4)
    covered = failures = flagged = successes = 0
    per_fold = []
    for k in range(4):
        training = [r for r in rows if fold_of[f"task_id:{r[0]}"] != k]
        support = {kind: sum(kind in r[3] for r in training) for kind in OUTPUTS}
        rules = {kind for kind, n in support.items() if n >= 2}
        assert {"pytest-missing", "timeout"} <= rules and "module" not in rules  # the corpus is built so
        heldout = [r for r in rows if fold_of[f"task_id:{r[0]}"] == k]
        fold_failures = [r for r in heldout if not r[2]]
        fold_successes = [r for r in heldout if r[2]]
        per_fold.append((sum(bool(rules & set(r[3])) for r in fold_failures), len(fold_failures),
                         sum(bool(rules & set(r[3])) for r in fold_successes), len(fold_successes)))
    covered, failures, flagged, successes = (sum(x[i] for x in per_fold) for i in range(4))
    assert (failures, successes) == (16, 8)
    assert (covered, flagged) == (6, 3)  # failed runs 0, 5, 8, 12, 15, 20; successful runs 4, 10, 16
    assert report["heldout_failure_coverage"] == round(covered / failures, 4) == 0.375
    assert report["false_alarm_rate"] == round(flagged / successes, 4) == 0.375
    assert report["by_kind"]["pitfall"]["heldout_failure_coverage"] == 0.375, "every rule here is a pitfall"
    got = [(f["covered_failures"], f["heldout_failures"], f["flagged_successes"], f["heldout_successes"]) for f in report["folds"]]
    assert got == per_fold
    for row in report["rule_hits"].values():
        assert row["hit_rate"] == round(row["heldout_hits"] / failures, 4)
        assert row["alarm_rate"] == round(row["false_alarms"] / successes, 4)


def test_eval_on_the_bundled_demo_prints_the_figures_and_a_plot(tmp_path):
    plot = tmp_path / "curve.svg"
    result = CliRunner().invoke(app, ["eval", str(DEMO_TRACES), "--folds", "4", "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("heldout_failure_coverage", "false_alarm_rate", "rule_hits", "folds", "learning_curve"):
        assert key in report
    assert report["trajectories"] == 40 and report["heldout_failures"] == 14 and report["heldout_successes"] == 26
    assert len(report["folds"]) == 4 and sum(f["tasks"] for f in report["folds"]) == 40
    ids = [t for f in report["folds"] for t in f["task_ids"]]
    assert len(ids) == len(set(ids)) == 40
    assert [p["share"] for p in report["learning_curve"]] == [0.25, 0.5, 0.75, 1.0]
    assert ET.parse(plot).getroot().tag.endswith("svg")
    assert not (tmp_path / "skills_out").exists(), "eval writes no skill"


def test_eval_table_names_the_plot_and_every_skipped_file(tmp_path):
    corpus = write_corpus(tmp_path / "runs.json", labelled_corpus())
    (tmp_path / "broken.json").write_text("{not json")
    result = CliRunner().invoke(app, ["eval", str(corpus), str(tmp_path / "broken.json"), "--folds", "3"])
    assert result.exit_code == 3, result.output
    assert "skipped: " in result.stdout and "broken.json" in result.stdout
    assert "held-out figures" in result.stdout and "learning curve" in result.stdout
    plot = tmp_path / ".trace2skill" / "eval" / "learning-curve.svg"
    assert f"learning curve plot: {plot.relative_to(tmp_path)}" in result.stdout and plot.is_file()


def test_signature_matching_is_by_key_or_a_more_specific_key():
    assert addresses("timeout:pytest", "timeout:pytest")
    assert addresses("python:TypeError", "python:TypeError:unexpected keyword <*>")
    assert addresses("Timeout:PyTest", "timeout:pytest")
    assert not addresses("python:TypeError:unexpected keyword <*>", "python:TypeError")
    assert not addresses("timeout:py", "timeout:pytest")
    assert not addresses("", "timeout:pytest")


def _first_rule(messages) -> list[str]:
    text = messages[-1]["content"]
    listed = [line.split("`")[1] for line in text.splitlines() if line.startswith("- `r-")]
    return listed[:1]


def judge(messages, output, purpose):
    """Failed runs: cite the first listed rule and an id that is not in the list. Successes: none."""
    if purpose == "judge-failure":
        return {"rule_ids": _first_rule(messages) + ["r-notalist"], "reason": "step 2"}
    if purpose == "judge-success":
        return {"rule_ids": [], "reason": "no rule applies"}
    if purpose == "merge":
        return {"lessons": []}
    return {"lessons": [{"title": "Run tests with python -m pytest", "rule": "Use python -m pytest.", "when": "running tests",
                         "kind": "pitfall", "subject": "pytest", "polarity": "do", "steps": [2], "quote": ""}]}


def test_the_model_judge_cites_rule_ids_and_unknown_ids_are_dropped(tmp_path):
    corpus = write_corpus(tmp_path / "runs.json", labelled_corpus())
    llm = ScriptedLLM(judge)
    result = CliRunner().invoke(app, ["eval", str(corpus), "--folds", "4", "--json", "--model", "scripted"],
                                obj={"llm_factory": lambda config: llm})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["heldout_failure_coverage"] == 1.0 and report["false_alarm_rate"] == 0.0
    assert "r-notalist" not in report["rule_hits"]
    # at most one judge call per held-out labelled run per learning-curve point (16 failed, 8
    # successful runs, 4 points); a verdict on the same run and the same rules is journaled, not asked twice
    assert 16 <= llm.count("judge-failure") <= 16 * 4 and 8 <= llm.count("judge-success") <= 8 * 4
    assert report["usage"]["calls"] == len(llm.calls)
    assert "up to 96 judge calls" in result.stderr, "the calls are quoted before they are made"
    calls = len(llm.calls)
    again = CliRunner().invoke(app, ["eval", str(corpus), "--folds", "4", "--json", "--model", "scripted"],
                               obj={"llm_factory": lambda config: llm})
    assert again.exit_code == 0 and json.loads(again.stdout)["rule_hits"] == report["rule_hits"]
    assert len(llm.calls) == calls, "a rerun of the evaluation pays for nothing again"


def test_eval_reads_each_heldout_fold_again_a_batch_at_a_time_and_never_holds_the_corpus(tmp_path, traces_alive_when_scored):
    """200 runs of 100 tasks, two folds of 100 held-out runs: each fold is read from disk once and
    scored a batch at a time with the rules of all four learning-curve points, so no more than a
    batch of traces is alive when the scorer runs (eval used to load every run first)."""
    from trace2skill.evaluate import SCORE_BATCH

    rows = [(task, trial, trial == 1, [] if trial == 1 else ["pytest-missing"]) for task in range(100) for trial in (0, 1)]
    corpus = write_corpus(tmp_path / "runs.json", rows)
    alive = traces_alive_when_scored
    result = CliRunner().invoke(app, ["eval", str(corpus), "--folds", "2", "--json", "--set", f"state_dir={tmp_path / 'state'}"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["trajectories"], report["heldout_failures"], report["heldout_successes"]) == (200, 100, 100)
    folds = hash_folds([f"task_id:{task}" for task in range(100)], 2)
    assert [f["heldout_failures"] for f in report["folds"]] == [sum(1 for f in folds.values() if f == k) for k in (0, 1)]
    assert report["heldout_failure_coverage"] == 1.0 and report["false_alarm_rate"] == 0.0, "the pitfall flags every failure"
    batches = [-(-sum(2 for f in folds.values() if f == k) // SCORE_BATCH) for k in (0, 1)]
    assert len(alive) == sum(batches) * 4, "each batch of each fold scored with the rules of four curve points"
    assert max(alive) <= SCORE_BATCH + 1, alive
