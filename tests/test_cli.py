"""The real CLI on real trace files; the scripted model is handed in through the context object."""

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.testing import ScriptedLLM

from conftest import ROOT, init_repo
from test_graph import responder

runner = CliRunner()


def test_help_does_not_import_litellm():
    code = "import sys; from trace2skill.cli import app; from typer.testing import CliRunner; " \
           "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; " \
           "r = CliRunner().invoke(app, ['distill', '--help']); assert r.exit_code == 0; " \
           "print('litellm' in sys.modules, 'langgraph' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["False", "False"]


def test_root_shim_behaves_like_the_console_script():
    shim = subprocess.run([sys.executable, "cli.py", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert shim.returncode == 0 and "distill" in shim.stdout


def test_distill_offline_on_demo_corpus_writes_a_valid_skill(demo_traces, tmp_path):
    out = tmp_path / "skills"
    result = runner.invoke(app, ["distill", str(demo_traces), "--out", str(out), "--skill", "swe-demo", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["mode"] == "offline" and summary["traces_read"] == 40
    assert summary["outcomes"] == {"failure": 14, "success": 26, "unknown": 0}
    assert summary["rules_written"] > 0
    check = runner.invoke(app, ["validate", str(out / "swe-demo")])
    assert check.exit_code == 0, check.output


def test_corrupted_file_is_reported_and_skipped(demo_traces, tmp_path):
    broken = demo_traces / "mini-swe-agent-swebench-verified" / "trajs" / "broken__case-1"
    broken.mkdir()
    (broken / "broken__case-1.traj.json").write_text('{"trajectory_format": "mini-swe-agent-1", "messages": [')
    result = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path / "s"), "--skill", "swe-demo"])
    assert result.exit_code == 3, result.output
    assert "broken__case-1.traj.json" in result.output
    assert (tmp_path / "s" / "swe-demo" / "SKILL.md").exists()


def test_scripted_model_runs_the_llm_path(demo_traces, tmp_path):
    llm = ScriptedLLM(responder)
    traces = demo_traces / "mini-swe-agent-swebench-verified"
    result = runner.invoke(app, ["distill", str(traces), "--out", str(tmp_path / "s"), "--skill", "swe-demo", "--model", "scripted", "--json"],
                           obj={"llm_factory": lambda config: llm})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["mode"] == "llm" and summary["usage"]["calls"] == llm.count()
    assert llm.count("analyse-failure") == 14 and llm.count("analyse-success") == 26


def test_user_mistakes_are_one_line_errors_with_documented_codes(tmp_path):
    missing = runner.invoke(app, ["distill", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert missing.exit_code == 66 and "Traceback" not in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(app, ["distill", str(empty), "--out", str(tmp_path)])
    assert nothing.exit_code == 66
    bad = runner.invoke(app, ["distill", str(empty), "--fan-in", "1"])
    assert bad.exit_code == 78 and "fan_in" in bad.output
    invalid = tmp_path / "bad-skill"
    invalid.mkdir()
    (invalid / "SKILL.md").write_text("no frontmatter\n")
    assert runner.invoke(app, ["validate", str(invalid)]).exit_code == 65


def test_explain_prints_a_rules_evidence(demo_traces, tmp_path):
    out = tmp_path / "skills"
    assert runner.invoke(app, ["distill", str(demo_traces), "--out", str(out), "--skill", "swe-demo"]).exit_code == 0
    provenance = json.loads((out / "swe-demo" / "provenance.json").read_text())
    rule_id = sorted(provenance["rules"])[0]
    shown = runner.invoke(app, ["explain", str(out / "swe-demo"), rule_id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert rule_id in shown.stdout
    unknown = runner.invoke(app, ["explain", str(out / "swe-demo"), "r-doesnotexist"])
    assert unknown.exit_code != 0 and "Traceback" not in unknown.output


def test_committed_demo_skill_is_in_step_with_the_code(tmp_path):
    """The skill under skills_out/ is exactly what the README's demo command produces."""
    committed = ROOT / "skills_out"
    out = tmp_path / "skills_out"
    result = runner.invoke(app, ["distill", str(ROOT / "traces"), "--out", str(out), "--skill", DEMO_SKILL])
    assert result.exit_code == 0, result.output
    produced = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    expected = {p.relative_to(committed): p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    assert produced == expected, "regenerate with the README's demo command"


DEMO_SKILL = "swe-agent-lessons"


def test_ingest_check_strict_and_atif_round_trip(demo_traces, tmp_path):
    check = runner.invoke(app, ["ingest", str(demo_traces), "--check", "--json"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["traces"] == 40 and report["outcomes"] == {"success": 26, "failure": 14, "unknown": 0}

    (demo_traces / "junk.json").write_text("{not json")
    assert runner.invoke(app, ["ingest", str(demo_traces), "--check"]).exit_code == 0, "skips alone are not fatal"
    strict = runner.invoke(app, ["ingest", str(demo_traces), "--check", "--strict"])
    assert strict.exit_code == 65 and "junk.json" in strict.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "junk.json").write_text("{not json")
    assert runner.invoke(app, ["ingest", str(empty), "--check"]).exit_code == 66

    out = tmp_path / "all.atif.jsonl.gz"
    assert runner.invoke(app, ["ingest", str(demo_traces), "--emit", "atif", str(out)]).exit_code == 0
    again = json.loads(runner.invoke(app, ["ingest", str(out), "--json"]).stdout)
    assert again["traces"] == 40 and again["outcomes"] == report["outcomes"] and again["skipped"] == 0


def test_history_and_rollback_commands(demo_traces, tmp_path):
    repo = init_repo(tmp_path / "repo")
    trajs = demo_traces / "mini-swe-agent-swebench-verified" / "trajs"
    later = sorted(trajs.iterdir())[20:]
    parked = tmp_path / "parked"
    parked.mkdir()
    for folder in later:
        folder.rename(parked / folder.name)
    common = ["--skill", "demo", "--out", str(tmp_path / "repo" / "skills"), "--publish", "branch", "--state-dir", str(tmp_path / "state")]
    assert runner.invoke(app, ["refresh", str(demo_traces), *common]).exit_code == 0
    for folder in parked.iterdir():
        folder.rename(trajs / folder.name)
    second = runner.invoke(app, ["refresh", str(demo_traces), *common, "--json"])
    assert second.exit_code == 0, second.output
    new_version = json.loads(second.stdout)["result"]["version"]

    repo.heads["trace2skill/demo"].checkout()
    skill_dir = tmp_path / "repo" / "skills" / "demo"
    listed = runner.invoke(app, ["history", str(skill_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.stdout)] == [new_version, "1.0.0"]
    restored = runner.invoke(app, ["rollback", str(skill_dir), "1.0.0"])
    assert restored.exit_code == 0, restored.output
    assert "restored" in restored.stdout
    assert "trace2skill-version" in (skill_dir / "SKILL.md").read_text()
    missing = runner.invoke(app, ["rollback", str(skill_dir), "9.9.9"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


# --------------------------------------------------------------------------------------------
# Mistakes a first-time user makes: each is one `trace2skill: error:` line and a documented code.

TAU = ROOT / "tests" / "data" / "formats" / "tau_bench"


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("trace2skill: error:")]


def test_set_is_honoured_for_keys_that_also_have_a_flag(tmp_path):
    result = runner.invoke(app, ["distill", str(TAU), "--out", str(tmp_path / "s"), "--set", "skill.name=from-set",
                                 "--set", "consolidate.min_support=3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skill_dir"] == str(tmp_path / "s" / "from-set")
    assert (tmp_path / "s" / "from-set" / "references" / "low-support-lessons.md").is_file()
    flag_wins = runner.invoke(app, ["distill", str(TAU), "--out", str(tmp_path / "s"), "--set", "skill.name=from-set",
                                    "--skill", "from-flag", "--json"])
    assert json.loads(flag_wins.stdout)["skill_dir"].endswith("from-flag")


def test_invalid_skill_name_is_a_config_error_before_any_work(tmp_path):
    result = runner.invoke(app, ["distill", str(TAU), "--out", str(tmp_path / "s"), "--skill", "My Skill"])
    assert result.exit_code == 78, result.output
    assert len(_error_lines(result)) == 1 and "'My Skill' is not a valid skill name" in result.stderr
    assert "  - " not in result.stderr and not (tmp_path / "s").exists()


def test_out_that_is_a_file_is_refused_before_the_run(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    for out in (blocker, blocker / "deeper"):
        result = runner.invoke(app, ["distill", str(TAU), "--out", str(out)])
        assert result.exit_code == 78, result.output
        assert "Traceback" not in result.output and "is a file, not a folder" in result.stderr
    assert blocker.read_text() == "not a folder\n"


def test_validate_missing_folder_file_and_non_utf8_skill(tmp_path):
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope")])
    assert missing.exit_code == 66 and "does not exist" in missing.stderr
    (tmp_path / "SKILL.md").write_text("---\nname: x\n---\n")
    a_file = runner.invoke(app, ["validate", str(tmp_path / "SKILL.md")])
    assert a_file.exit_code == 2 and "give the folder that holds SKILL.md" in a_file.stderr
    binary = tmp_path / "bin-skill"
    binary.mkdir()
    (binary / "SKILL.md").write_bytes(b"---\nname: bin-skill\ndescription: ok\n---\n# B\n\xff\xfe\n")
    result = runner.invoke(app, ["validate", str(binary)])
    assert result.exit_code == 65, result.output
    assert "SKILL.md is not UTF-8" in result.stdout


def test_non_utf8_hand_written_skill_is_never_overwritten(tmp_path):
    skill = tmp_path / "out" / "mine"
    skill.mkdir(parents=True)
    original = b"---\nname: mine\ndescription: Mine. Use when testing.\n---\n# Mine\n- caf\xe9 rule written in Latin-1\n"
    (skill / "SKILL.md").write_bytes(original)
    result = runner.invoke(app, ["distill", str(TAU), "--out", str(tmp_path / "out"), "--skill", "mine"])
    assert result.exit_code == 65, result.output
    assert "is not UTF-8" in result.stderr and len(_error_lines(result)) == 1
    assert (skill / "SKILL.md").read_bytes() == original and sorted(p.name for p in skill.iterdir()) == ["SKILL.md"]


def test_flow_style_frontmatter_is_reported_in_one_line(tmp_path):
    skill = tmp_path / "out" / "flow"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: flow\ndescription: {a: b}\n---\n# Flow\n")
    result = runner.invoke(app, ["distill", str(TAU), "--out", str(tmp_path / "out"), "--skill", "flow"])
    assert result.exit_code == 65, result.output
    assert result.stderr.count("\n") == 1 and "flow mapping" in result.stderr and "(line 3)" in result.stderr
    check = runner.invoke(app, ["validate", str(skill)])
    assert check.exit_code == 65 and check.stdout.count("\n") == 1, check.stdout


def test_single_problem_errors_are_not_repeated_as_a_list(tmp_path):
    skill = tmp_path / "out" / "damaged"
    skill.mkdir(parents=True)
    (skill / "provenance.json").write_text("{broken")
    (skill / "SKILL.md").write_text("---\nname: damaged\ndescription: D. Use when testing.\n---\n# D\n")
    result = runner.invoke(app, ["distill", str(TAU), "--out", str(tmp_path / "out"), "--skill", "damaged"])
    assert result.exit_code == 65, result.output
    assert result.stderr.count("provenance.json is unreadable") == 1


def test_emit_into_a_file_or_a_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    under_file = runner.invoke(app, ["ingest", str(TAU), "--emit", "atif", str(blocker / "out.jsonl")])
    assert under_file.exit_code == 1 and "Traceback" not in under_file.output
    assert _error_lines(under_file) == [f"trace2skill: error: {str(blocker)!r} is a file, not a folder"]
    folder = runner.invoke(app, ["ingest", str(TAU), "--emit", "atif", str(tmp_path)])
    assert folder.exit_code == 2 and "is a folder" in folder.stderr
    assert blocker.read_text() == "x" and not list(tmp_path.glob("*.partial"))


def test_ingest_check_counts_like_distill_and_names_label_files(demo_traces, tmp_path):
    trajs = demo_traces / "mini-swe-agent-swebench-verified" / "trajs"
    first = sorted(trajs.iterdir())[0]
    shutil.copytree(first, tmp_path / "copy" / first.name)
    paths = [str(demo_traces), str(tmp_path / "copy")]
    check = json.loads(runner.invoke(app, ["ingest", *paths, "--check", "--json"]).stdout)
    distilled = json.loads(runner.invoke(app, ["distill", *paths, "--out", str(tmp_path / "s"), "--json"]).stdout)
    assert (check["traces"], check["skipped"]) == (distilled["traces_read"], len(distilled["skipped"])) == (40, 1)
    assert any(source.endswith("results_summary.json") for source in check["label_sources"])
    shown = runner.invoke(app, ["ingest", *paths, "--check"])
    assert "labels from " in shown.stdout


def test_labels_file_that_matches_nothing_is_warned_about(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,outcome\nno-such-trace,success\n")
    for command in (["ingest", str(TAU), "--check"], ["distill", str(TAU), "--out", str(tmp_path / "s")]):
        result = runner.invoke(app, [*command, "--labels", str(labels)])
        assert result.exit_code == 0, result.output
        assert "matched none of the 3 trajectories" in result.stderr
    folder = runner.invoke(app, ["ingest", str(TAU), "--labels", str(tmp_path)])
    assert folder.exit_code == 78 and "is a folder" in folder.stderr


def test_nothing_readable_says_why(tmp_path):
    forced = runner.invoke(app, ["distill", str(TAU), "--format", "codex", "--out", str(tmp_path / "s")])
    assert forced.exit_code == 66 and "first: " in forced.stderr and "retail-results.json" in forced.stderr
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["distill", str(tmp_path / "empty"), "--out", str(tmp_path / "s")])
    assert empty.exit_code == 66 and "no trajectory found" in empty.stderr


def test_distill_without_paths_reads_sources_from_the_config(tmp_path):
    (tmp_path / "trace2skill.toml").write_text(f'sources = [{str(TAU)!r}]\n[skill]\nname = "from-config"\nout = "out"\n')
    result = runner.invoke(app, ["distill", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["traces_read"] == 3 and (tmp_path / "out" / "from-config" / "SKILL.md").is_file()
    (tmp_path / "trace2skill.toml").write_text("")
    nothing = runner.invoke(app, ["distill"])
    assert nothing.exit_code == 66 and "pass PATHS or set `sources`" in nothing.stderr


def test_explain_takes_ids_in_any_case_and_survives_binary_provenance(tmp_path):
    out = tmp_path / "s"
    assert runner.invoke(app, ["distill", str(TAU), "--out", str(out), "--skill", "tau"]).exit_code == 0
    rule_id = sorted(json.loads((out / "tau" / "provenance.json").read_text())["rules"])[0]
    assert runner.invoke(app, ["explain", str(out / "tau"), f" {rule_id.upper()} ", "--json"]).exit_code == 0
    (out / "tau" / "provenance.json").write_bytes(b"\xff\xfe")
    broken = runner.invoke(app, ["explain", str(out / "tau"), rule_id])
    assert broken.exit_code == 65 and "Traceback" not in broken.output and len(_error_lines(broken)) == 1


def test_history_works_where_the_skill_folder_is_only_on_the_bot_branch(demo_traces, tmp_path):
    repo = init_repo(tmp_path / "repo")
    common = ["--skill", "demo", "--out", str(tmp_path / "repo" / "skills"), "--state-dir", str(tmp_path / "state")]
    assert runner.invoke(app, ["refresh", str(TAU), *common, "--publish", "branch"]).exit_code == 0
    skill_dir = tmp_path / "repo" / "skills" / "demo"
    assert repo.active_branch.name == "main" and not skill_dir.exists()
    listed = runner.invoke(app, ["history", str(skill_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.stdout)] == ["1.0.0"]
    none_yet = runner.invoke(app, ["history", str(tmp_path / "repo" / "skills" / "other")])
    assert none_yet.exit_code == 0 and "no tagged versions yet" in none_yet.stdout
    trailers = repo.commit("trace2skill/demo").message
    assert "Trace2Skill-Cost: n/a (offline)" in trailers


def test_refresh_lists_what_it_skipped(tmp_path):
    traces = tmp_path / "traces"
    shutil.copytree(TAU, traces)
    (traces / "junk.json").write_text("{not json")
    result = runner.invoke(app, ["refresh", str(traces), "--skill", "tau", "--out", str(tmp_path / "s"),
                                 "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 3, result.output
    assert "skipped: " in result.stdout and "junk.json" in result.stdout


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_sigterm_drains_a_model_run_and_the_same_command_resumes_it(demo_traces, tmp_path, executor):
    """On Ray the analysts run in worker processes: the drain stops them through the run's
    budget actor, and what came back before it is journaled on the driver."""
    if executor == "ray":
        pytest.importorskip("ray", reason="Ray is not installed; pip install 'trace2skill[ray]' to test the Ray executor")
    import os
    import signal
    import sqlite3
    import time

    answers = tmp_path / "answers.json"
    lesson = {"title": "Run one test file first", "rule": "Run the narrowest test.", "when": "When testing.", "kind": "procedure",
              "subject": "pytest", "polarity": "do", "steps": [1], "quote": ""}
    answers.write_text(json.dumps({"_delay": 0.1, "analyse-failure": {"lessons": [lesson]}, "analyse-success": {"lessons": [lesson]},
                                   "merge": {"groups": [], "contradictions": []}}))
    command = [sys.executable, str(ROOT / "cli.py"), "distill", str(demo_traces), "--out", str(tmp_path / "out"), "--skill", "demo",
               "--model", f"scripted:{answers}", "--concurrency", "1", "--json", "--set", f"state_dir={tmp_path / 'state'}",
               "--executor", executor, "--workers", "2"]
    env = {**os.environ, "CI": "1"}
    child = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    journal = tmp_path / "state" / "checkpoints.journal.sqlite"
    deadline = time.monotonic() + 180  # starting Ray takes 6-20 s here
    while True:
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        try:
            with sqlite3.connect(journal) as db:
                if db.execute("SELECT COUNT(*) FROM analyses").fetchone()[0] >= 3:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 75, stderr
    assert "drained" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "demo").exists()

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["analysed"] == 40
    assert summary["usage"]["calls"] <= 40 - 3 + 11, "analyses finished before SIGTERM are not repeated"


def test_the_scripted_model_is_chosen_by_name_and_needs_its_answers_file(demo_traces, tmp_path):
    bare = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path / "o"), "--model", "scripted"])
    assert bare.exit_code == 78 and "scripted:PATH.json" in bare.output
    missing = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path / "o"), "--model", f"scripted:{tmp_path / 'nope.json'}"])
    assert missing.exit_code == 78
