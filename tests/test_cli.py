"""The real CLI on real trace files; the scripted model is handed in through the context object."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.testing import ScriptedLLM

from conftest import ROOT
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
    import git

    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Human").set_value("user", "email", "human@example.com")
    (tmp_path / "repo" / "README.md").write_text("skills\n")
    repo.index.add(["README.md"])
    repo.index.commit("init")
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
