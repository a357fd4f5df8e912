"""Whole runs on the real demo corpus: provenance, counts, conflicts, determinism, redaction."""

import json
import random
import re
from pathlib import Path

from typer.testing import CliRunner

from trace2skill.analyse import AnalystReport
from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.consolidate import MergeDecision
from trace2skill.pipeline import distill
from trace2skill.testing import ScriptedLLM

from conftest import DEMO_TRACES, ROOT

CORPUS = DEMO_TRACES / "mini-swe-agent-swebench-verified"
LABELS = {i["instance_id"]: i["resolved"] for i in json.loads((CORPUS / "results_summary.json").read_text())["instances"]}
RULE = re.compile(r"<!-- rule:(r-[0-9a-f]+) -->")


def rule_ids(skill_md: str) -> list[str]:
    return RULE.findall(skill_md)


def assert_provenance_is_exact(skill_dir: Path, analysed: set[str]):
    provenance = json.loads((skill_dir / "provenance.json").read_text())
    ids = rule_ids((skill_dir / "SKILL.md").read_text())
    assert ids, "the skill has rules"
    for rid in ids:
        entry = provenance["rules"][rid]
        traces = set(entry["trace_ids"])
        assert traces and traces <= analysed
        assert entry["failing_support"] == sum(1 for t in traces if LABELS[t] is False)
        assert entry["succeeding_support"] == sum(1 for t in traces if LABELS[t] is True)
        for evidence in entry["evidence"]:
            assert evidence["outcome"] == ("success" if LABELS[evidence["trace_id"]] else "failure")
    return provenance


def test_committed_demo_skill_rules_trace_back_to_bundled_trajectories():
    from trace2skill.author import validate_skill_dir

    skill_dir = ROOT / "skills_out" / "swe-agent-lessons"
    assert validate_skill_dir(skill_dir) == []
    assert_provenance_is_exact(skill_dir, set(LABELS))


def llm_responder(messages, output, purpose):
    """An analyst that cites the first step mentioning `pytest` or the task, like a model would."""
    if output is MergeDecision:
        return MergeDecision(groups=[], contradictions=[])
    prompt = messages[1]["content"]
    step = int(re.search(r"\[step (\d+)\]", prompt).group(1))
    failed = purpose == "analyse-failure"
    lesson = dict(title="Run the narrowest test first" if failed else "Reproduce before editing",
                  rule="Run a single test file first." if failed else "Write a reproduction script before editing.",
                  when="When verifying a fix.", kind="pitfall" if failed else "procedure",
                  subject="pytest" if failed else "reproduction", polarity="do", steps=[step], quote=prompt[:60])
    return AnalystReport(lessons=[lesson])


def test_llm_path_end_to_end_counts_levels_and_provenance(demo_traces, tmp_path):
    llm = ScriptedLLM(llm_responder)
    config = load_config(overrides={"llm.model": "scripted", "skill.out": tmp_path / "out", "skill.name": "demo"}, env={})
    result, build = distill(config, llm, [demo_traces])
    assert llm.count("analyse-failure") == 14 and llm.count("analyse-success") == 26
    assert result.analysed == 40 and result.merge_levels == 3  # 40 -> 8 -> 2 -> 1
    assert result.usage.calls == llm.count()
    provenance = assert_provenance_is_exact(tmp_path / "out" / "demo", set(LABELS))
    by_title = {e["title"]: e for e in provenance["rules"].values()}
    assert by_title["Run the narrowest test first"]["failing_support"] == 14
    assert by_title["Reproduce before editing"]["succeeding_support"] == 26


def contradicting_responder(messages, output, purpose):
    """Failed runs say never use `sed -i`; successful runs say use it: a planted contradiction."""
    if output is MergeDecision:
        return MergeDecision(groups=[], contradictions=[])
    step = int(re.search(r"\[step (\d+)\]", messages[1]["content"]).group(1))
    if purpose == "analyse-failure":
        lesson = dict(title="Never edit with sed -i", rule="Avoid sed -i for code edits.", polarity="avoid")
    else:
        lesson = dict(title="Edit with sed -i", rule="Use sed -i for small code edits.", polarity="do")
    lesson.update(when="When editing source files.", kind="heuristic", subject="sed", steps=[step], quote="sed -i")
    return AnalystReport(lessons=[lesson])


def test_planted_contradiction_lands_in_the_ledger_with_both_sides(demo_traces, tmp_path):
    config = load_config(overrides={"llm.model": "scripted", "skill.out": tmp_path / "out", "skill.name": "demo"}, env={})
    result, _ = distill(config, ScriptedLLM(contradicting_responder), [demo_traces])
    [conflict] = result.conflicts
    assert conflict.status == "needs-review"
    sides = {conflict.a.polarity: conflict.a, conflict.b.polarity: conflict.b}
    assert sides["avoid"].failing_support == 14 and sides["do"].succeeding_support == 26
    skill_dir = tmp_path / "out" / "demo"
    skill_md = (skill_dir / "SKILL.md").read_text()
    assert "sed -i" not in skill_md, "needs-review lessons stay out of SKILL.md"
    ledger = (skill_dir / "CONFLICTS.md").read_text()
    assert "Never edit with sed -i" in ledger and "Edit with sed -i" in ledger
    failing = next(t for t, ok in sorted(LABELS.items()) if not ok)
    passing = next(t for t, ok in sorted(LABELS.items()) if ok)
    assert failing in ledger and passing in ledger, "both sides' evidence is in the ledger"


def test_min_support_keeps_one_trajectory_lessons_out_of_skill_md(demo_traces, tmp_path):
    def responder(messages, output, purpose):
        if output is MergeDecision:
            return MergeDecision(groups=[], contradictions=[])
        base = llm_responder(messages, output, purpose)
        unique = "astropy__astropy-13453" in messages[1]["content"]
        extra = [dict(title="One-off astropy quirk", rule="Check the HTML writer formats.", when="Only here.", kind="fact",
                      subject="astropy", polarity="do", steps=[1], quote="html")] if unique else []
        return AnalystReport(lessons=[*base.lessons, *extra])

    config = load_config(overrides={"llm.model": "scripted", "skill.out": tmp_path / "out", "skill.name": "demo",
                                    "consolidate.min_support": 2}, env={})
    distill(config, ScriptedLLM(responder), [demo_traces])
    skill_dir = tmp_path / "out" / "demo"
    assert "One-off astropy quirk" not in (skill_dir / "SKILL.md").read_text()
    references = "".join(p.read_text() for p in (skill_dir / "references").glob("*.md"))
    assert "One-off astropy quirk" in references


def test_offline_runs_are_byte_identical_whatever_the_input_order(demo_traces, tmp_path):
    files = sorted((demo_traces / "mini-swe-agent-swebench-verified" / "trajs").glob("*/*.traj.json"))
    labels = demo_traces / "mini-swe-agent-swebench-verified" / "results_summary.json"
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    runner = CliRunner()
    outputs = []
    for name, inputs in (("a", [str(demo_traces)]), ("b", [str(demo_traces)]), ("c", [str(p) for p in shuffled])):
        out = tmp_path / name
        result = runner.invoke(app, ["distill", *inputs, "--labels", str(labels), "--out", str(out), "--skill", "demo"])
        assert result.exit_code == 0, result.output
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0]) >= 4


SECRET = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm"


def test_a_planted_secret_never_reaches_prompts_lessons_skill_or_output(demo_traces, tmp_path):
    victim = next(CORPUS.glob("trajs/*/*.traj.json")).name
    path = next(demo_traces.glob(f"**/{victim}"))
    data = json.loads(path.read_text())
    data["messages"][1]["content"] += f"\nUse OPENAI_API_KEY={SECRET} for the service."
    data["messages"][2]["content"] = f"THOUGHT: call it\n\n```bash\ncurl -H 'Authorization: Bearer {SECRET}' http://x && pytest\n```"
    path.write_text(json.dumps(data))

    def quoting_responder(messages, output, purpose):
        if output is MergeDecision:
            return MergeDecision(groups=[], contradictions=[])
        prompt = messages[1]["content"]
        at = prompt.find("OPENAI_API_KEY")
        return AnalystReport(lessons=[dict(title="Keep keys out of commands", rule="Read keys from the environment.", when="Always.",
                                           kind="pitfall", subject="curl", polarity="avoid", steps=[1], quote=prompt[max(at, 0):at + 120])])

    llm = ScriptedLLM(quoting_responder)
    runner = CliRunner()
    for model, extra in (("scripted", {"obj": {"llm_factory": lambda c: llm}}), ("offline", {})):
        out = tmp_path / model
        result = runner.invoke(app, ["distill", str(demo_traces), "--out", str(out), "--skill", "demo", "--model", model, "--json"], **extra)
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
        assert json.loads(result.stdout)["redactions"], "the summary reports what was removed"
        for file in out.rglob("*"):
            if file.is_file():
                assert SECRET not in file.read_text(), file
    assert llm.count() > 0
    assert all(SECRET not in m["content"] for call in llm.calls for m in call.messages)
    assert any("[REDACTED" in m["content"] for call in llm.calls for m in call.messages)


def test_a_reworded_model_lesson_updates_the_existing_rule_instead_of_duplicating_it(demo_traces, tmp_path):
    def wording(variant):
        def respond(messages, output, purpose):
            if output is MergeDecision:
                return MergeDecision(groups=[], contradictions=[])
            step = int(re.search(r"\[step (\d+)\]", messages[1]["content"]).group(1))
            title = "Run the narrowest tests first" if variant else "Run the narrowest test first"
            rule = ("Run a single test file before the whole suite, read its failures from the bottom up, fix the first "
                    "one, and only then widen the run to the module and finally to the package that owns the change.")
            return AnalystReport(lessons=[dict(title=title, rule=rule,
                                               when="When verifying a fix.", kind="procedure", subject="pytest", polarity="do",
                                               steps=[step], quote="")])
        return respond

    trajs = demo_traces / "mini-swe-agent-swebench-verified" / "trajs"
    parked = tmp_path / "parked"
    parked.mkdir()
    for folder in sorted(trajs.iterdir())[20:]:
        folder.rename(parked / folder.name)
    config = load_config(overrides={"llm.model": "scripted", "skill.out": tmp_path / "out", "skill.name": "demo"}, env={})
    distill(config, ScriptedLLM(wording(False)), [demo_traces])
    first = tmp_path / "first"
    first.mkdir()
    for folder in list(trajs.iterdir()):
        folder.rename(first / folder.name)
    for folder in parked.iterdir():
        folder.rename(trajs / folder.name)
    result, build = distill(config, ScriptedLLM(wording(True)), [demo_traces])
    ids = rule_ids(build.files["SKILL.md"])
    assert len(ids) == 1, "the reworded lesson landed on the existing rule"
    assert json.loads(build.files["provenance.json"])["rules"][ids[0]]["succeeding_support"] + \
        json.loads(build.files["provenance.json"])["rules"][ids[0]]["failing_support"] == 40


def test_lessons_quoting_task_specific_literals_are_reported(demo_traces, tmp_path):
    leaky = "astropy__astropy-13453"

    def respond(messages, output, purpose):
        if output is MergeDecision:
            return MergeDecision(groups=[], contradictions=[])
        step = int(re.search(r"\[step (\d+)\]", messages[1]["content"]).group(1))
        title = f"Fix {leaky} by editing html.py" if leaky in messages[1]["content"] else "Reproduce before editing"
        return AnalystReport(lessons=[dict(title=title, rule="Write a reproduction script first.", when="Always.", kind="procedure",
                                           subject="repro", polarity="do", steps=[step], quote="")])

    config = load_config(overrides={"llm.model": "scripted", "skill.out": tmp_path / "out", "skill.name": "demo"}, env={})
    result, _ = distill(config, ScriptedLLM(respond), [demo_traces])
    assert len(result.warnings) == 1 and leaky in result.warnings[0]
    offline, _ = distill(load_config(overrides={"skill.out": tmp_path / "off", "skill.name": "demo"}, env={}), None, [demo_traces])
    assert offline.warnings == ()
