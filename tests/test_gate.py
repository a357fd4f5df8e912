"""The gate before a skill ships: the user's benchmark on real git repositories, and the held-out comparison.

The benchmark is a real script run as a subprocess. It scores a skill folder by its version
(`trace2skill-version` in SKILL.md, so a candidate always differs from the current skill) and
prints 0 for "no skill"; `--sign -1` makes it prefer older skills, i.e. score the candidate lower.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.gate import without_rule
from trace2skill.state import load_state

from test_evaluate import write_corpus
from test_refresh import ALL_IDS, SKILL, add_traces, bot_branch, world  # noqa: F401  (world is a fixture)

BENCH = r'''
import os, re, sys
from pathlib import Path
sign = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
folder = os.environ["TRACE2SKILL_SKILL_DIR"]
with open(os.environ["BENCH_LOG"], "a") as log:
    log.write((folder or "<none>") + "\n")
if not folder:
    print("starting benchmark")
    print(0)
    raise SystemExit
text = (Path(folder) / "SKILL.md").read_text()
major, minor, patch = map(int, re.search(r'trace2skill-version: "?(\d+)\.(\d+)\.(\d+)', text).groups())
print("ran 3 tasks")
print(sign * (major * 100 + minor * 10 + patch))
'''


def bench(tmp_path: Path, monkeypatch, sign: int) -> tuple[str, Path]:
    script = tmp_path / "bench.py"
    script.write_text(BENCH)
    log = tmp_path / "bench.log"
    monkeypatch.setenv("BENCH_LOG", str(log))
    return f'"{sys.executable}" "{script}" {sign}', log


def refresh_args(world, *extra):
    return ["refresh", str(world["traces"]), "--skill", SKILL, "--out", str(world["root"] / "skills"),
            "--publish", "branch", "--state-dir", str(world["state"]), *extra]


def test_benchmark_scoring_the_candidate_higher_publishes_with_both_scores_in_the_pr_body(world, tmp_path, monkeypatch):
    add_traces(world, ALL_IDS[:8])
    command, log = bench(tmp_path, monkeypatch, 1)
    body = tmp_path / "pr.md"
    result = CliRunner().invoke(app, refresh_args(world, "--gate-cmd", command, "--pr-body", str(body)))
    assert result.exit_code == 0, result.output
    assert "gate: 2 benchmark runs" in result.stderr
    runs = log.read_text().splitlines()
    assert runs[0] == "<none>" and "/gate/" in runs[1] and len(runs) == 2, "no skill yet, then the candidate"
    text = body.read_text()
    assert "### Validation gate" in text and "| Benchmark score | 0 | 100 |" in text and "**passed**" in text
    assert f"`{command}`" in text
    provenance = json.loads(world["repo"].git.show(f"trace2skill/{SKILL}:skills/{SKILL}/provenance.json"))
    assert provenance["gate"]["accepted"] and provenance["gate"]["current"] == 0 and provenance["gate"]["candidate"] == 100
    assert not (world["state"] / "gate").exists() or not any((world["state"] / "gate").iterdir()), "nothing kept when accepted"


def test_benchmark_scoring_the_candidate_lower_publishes_nothing_and_exits_gated(world, tmp_path, monkeypatch):
    add_traces(world, ALL_IDS[:8])
    first = CliRunner().invoke(app, refresh_args(world))
    assert first.exit_code == 0, first.output
    head, tags = bot_branch(world).commit, sorted(t.name for t in world["repo"].tags)
    consumed = load_state(world["state"]).skill(SKILL).trace_digests

    add_traces(world, ALL_IDS[8:16])
    command, log = bench(tmp_path, monkeypatch, -1)
    result = CliRunner().invoke(app, refresh_args(world, "--gate-cmd", command))
    assert result.exit_code == 4, result.output
    assert "gated" in result.stdout and "not published" in result.stdout
    assert "-100 (current)" in result.stdout, "both scores are in the summary"
    assert bot_branch(world).commit == head and sorted(t.name for t in world["repo"].tags) == tags
    assert load_state(world["state"]).skill(SKILL).trace_digests == consumed, "the new trajectories stay unconsumed"
    assert world["repo"].active_branch.name == "main" and not world["repo"].is_dirty(untracked_files=True)
    kept = list((world["state"] / "gate").glob(f"*/{SKILL}/provenance.json"))
    assert len(kept) == 1
    decision = json.loads(kept[0].read_text())["gate"]
    assert decision["accepted"] is False and decision["current"] == -100 and decision["candidate"] < -100
    assert decision["command"] == command


def test_ablation_quotes_its_runs_and_marks_rules_without_effect(world, tmp_path, monkeypatch):
    add_traces(world, ALL_IDS[:8])
    command, log = bench(tmp_path, monkeypatch, 1)
    body = tmp_path / "pr.md"
    result = CliRunner().invoke(app, refresh_args(world, "--gate-cmd", command, "--ablate", "2", "--pr-body", str(body)))
    assert result.exit_code == 0, result.output
    assert "gate: 2 benchmark runs (current skill, candidate) + up to 2 ablation run(s)" in result.stderr
    assert len(log.read_text().splitlines()) == 4
    text = body.read_text()
    # the benchmark reads only the version, so dropping a rule changes nothing: every ablated rule is marked
    assert text.count("no or negative effect") == 2 and "| +0 |" in text


def test_without_rule_drops_exactly_that_bullet():
    files = {"SKILL.md": "- a <!-- rule:r-1 -->\n- b <!-- rule:r-2 -->\n", "provenance.json": "{}"}
    assert without_rule(files, "r-1")["SKILL.md"] == "- b <!-- rule:r-2 -->\n"
    assert without_rule(files, "r-1")["provenance.json"] == "{}"


# --------------------------------------------------------------------------------------------
# Held-out gate on `distill`


def batch(first_task: int, tasks: int, success_kinds: list[str], failure_kinds: list[str]):
    """`tasks` tasks, two runs each: trial 0 fails with `failure_kinds`, trial 1 succeeds with `success_kinds`."""
    return [(t, trial, trial == 1, success_kinds if trial == 1 else failure_kinds)
            for t in range(first_task, first_task + tasks) for trial in (0, 1)]


def distill_args(tmp_path, *paths, gate=True):
    return ["distill", *map(str, paths), "--out", str(tmp_path / "skills"), "--skill", "demo",
            *(["--gate", "heldout"] if gate else []), "--json"]


def test_heldout_gate_refuses_new_trajectories_that_make_the_skill_worse(tmp_path):
    old = write_corpus(tmp_path / "in" / "old.json", batch(0, 6, [], ["pytest-missing"]))
    first = CliRunner().invoke(app, distill_args(tmp_path, old, gate=False))
    assert first.exit_code == 0, first.output
    skill = tmp_path / "skills" / "demo"
    before = {p.name: p.read_bytes() for p in skill.iterdir() if p.is_file()}

    # New tasks: failures still hit the known pitfall, but successful runs now also hit a second
    # one (a missing data file), so a rule learned from it flags successful runs it never saw.
    new = write_corpus(tmp_path / "in" / "new.json", batch(100, 8, ["file"], ["pytest-missing", "file"]))
    result = CliRunner().invoke(app, distill_args(tmp_path, old, new))
    assert result.exit_code == 4, result.output
    gate = json.loads(result.stdout)["gate"]
    assert gate["accepted"] is False and "false-alarm rate rises from 0.0% to 100.0%" in gate["reason"]
    assert gate["current"] == gate["candidate"] == 1.0, "both cover every held-out failure"
    assert gate["heldout"]["trajectories"] == 16, "only trajectories the current skill has not seen are held out"
    assert {p.name: p.read_bytes() for p in skill.iterdir() if p.is_file()} == before, "the skill is untouched"
    kept = Path(gate["kept_at"])
    assert (kept / "SKILL.md").is_file() and kept.is_relative_to((tmp_path / ".trace2skill").resolve())


def test_heldout_gate_passes_new_trajectories_that_make_the_skill_better(tmp_path):
    old = write_corpus(tmp_path / "in" / "old.json", batch(0, 6, [], ["pytest-missing"]))
    assert CliRunner().invoke(app, distill_args(tmp_path, old, gate=False)).exit_code == 0
    new = write_corpus(tmp_path / "in" / "new.json", batch(100, 8, [], ["file"]))
    result = CliRunner().invoke(app, distill_args(tmp_path, old, new))
    assert result.exit_code == 0, result.output
    gate = json.loads(result.stdout)["gate"]
    assert gate["accepted"] and gate["current"] == 0.0 and gate["candidate"] == 1.0
    provenance = json.loads((tmp_path / "skills" / "demo" / "provenance.json").read_text())
    assert provenance["gate"]["candidate"] == 1.0
    again = CliRunner().invoke(app, distill_args(tmp_path, old, new, gate=False))
    assert again.exit_code == 0 and json.loads(again.stdout)["changed"] is False, "the gate record is not a change"


def test_gate_flags_are_checked_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["distill", str(tmp_path), "--ablate", "2"])
    assert result.exit_code == 78 and "--gate-cmd" in result.stderr


def test_heldout_gate_on_refresh_puts_both_figures_in_the_pr_body(world, tmp_path):
    add_traces(world, ALL_IDS[:8])
    assert CliRunner().invoke(app, refresh_args(world)).exit_code == 0
    add_traces(world, ALL_IDS[8:20])
    body = tmp_path / "pr.md"
    result = CliRunner().invoke(app, refresh_args(world, "--gate", "heldout", "--set", "gate.tolerance=1",
                                                  "--pr-body", str(body)))
    assert result.exit_code == 0, result.output
    assert "heldout gate passed" in result.stdout
    text = body.read_text()
    assert "| Held-out failure coverage |" in text and "| False-alarm rate |" in text and "tolerance 1" in text
    provenance = json.loads(world["repo"].git.show(f"trace2skill/{SKILL}:skills/{SKILL}/provenance.json"))
    assert provenance["gate"]["kind"] == "heldout" and provenance["gate"]["heldout"]["trajectories"] == 12


def test_the_heldout_gate_holds_a_batch_of_trajectories_at_a_time_not_the_corpus(tmp_path, traces_alive_when_scored):
    """200 new trajectories (100 tasks, a failure and a success each) held out: every fold's
    trajectories are read again from disk and scored a batch at a time, with the current skill's
    rules and the fold's candidate's, so no more than a batch of traces is alive when the scorer
    runs (the gate used to load every trajectory of the run into memory first)."""
    from trace2skill.evaluate import SCORE_BATCH

    old = write_corpus(tmp_path / "in" / "old.json", batch(0, 6, [], ["pytest-missing"]))
    assert CliRunner().invoke(app, distill_args(tmp_path, old, gate=False)).exit_code == 0
    new = write_corpus(tmp_path / "in" / "new.json", batch(100, 100, [], ["file"]))
    alive = traces_alive_when_scored
    result = CliRunner().invoke(app, [*distill_args(tmp_path, old, new), "--set", "gate.folds=2"])
    assert result.exit_code == 0, result.output
    gate = json.loads(result.stdout)["gate"]
    assert gate["heldout"] == {"trajectories": 200, "folds": 2, "failures": 100, "successes": 100}
    assert len(alive) == 2 * 2 * 2, "two folds of 100, each in two batches, each scored with two rule sets"
    assert max(alive) <= SCORE_BATCH + 1, alive
