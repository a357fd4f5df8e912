"""The command line as a new user meets it, through the real CLI: conventions, install, validate,
explain, the HTML report (in a real headless Chromium), init, doctor, --dry-run and the docs.

Expected figures come from the fixture files themselves (provenance.json read with plain json,
files counted on disk), never from the code under test.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from trace2skill.cli import RUN_FLAGS, RunFlags, app

from conftest import ROOT, init_repo

runner = CliRunner()
SKILLS = ROOT / "tests" / "data" / "skills"
COMMANDS = ("distill", "refresh", "validate", "explain", "ingest", "install", "init", "doctor", "history", "rollback")


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, **kwargs)


def _distill(traces, out, *extra):
    result = runner.invoke(app, ["distill", str(traces), "--out", str(out), "--skill", "swe-demo", *extra])
    assert result.exit_code == 0, result.output
    return result


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------
# 1. Conventions


def test_version_short_help_completion_and_every_help_has_defaults_and_an_example():
    from trace2skill import __version__

    assert _cli("--version").stdout.strip() == f"trace2skill {__version__}"
    assert _cli("-V").returncode == 0
    for command in COMMANDS:
        shown = _cli(command, "-h")
        assert shown.returncode == 0, shown.stderr
        assert "Example" in shown.stdout, command
    distill_help = _cli("distill", "-h").stdout
    assert "[default: 4, from analyse.concurrency]" in distill_help
    assert "[tool.trace2skill]" in distill_help  # not eaten as rich markup
    completion = _cli("--show-completion", "bash")
    assert completion.returncode == 0 and "_TRACE2SKILL_COMPLETE" in completion.stdout


def test_distill_and_refresh_share_one_flag_set():
    commands = typer.main.get_command(app).commands
    for name in ("distill", "refresh"):
        params = {p.name for p in commands[name].params}
        assert set(RUN_FLAGS) <= params, (name, set(RUN_FLAGS) - params)
    refresh_flags = {opt for p in commands["refresh"].params for opt in getattr(p, "opts", [])}
    for flag in ("--budget", "--max-calls", "--dry-run", "--yes", "--api-base", "--concurrency", "--labels", "--format", "--report"):
        assert flag in refresh_flags



def test_every_shared_flag_names_a_real_config_key():
    """A `RunFlags` field that sets a config key names one that exists, and setting the flag sets
    that key (so a new shared flag with a mistyped key fails here, not at a user's run)."""
    from dataclasses import fields

    from trace2skill.onboard import config_keys

    known = {key.dotted for key in config_keys()}
    keyed = {f.name: f.metadata["config"] for f in fields(RunFlags) if "config" in f.metadata}
    assert {"out", "model", "concurrency", "budget", "state_dir"} <= set(keyed)
    assert set(keyed.values()) <= known, set(keyed.values()) - known
    overrides = RunFlags(concurrency=3, out=Path("x")).overrides()
    assert overrides["analyse.concurrency"] == 3 and overrides["skill.out"] == Path("x")
    assert overrides["llm.model"] is None

def test_quiet_leaves_only_results(demo_traces, tmp_path):
    loud = _distill(demo_traces, tmp_path / "a")
    assert "report: " in loud.stderr
    assert "fidelity:" in loud.stderr
    quiet = runner.invoke(app, ["-q", "distill", str(demo_traces), "--out", str(tmp_path / "b"), "--skill", "swe-demo"])
    assert quiet.exit_code == 0 and "rules written" in quiet.stdout
    assert all(line.startswith("warning: ") for line in quiet.stderr.splitlines())  # warnings stay: no silent loss
    also = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path / "c"), "--skill", "swe-demo", "-q"])
    assert also.exit_code == 0 and also.stderr == quiet.stderr


def test_usage_errors_exit_2_and_bad_config_78(tmp_path):
    assert runner.invoke(app, ["distill", "--no-such-flag"]).exit_code == 2
    assert runner.invoke(app, ["explain", str(tmp_path)]).exit_code == 2  # neither RULE nor --trace
    assert runner.invoke(app, ["refresh", str(tmp_path), "--concurrency", "0"]).exit_code == 78


def _label_corpus(tmp_path: Path, count: int) -> Path:
    """`count` demo trajectories laid out as the SWE-bench run is: trajs/ID/ID.traj.json and
    logs/ID/report.json, one label file per trajectory."""
    demo = ROOT / "traces" / "mini-swe-agent-swebench-verified" / "trajs"
    corpus = tmp_path / "corpus"
    for folder in sorted(p for p in demo.iterdir() if p.is_dir())[:count]:
        shutil.copytree(folder, corpus / "trajs" / folder.name)
        report = corpus / "logs" / folder.name / "report.json"
        report.parent.mkdir(parents=True)
        report.write_text(json.dumps({folder.name: {"resolved": True, "patch_successfully_applied": True}}))
    return corpus


def test_ingest_check_summarises_label_files(tmp_path):
    corpus = _label_corpus(tmp_path, 5)
    label_files = len(list(corpus.glob("logs/*/report.json")))
    result = runner.invoke(app, ["ingest", str(corpus), "--check"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("labels from") == 1
    assert f"labels from {label_files} files" in result.stdout
    verbose = runner.invoke(app, ["ingest", str(corpus), "--check", "-v"])
    assert verbose.stdout.count("labels from") == label_files


# ------------------------------------------------------------------------------------------
# 2. install and layouts


def test_install_into_claude_and_agents_project_folders(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    skill = SKILLS / "brand-guidelines"
    claude = runner.invoke(app, ["install", str(skill), "--agent", "claude", "--project", str(project)])
    assert claude.exit_code == 0, claude.output
    assert _tree(project / ".claude" / "skills" / "brand-guidelines") == _tree(skill)
    for agent in ("codex", "gemini", "cursor", "copilot", "agents"):
        done = runner.invoke(app, ["install", str(skill), "--agent", agent, "--project", str(project)])
        assert done.exit_code == 0, done.output
    assert _tree(project / ".agents" / "skills" / "brand-guidelines") == _tree(skill)
    again = runner.invoke(app, ["install", str(skill), "--agent", "claude", "--project", str(project)])
    assert again.exit_code == 0 and "unchanged" in again.stdout
    assert runner.invoke(app, ["install", str(tmp_path / "missing"), "--project", str(project)]).exit_code == 66
    invalid = tmp_path / "Bad-Name"
    invalid.mkdir()
    (invalid / "SKILL.md").write_text("---\nname: other\ndescription: d\n---\n# Body\n")
    assert runner.invoke(app, ["install", str(invalid), "--project", str(project)]).exit_code == 65
    assert not (project / ".claude" / "skills" / "Bad-Name").exists()


def test_install_refuses_a_different_skill_of_the_same_name_unless_forced(tmp_path):
    project = tmp_path / "project"
    other = tmp_path / "elsewhere" / "brand-guidelines"
    other.mkdir(parents=True)
    (other / "SKILL.md").write_text("---\nname: brand-guidelines\ndescription: someone else's\n---\n# Other\n")
    assert runner.invoke(app, ["install", str(other), "--project", str(project)]).exit_code == 0
    refused = runner.invoke(app, ["install", str(SKILLS / "brand-guidelines"), "--project", str(project)])
    assert refused.exit_code == 1 and "--force" in refused.stderr
    target = project / ".claude" / "skills" / "brand-guidelines"
    assert (target / "SKILL.md").read_text().endswith("# Other\n")
    forced = runner.invoke(app, ["install", str(SKILLS / "brand-guidelines"), "--project", str(project), "--force"])
    assert forced.exit_code == 0 and _tree(target) == _tree(SKILLS / "brand-guidelines")


def test_install_user_level_and_link(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    source = tmp_path / "src" / "brand-guidelines"
    shutil.copytree(SKILLS / "brand-guidelines", source)
    linked = runner.invoke(app, ["install", str(source), "--user", "--link"])
    assert linked.exit_code == 0, linked.output
    target = tmp_path / "home" / ".claude" / "skills" / "brand-guidelines"
    assert target.is_symlink() and target.resolve() == source.resolve()
    copied = runner.invoke(app, ["install", str(source), "--user", "--agent", "copilot"])
    assert copied.exit_code == 0 and (tmp_path / "home" / ".copilot" / "skills" / "brand-guidelines" / "SKILL.md").is_file()
    # replacing a link removes the link, never what it points to
    assert runner.invoke(app, ["install", str(source), "--user"]).exit_code == 1
    assert runner.invoke(app, ["install", str(source), "--user", "--force"]).exit_code == 0
    assert not target.is_symlink() and (source / "SKILL.md").is_file()


def test_layout_claude_with_default_out_lands_where_claude_code_looks(demo_traces, tmp_path):
    result = runner.invoke(app, ["distill", str(demo_traces), "--skill", "swe-demo", "--layout", "claude"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".claude" / "skills" / "swe-demo" / "SKILL.md").is_file()  # the test runs in tmp_path
    assert not (tmp_path / "skills_out").exists()


# ------------------------------------------------------------------------------------------
# 3. validate


def test_validate_warns_on_recommended_limits_and_counts_backtick_citations(tmp_path):
    skill = SKILLS / "skill-creator"
    body = (skill / "SKILL.md").read_text().split("---", 2)[2]
    assert "`references/schemas.md`" in body and "](references/schemas.md)" not in body
    schema_lines = len((skill / "references" / "schemas.md").read_text().splitlines())
    assert schema_lines > 300
    result = runner.invoke(app, ["validate", str(skill), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == [] and report["valid"]
    assert not any("orphan" in w for w in report["warnings"])
    assert any("tokens" in w for w in report["warnings"]) and any("table of contents" in w for w in report["warnings"])
    strict = runner.invoke(app, ["validate", str(skill), "--strict"])
    assert strict.exit_code == 65 and strict.stdout.count("error:") == len(report["warnings"])
    plain = runner.invoke(app, ["validate", str(SKILLS / "brand-guidelines")])
    assert plain.exit_code == 0 and plain.stdout.strip().endswith(": valid")


def test_validate_spec_violations_are_errors(tmp_path):
    skill = tmp_path / "long-description"
    skill.mkdir()
    (skill / "SKILL.md").write_text(f"---\nname: long-description\ndescription: {'x' * 1100}\n---\n# Body\n")
    result = runner.invoke(app, ["validate", str(skill)])
    assert result.exit_code == 65 and "1024" in result.stdout
    orphan = tmp_path / "orphan"
    (orphan / "references").mkdir(parents=True)
    (orphan / "SKILL.md").write_text("---\nname: orphan\ndescription: d\n---\n# Body\n\nSee [x](missing.md).\n")
    (orphan / "references" / "notes.md").write_text("# Notes\n")
    broken = runner.invoke(app, ["validate", str(orphan), "--json"])
    found = json.loads(broken.stdout)
    assert broken.exit_code == 65 and any("does not resolve" in e for e in found["errors"])
    assert any("orphan" in w for w in found["warnings"])


# ------------------------------------------------------------------------------------------
# 4. explain


def test_explain_shows_evidence_first_with_paths_and_steps_from_one(demo_traces, tmp_path):
    _distill(demo_traces, tmp_path / "s")
    skill_dir = tmp_path / "s" / "swe-demo"
    provenance = json.loads((skill_dir / "provenance.json").read_text())
    rid, record = sorted(provenance["rules"].items())[0]
    result = runner.invoke(app, ["explain", str(skill_dir), rid])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    first_evidence = next(i for i, line in enumerate(lines) if line.strip().startswith("1. "))
    assert first_evidence < next(i for i, line in enumerate(lines) if line.startswith("rule:"))
    evidence = record["evidence"][0]
    expected = ", ".join(str(step + 1) for step in evidence["steps"])
    assert f"1. {evidence['trace_id']} ({evidence['outcome']}), step {expected}" in result.stdout
    assert f"{skill_dir}/{record['file']} > {record['section']}" in result.stdout
    assert not re.search(r"\bL-[0-9a-f]{12}\b", result.stdout)
    verbose = runner.invoke(app, ["explain", str(skill_dir), rid, "-v"])
    assert all(lesson in verbose.stdout for lesson in record["lesson_ids"])


def test_explain_trace_lists_the_rules_a_trajectory_supports(demo_traces, tmp_path):
    _distill(demo_traces, tmp_path / "s")
    skill_dir = tmp_path / "s" / "swe-demo"
    provenance = json.loads((skill_dir / "provenance.json").read_text())
    trace_id = "astropy__astropy-13453"
    expected = {rid for table in ("rules", "withheld") for rid, rec in provenance[table].items()
                if any(e["trace_id"] == trace_id for e in rec["evidence"])}
    assert expected
    result = runner.invoke(app, ["explain", str(skill_dir), "--trace", trace_id, "--json"])
    assert result.exit_code == 0, result.output
    assert {row["id"] for row in json.loads(result.stdout)["rules"]} == expected
    missing = runner.invoke(app, ["explain", str(skill_dir), "--trace", "no-such-trace"])
    assert missing.exit_code == 66


# ------------------------------------------------------------------------------------------
# 5. The HTML report, in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_report_renders_in_headless_chromium_with_every_rule_and_working_anchors(demo_traces, tmp_path):
    explicit = tmp_path / "report.html"
    _distill(demo_traces, tmp_path / "s", "--report", str(explicit), "--min-support", "2")
    provenance = json.loads((tmp_path / "s" / "swe-demo" / "provenance.json").read_text())
    kept = list((tmp_path / ".trace2skill" / "reports").glob("swe-demo-run-*.html"))
    assert len(kept) == 1 and kept[0].read_bytes() == explicit.read_bytes()
    html = explicit.read_text()
    assert not re.search(r"<script|<link|@import|src=|url\(|https?://", html)  # self-contained, no network

    dom = _chromium(explicit, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    ids = set(re.findall(r'\sid="([^"]+)"', rendered))
    for table in ("rules", "withheld"):
        for rid, record in provenance[table].items():
            assert rid in ids, rid
            title = record["title"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            assert title in rendered, title
    anchors = set(re.findall(r'href="#([^"]+)"', rendered))
    assert anchors and anchors <= ids, anchors - ids
    assert len(re.findall(r'<div class="rule" id="r-', rendered)) == len(provenance["rules"]) + len(provenance["withheld"])

    shot = tmp_path / "shot.png"
    taken = _chromium(explicit, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=412,900")
    assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_report_has_a_slot_for_held_out_figures_and_the_learning_curve(demo_traces, tmp_path):
    from trace2skill.html_report import render_report, report_context
    from trace2skill.types import RunResult

    result = _distill(demo_traces, tmp_path / "s", "--json")
    run = RunResult.model_validate({k: v for k, v in json.loads(result.stdout).items() if k != "dry_run"})
    context = report_context(run, (tmp_path / "s" / "swe-demo" / "provenance.json").read_text())
    without = render_report(context)
    assert "No held-out evaluation" in without
    with_eval = render_report(context, {"figures": [{"label": "resolved with skill", "value": "0.42"}],
                                        "curve": [{"x": 10, "y": 0.3}, {"x": 20, "y": 0.4}], "x_label": "traces"})
    assert "resolved with skill" in with_eval and "<polyline" in with_eval and "No held-out" not in with_eval


# ------------------------------------------------------------------------------------------
# 6. init and doctor


def test_init_writes_every_config_key_and_offers_the_trace_folders_found(tmp_path, monkeypatch):
    from trace2skill.config import Config, load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".claude" / "projects").mkdir(parents=True)
    (tmp_path / "traces").mkdir()
    result = runner.invoke(app, ["init", "--yes", "--skill", "my-lessons"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "trace2skill.toml").read_text()
    data = tomllib.loads(text)
    assert sorted(data["sources"]) == sorted([str((tmp_path / "traces").resolve()),
                                              str((tmp_path / "home" / ".claude" / "projects").resolve())])
    assert data["skill"]["name"] == "my-lessons"

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                yield from keys(field.annotation, f"{name}.")
            else:
                yield prefix + name

    for dotted in keys(Config):
        assert re.search(rf"^(# )?{re.escape(dotted.rsplit('.', 1)[-1])} = ", text, re.M), dotted
    config = load_config(tmp_path / "trace2skill.toml")
    assert config.skill.name == "my-lessons" and config.llm.model == Config().llm.model
    assert runner.invoke(app, ["init"]).exit_code == 1  # never overwrites without --force
    (tmp_path / "trace2skill.toml").write_text("[llm]\nno_such_key = 1\n")
    assert runner.invoke(app, ["init", "--skill", "Bad Name", "--force"]).exit_code == 78
    assert runner.invoke(app, ["init", "--force", "--source", "traces"]).exit_code == 0  # replaces a broken file
    assert tomllib.loads((tmp_path / "trace2skill.toml").read_text())["sources"] == ["traces"]


def test_doctor_offline_scripted_and_what_to_fix(tmp_path, monkeypatch):
    ok = runner.invoke(app, ["doctor"])
    assert ok.exit_code == 0 and "ready" in ok.stdout and "offline analyst" in ok.stdout
    script = tmp_path / "answers.json"
    script.write_text(json.dumps({"doctor": {"ok": True}}))
    scripted = runner.invoke(app, ["doctor", "--model", f"scripted:{script}", "--json"])
    assert scripted.exit_code == 0, scripted.output
    model_check = next(c for c in json.loads(scripted.stdout) if c["name"] == "model")
    assert model_check["status"] == "ok" and "answered one call" in model_check["detail"]
    script.write_text(json.dumps({"merge": {}}))
    unanswered = runner.invoke(app, ["doctor", "--model", f"scripted:{script}"])
    assert unanswered.exit_code == 1 and "fix:" in unanswered.stdout
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    github = runner.invoke(app, ["doctor", "--publish", "github"])
    assert github.exit_code == 1 and "GITHUB_TOKEN" in github.stdout
    bad = runner.invoke(app, ["doctor", "--set", "analyse.concurrency=0"])
    assert bad.exit_code == 78


# ------------------------------------------------------------------------------------------
# 7. --dry-run


def test_dry_run_prints_the_diff_of_every_file_it_would_change_and_writes_nothing(demo_traces, tmp_path):
    _distill(demo_traces, tmp_path / "s")
    before = _tree(tmp_path)
    preview = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path / "s"), "--skill", "swe-demo",
                                  "--min-support", "3", "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert _tree(tmp_path) == before
    previewed = set(re.findall(r"^\+\+\+ b/(\S+)$", preview.stdout, re.M))
    counts = re.search(r"would change (\d+) file\(s\), \+(\d+) ~(\d+) -(\d+) rules", preview.stdout)
    assert counts and int(counts.group(1)) == len(previewed)
    _distill(demo_traces, tmp_path / "s", "--min-support", "3")
    after = _tree(tmp_path / "s" / "swe-demo")
    old = {k: v for k, v in before.items() if k.startswith("s/swe-demo/")}
    changed = {name for name in after if old.get(f"s/swe-demo/{name}") != after[name]}
    assert previewed == changed
    provenance_before = json.loads(old["s/swe-demo/provenance.json"])
    provenance_after = json.loads(after["provenance.json"])
    added = set(provenance_after["rules"]) - set(provenance_before["rules"])
    removed = set(provenance_before["rules"]) - set(provenance_after["rules"])
    assert (int(counts.group(2)), int(counts.group(4))) == (len(added), len(removed))


def test_refresh_dry_run_writes_no_state_and_refresh_names_branch_and_remote(tmp_path):
    traces = ROOT / "tests" / "data" / "formats" / "tau_bench"
    repo = init_repo(tmp_path / "repo")
    common = ["--skill", "demo", "--out", str(tmp_path / "repo" / "skills"), "--state-dir", str(tmp_path / "state")]
    preview = runner.invoke(app, ["refresh", str(traces), *common, "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert "+++ b/SKILL.md" in preview.stdout and not (tmp_path / "state").exists()
    assert not (tmp_path / "repo" / "skills").exists()
    done = runner.invoke(app, ["refresh", str(traces), *common, "--publish", "branch", "--budget", "1", "--yes"])
    assert done.exit_code == 0, done.output
    assert "on branch trace2skill/demo" in done.stdout and "not pushed (no remote)" in done.stdout
    assert repo.commit("trace2skill/demo").hexsha[:12] in done.stdout
    assert list((tmp_path / "state" / "reports").glob("demo-run-*.html"))


# ------------------------------------------------------------------------------------------
# 8. Docs match the code


def test_configuration_reference_is_generated_from_the_model_and_current():
    from trace2skill.onboard import config_keys, config_reference

    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == config_reference(), "regenerate: python -m trace2skill.onboard > docs/configuration.md"
    for key in config_keys():
        assert f"`{key.dotted}`" in written


def test_docs_install_from_a_clone_and_name_real_commands():
    docs = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert not re.search(r"pip install trace2skill\b", docs)  # not on the package index under that name
    commands = set(typer.main.get_command(app).commands)
    code = "\n".join(re.findall(r"```.*?```", docs, re.S) + re.findall(r"`[^`\n]+`", docs))
    used = set(re.findall(r"(?:^[ \t]*(?:- run: )?|`|/bin/|&& )trace2skill ([a-z]+)\b", code, re.M))
    assert {"distill", "refresh", "install", "init", "doctor"} <= used
    assert used <= commands, used - commands


def test_the_state_report_is_never_written_through_a_symlink(demo_traces, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "reports").symlink_to(elsewhere, target_is_directory=True)
    result = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path / "s"), "--skill", "swe-demo",
                                 "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert "could not write the report" in result.stderr and list(elsewhere.iterdir()) == []


def test_refresh_with_a_model_quotes_first_and_reports_calls_per_stage(demo_traces, tmp_path):
    from test_graph import responder
    from trace2skill.testing import ScriptedLLM

    llm = ScriptedLLM(responder)
    files = len(list(demo_traces.rglob("*.traj.json")))
    result = runner.invoke(app, ["refresh", str(demo_traces), "--skill", "swe-demo", "--out", str(tmp_path / "s"),
                                 "--state-dir", str(tmp_path / "state"), "--model", "scripted", "--max-calls", "500"],
                           obj={"llm_factory": lambda config: llm})
    assert result.exit_code == 0, result.output
    assert f"quote: analyse: {files} call(s)" in result.stderr
    analysed = llm.count("analyse-failure") + llm.count("analyse-success")
    merges = llm.count("merge")
    page = next((tmp_path / "state" / "reports").glob("swe-demo-run-*.html")).read_text()
    assert f"<td>analyse</td><td>{analysed}</td><td>{files}</td>" in page
    assert f"<td>merge</td><td>{merges}</td>" in page


def test_ingest_check_counts_clean_files_instead_of_listing_them(demo_traces):
    trajectories = len(list(demo_traces.rglob("*.traj.json")))
    short = runner.invoke(app, ["ingest", str(demo_traces), "--check"])
    assert short.exit_code == 0 and len(short.stdout.splitlines()) < 10
    assert re.search(r"^(\d+) of \1 files read cleanly", short.stdout, re.M)
    full = runner.invoke(app, ["ingest", str(demo_traces), "--check", "-v"])
    assert len(full.stdout.splitlines()) > trajectories
