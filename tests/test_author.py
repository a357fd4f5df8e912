"""Authoring skills: create, deepen without clobbering, routing, conflicts, versions, size."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import skills_ref

from trace2skill.author import RunInfo, SkillBuild, author_skill, explain_rule, validate_build, validate_skill_dir, write_skill_dir
from trace2skill.config import Config
from trace2skill.errors import ConfigError, SkillValidationError
from trace2skill.rules import rule_id
from trace2skill.skillfmt.sections import find_section, parse, render
from trace2skill.skill import body_size
from trace2skill.skillfmt.frontmatter import frontmatter_data, split_frontmatter
from trace2skill.types import Conflict, Evidence, Lesson, LessonSet, content_hash

NAME = "agent-lessons"
REAL_SKILL = Path(__file__).parent / "data" / "skills" / "brand-guidelines"
OUTCOMES = {"f1": "failure", "f2": "failure", "f3": "failure", "f4": "failure", "s1": "success", "s2": "success",
            "s3": "success"}

HAND_WRITTEN = """---
name: agent-lessons
description: Helps agents work in Python repositories. Use when editing or testing Python projects.
license: MIT
metadata:
  owner: "platform-team"
---

# Python repo helper

Written by a person; trace2skill must keep every line of it.

## Gotchas
<!-- trace2skill:locked -->
- Never push to main directly.
- Always activate the virtualenv first.

## Workflow

1. Read the README.
2. Run the tests.

## Notes

A paragraph about the codebase.
- An unknown managed bullet stays as it is. <!-- rule:r-foreign -->
"""


def lesson(sig: str, traces: list[str], kind: str = "pitfall", polarity: str = "do", subject: str = "",
           title: str | None = None) -> Lesson:
    evidence = [Evidence(trace_id=t, outcome=OUTCOMES[t], steps=(i, i + 1), quote=f"{sig} seen in {t}")
                for i, t in enumerate(traces)]
    return Lesson.create(title=title or f"Handle {sig}", rule=f"check {sig} before moving on", when="running the tests",
                         kind=kind, signature=sig, polarity=polarity, subject=subject or sig.split(":")[-1],
                         evidence=evidence)


def run_for(traces, run_id: str | None = None) -> RunInfo:
    digest = content_hash(sorted(traces))
    return RunInfo(run_id=run_id or f"run-{digest[:8]}", model="offline", mode="offline", source_digest=digest,
                   trace_outcomes={t: OUTCOMES[t] for t in traces}, tool_version="0.1.0")


def build(folder: Path, lessons, traces=OUTCOMES, config: Config | None = None, conflicts=(), rejected=None,
          write: bool = True) -> SkillBuild:
    config = config or Config(skill={"name": folder.name})
    result = author_skill(folder, LessonSet(lessons=tuple(lessons), conflicts=tuple(conflicts)), config,
                          run_for(traces), rejected)
    if write and result.changed:
        write_skill_dir(folder, result.files)
    return result


def skill_md(folder: Path) -> str:
    return (folder / "SKILL.md").read_text(encoding="utf-8")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(line == candidate for candidate in it) for line in needles)


# ------------------------------------------------------------------------------------------
# Create


def test_create_writes_a_valid_skill_with_gotchas_ranked_and_marked(tmp_path):
    folder = tmp_path / NAME
    lessons = [lesson("timeout:pytest", ["f1", "f2", "s1"]), lesson("import:numpy", ["f1", "f2", "f3"]),
               lesson("pip:editable", ["s1", "s2"], kind="procedure"), lesson("fact:tox", ["s2", "s3"], kind="fact"),
               lesson("heur:small-diffs", ["f4", "s1"], kind="heuristic")]
    result = build(folder, lessons)
    assert (result.version, result.previous_version, result.changed, result.rules_written) == ("1.0.0", None, True, 5)
    assert skills_ref.validate(folder) == [] and validate_skill_dir(folder) == []
    front, body = split_frontmatter(skill_md(folder))
    data = frontmatter_data(front)
    assert data["name"] == NAME and 0 < len(data["description"]) <= 1024 and not re.search("[<>]", data["description"])
    assert "pytest" in data["description"]
    assert data["metadata"] == {"trace2skill-version": "1.0.0", "trace2skill-source-digest": run_for(OUTCOMES).source_digest,
                                "trace2skill-run": run_for(OUTCOMES).run_id}
    assert all(line.startswith(("---", "name:", "description:", "metadata:", "  ")) for line in front[1:-1])
    headings = [line for line in body.splitlines() if line.startswith("#")]
    assert headings == ["# Agent lessons", "## Gotchas", "## Procedures", "## Facts", "## Heuristics"]
    gotchas = render(find_section(parse(body), ("Agent lessons", "Gotchas"))).splitlines()[2:]
    assert gotchas[0].endswith(f"<!-- rule:{rule_id('import:numpy')} -->") and "evidence: 3 failed / 0 successful runs" in gotchas[0]
    assert gotchas[1].endswith(f"<!-- rule:{rule_id('timeout:pytest')} -->") and "evidence: 2 failed / 1 successful runs" in gotchas[1]
    assert not any(re.search(r"\d{4}-\d{2}-\d{2}|\d\d:\d\d:\d\d", text) for text in result.files.values())
    assert "## 1.0.0" in result.files["CHANGELOG.md"] and run_for(OUTCOMES).run_id in result.files["CHANGELOG.md"]


def test_provenance_maps_every_rule_to_its_evidence(tmp_path):
    folder = tmp_path / NAME
    build(folder, [lesson("timeout:pytest", ["f1", "f2", "s1"])])
    text = (folder / "provenance.json").read_text()
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    record = json.loads(text)["rules"][rule_id("timeout:pytest")]
    assert record["trace_ids"] == ["f1", "f2", "s1"]
    assert (record["failing_support"], record["succeeding_support"]) == (2, 1)
    assert record["evidence"][0] == {"trace_id": "f1", "outcome": "failure", "steps": [0, 1], "quote": "timeout:pytest seen in f1"}
    assert record["section"] == "Agent lessons > Gotchas" and record["signature"] == "timeout:pytest"
    assert record["first_seen_run"] == record["last_seen_run"] == run_for(OUTCOMES).run_id
    assert record["lesson_ids"] and record["polarity"] == "do" and record["subject"] == "pytest"


def test_same_inputs_give_identical_files_and_no_change(tmp_path):
    lessons = [lesson(f"sig:{i}", ["f1", "s1", "f2"][: 1 + i % 3], kind=["pitfall", "fact"][i % 2]) for i in range(12)]
    first = build(tmp_path / NAME, lessons)
    on_disk = folder_bytes(tmp_path / NAME)
    again = build(tmp_path / NAME, lessons)
    assert (again.changed, again.version, again.previous_version) == (False, "1.0.0", "1.0.0")
    assert again.files == first.files and folder_bytes(tmp_path / NAME) == on_disk
    shuffled = list(lessons)
    random.Random(7).shuffle(shuffled)
    other = tmp_path / "other" / NAME
    assert build(other, shuffled, write=False).files == first.files


def test_name_must_equal_the_folder_name(tmp_path):
    with pytest.raises(ConfigError, match="must equal"):
        author_skill(tmp_path / "elsewhere", LessonSet(), Config(skill={"name": NAME}), run_for(OUTCOMES))


# ------------------------------------------------------------------------------------------
# Deepen


def test_deepen_keeps_every_hand_written_line_and_the_locked_section(tmp_path):
    folder = tmp_path / NAME
    folder.mkdir()
    (folder / "SKILL.md").write_text(HAND_WRITTEN)
    locked_before = render(find_section(parse(split_frontmatter(HAND_WRITTEN)[1]), ("Python repo helper", "Gotchas")))
    lessons = [lesson("timeout:pytest", ["f1", "f2"]), lesson("pip:editable", ["s1", "s2"], kind="procedure")]
    for round_lessons in (lessons, lessons + [lesson("import:numpy", ["f3", "f4"])]):
        result = build(folder, round_lessons)
        text = skill_md(folder)
        assert is_subsequence(HAND_WRITTEN.splitlines(keepends=True), text.splitlines(keepends=True))
        body = parse(split_frontmatter(text)[1])
        assert render(find_section(body, ("Python repo helper", "Gotchas"))) == locked_before
        assert validate_skill_dir(folder) == []
    assert result.version == "1.1.0"
    learned = render(find_section(body, ("Python repo helper", "Gotchas learned from traces")))
    assert rule_id("timeout:pytest") in learned and rule_id("import:numpy") in learned
    assert rule_id("pip:editable") in render(find_section(body, ("Python repo helper", "Workflow")))
    assert 'owner: "platform-team"' in text and "license: MIT" in text


def test_deepen_a_real_skill_keeps_it_and_validates(tmp_path):
    folder = tmp_path / "brand-guidelines"
    shutil.copytree(REAL_SKILL, folder)
    original = skill_md(folder)
    build(folder, [lesson("contrast:orange", ["f1", "f2"], subject="orange text")])
    text = skill_md(folder)
    assert is_subsequence(original.splitlines(keepends=True), text.splitlines(keepends=True))
    assert text.count("<!-- rule:") == 1 and "## Gotchas" in text
    assert validate_skill_dir(folder) == [] and (folder / "LICENSE.txt").exists()


def test_rule_moved_by_a_person_is_updated_where_it_is(tmp_path):
    folder = tmp_path / NAME
    build(folder, [lesson("timeout:pytest", ["f1"]), lesson("import:numpy", ["f2", "f3"])])
    text = skill_md(folder)
    line = next(l for l in text.splitlines(keepends=True) if rule_id("timeout:pytest") in l)
    moved = text.replace(line, "") + "\n## Testing notes\n\nA hand-written paragraph.\n" + line
    (folder / "SKILL.md").write_text(moved)
    build(folder, [lesson("timeout:pytest", ["f1", "f4"]), lesson("import:numpy", ["f2", "f3"])])
    section = render(find_section(parse(split_frontmatter(skill_md(folder))[1]), ("Agent lessons", "Testing notes")))
    assert rule_id("timeout:pytest") in section and "evidence: 2 failed" in section
    assert skill_md(folder).count(rule_id("timeout:pytest")) == 1


# ------------------------------------------------------------------------------------------
# Routing: min support, conflicts, rejections


def test_min_support_routes_one_off_lessons_to_a_linked_reference(tmp_path):
    folder = tmp_path / NAME
    config = Config(skill={"name": NAME}, consolidate={"min_support": 2})
    result = build(folder, [lesson("timeout:pytest", ["f1", "f2"]), lesson("once:odd", ["f3"])], config=config)
    assert rule_id("once:odd") not in skill_md(folder) and rule_id("timeout:pytest") in skill_md(folder)
    assert rule_id("once:odd") in result.files["references/low-support-lessons.md"]
    assert "(references/low-support-lessons.md)" in skill_md(folder) and validate_skill_dir(folder) == []
    assert result.rules_written == 1


def test_min_support_drop_keeps_the_lesson_only_in_provenance(tmp_path):
    folder = tmp_path / NAME
    config = Config(skill={"name": NAME}, consolidate={"min_support": 2, "below_support": "drop"})
    result = build(folder, [lesson("timeout:pytest", ["f1", "f2"]), lesson("once:odd", ["f3"])], config=config)
    assert not any(rule_id("once:odd") in text for name, text in result.files.items() if name.endswith(".md"))
    assert not any(name.startswith("references/") for name in result.files)
    withheld = json.loads(result.files["provenance.json"])["withheld"]
    assert withheld[rule_id("once:odd")]["reason"] == "below-min-support"


def test_needs_review_conflict_stays_out_of_skill_md_and_is_in_the_ledger(tmp_path):
    folder = tmp_path / NAME
    do = lesson("retry:pytest", ["f1", "f2"], polarity="do", subject="pytest -x", title="Rerun pytest with -x")
    avoid = lesson("noretry:pytest", ["s1", "s2"], polarity="avoid", subject="pytest -x", title="Do not stop at first failure")
    conflict = Conflict(id="C-planted", a=do, b=avoid, reason="opposite advice on pytest -x", detected_by="polarity",
                        status="needs-review")
    result = build(folder, [do, avoid, lesson("import:numpy", ["f3"])], conflicts=[conflict])
    assert rule_id("retry:pytest") not in skill_md(folder) and rule_id("noretry:pytest") not in skill_md(folder)
    ledger = result.files["CONFLICTS.md"]
    for expected in ("C-planted", "needs-review", "Rerun pytest with -x", "Do not stop at first failure",
                     "`f1` (failure), steps 0, 1", "`s2` (success), steps 1, 2", "noretry:pytest seen in s1"):
        assert expected in ledger
    provenance = json.loads(result.files["provenance.json"])
    assert [c["id"] for c in provenance["conflicts"]] == ["C-planted"]
    assert provenance["withheld"][rule_id("retry:pytest")]["reason"] == "needs-review"
    resolved = conflict.model_copy(update={"status": "resolved", "winner": do.id, "resolution": "stronger support"})
    after = build(folder, [do, avoid, lesson("import:numpy", ["f3"])], conflicts=[resolved])
    assert rule_id("retry:pytest") in skill_md(folder) and rule_id("noretry:pytest") not in skill_md(folder)
    assert after.version == "1.1.0" and after.added == [rule_id("retry:pytest")]


def test_lesson_contradicting_an_existing_rule_is_held_for_review(tmp_path):
    folder = tmp_path / NAME
    build(folder, [lesson("use:pytest-xdist", ["f1", "f2"], polarity="do", subject="pytest-xdist")])
    result = build(folder, [lesson("use:pytest-xdist", ["f1", "f2"], polarity="do", subject="pytest-xdist"),
                            lesson("avoid:xdist", ["s1", "s2", "s3"], polarity="avoid", subject="pytest-xdist")])
    assert rule_id("avoid:xdist") not in skill_md(folder) and rule_id("use:pytest-xdist") in skill_md(folder)
    conflicts = json.loads(result.files["provenance.json"])["conflicts"]
    assert [(c["detected_by"], c["status"]) for c in conflicts] == [("existing-skill", "needs-review")]
    assert "avoid:xdist seen in s3" in result.files["CONFLICTS.md"]


def test_lesson_contradicting_a_hand_written_bullet_is_held_for_review(tmp_path):
    folder = tmp_path / NAME
    folder.mkdir()
    (folder / "SKILL.md").write_text(HAND_WRITTEN)
    result = build(folder, [lesson("push:main", ["s1", "s2"], polarity="do", subject="main")])
    assert rule_id("push:main") not in skill_md(folder)
    assert "Never push to main directly." in result.files["CONFLICTS.md"]


def test_a_rule_removed_by_hand_is_not_re_added_until_its_support_grows(tmp_path):
    folder = tmp_path / NAME
    keep, drop = lesson("timeout:pytest", ["f1", "f2"]), lesson("import:numpy", ["f3"])
    build(folder, [keep, drop])
    text = skill_md(folder)
    (folder / "SKILL.md").write_text("".join(l for l in text.splitlines(keepends=True) if rule_id("import:numpy") not in l))
    result = build(folder, [keep, drop])
    assert rule_id("import:numpy") not in skill_md(folder)
    assert result.rejected == {rule_id("import:numpy"): 1} and result.removed == [rule_id("import:numpy")]
    assert json.loads((folder / "provenance.json").read_text())["rejected"] == {rule_id("import:numpy"): 1}
    again = build(folder, [keep, lesson("import:numpy", ["f3"])])
    assert (again.changed, again.rejected) == (False, {rule_id("import:numpy"): 1})
    grown = build(folder, [keep, lesson("import:numpy", ["f3", "f4"])])
    assert rule_id("import:numpy") in skill_md(folder) and grown.rejected == {}
    assert build(folder, [keep], rejected={rule_id("new:thing"): 3}).rejected == {rule_id("new:thing"): 3}


# ------------------------------------------------------------------------------------------
# Versions and incremental runs


def test_version_bumps_patch_minor_major_and_changelog_order(tmp_path):
    folder = tmp_path / NAME
    a, fact = lesson("timeout:pytest", ["f1", "f2"]), lesson("fact:tox", ["s1"], kind="fact")
    assert build(folder, [a, fact]).version == "1.0.0"
    patch = build(folder, [lesson("timeout:pytest", ["f1", "f2", "f3"]), fact])
    assert (patch.version, patch.changed_rules, patch.added, patch.removed) == ("1.0.1", [rule_id("timeout:pytest")], [], [])
    minor = build(folder, [lesson("timeout:pytest", ["f1", "f2", "f3"]), fact, lesson("import:numpy", ["f4"])])
    assert (minor.version, minor.added) == ("1.1.0", [rule_id("import:numpy")])
    major = build(folder, [lesson("timeout:pytest", ["f1", "f2", "f3"]), lesson("import:numpy", ["f4"])])
    assert (major.version, major.removed) == ("2.0.0", [rule_id("fact:tox")])
    assert "## Facts" not in skill_md(folder) and validate_skill_dir(folder) == []
    flipped = build(folder, [lesson("timeout:pytest", ["f1", "f2", "f3"], polarity="avoid"), lesson("import:numpy", ["f4"])])
    assert flipped.version == "3.0.0" and "reversed" in flipped.files["CHANGELOG.md"]
    versions = re.findall(r"^## (\S+)$", (folder / "CHANGELOG.md").read_text(), re.M)
    assert versions == ["3.0.0", "2.0.0", "1.1.0", "1.0.1", "1.0.0"]


def test_incremental_run_on_new_traces_keeps_old_support(tmp_path):
    folder = tmp_path / NAME
    first = run_for(["f1", "f2"])
    author = lambda lessons, run: author_skill(folder, LessonSet(lessons=tuple(lessons)), Config(skill={"name": NAME}), run)
    write_skill_dir(folder, author([lesson("timeout:pytest", ["f1", "f2"])], first).files)
    second = run_for(["f3", "s1"])
    result = author([lesson("timeout:pytest", ["f3"])], second)
    write_skill_dir(folder, result.files)
    assert "evidence: 3 failed / 0 successful runs" in skill_md(folder)
    record = json.loads((folder / "provenance.json").read_text())["rules"][rule_id("timeout:pytest")]
    assert record["trace_ids"] == ["f1", "f2", "f3"]
    assert (record["first_seen_run"], record["last_seen_run"]) == (first.run_id, second.run_id)
    assert result.version == "1.0.1"


# ------------------------------------------------------------------------------------------
# Size discipline


def _many(count: int, support) -> list[Lesson]:
    traces = list(OUTCOMES)
    kinds = ["pitfall", "procedure", "fact", "heuristic"]
    return [lesson(f"sig:{i:03d}", traces[: support(i)], kind=kinds[i % 4], subject=f"tool{i}",
                   title=f"Lesson {i} about tool{i} and its long configuration name") for i in range(count)]


def test_size_discipline_with_200_lessons(tmp_path):
    folder = tmp_path / NAME
    result = build(folder, _many(200, lambda i: 1 + i % 7))
    lines, tokens = body_size(split_frontmatter(skill_md(folder))[1])
    assert lines < 500 and tokens <= 5000
    assert "(references/more-lessons.md)" in skill_md(folder) and validate_skill_dir(folder) == []
    provenance = json.loads(result.files["provenance.json"])["rules"]
    in_skill = [r["support"] for r in provenance.values() if r["file"] == "SKILL.md"]
    moved = [r["support"] for r in provenance.values() if r["file"] == "references/more-lessons.md"]
    assert len(in_skill) + len(moved) == 200 and min(in_skill) >= max(moved)
    assert result.rules_written == len(in_skill)


def test_long_reference_files_get_a_table_of_contents(tmp_path):
    folder = tmp_path / NAME
    config = Config(skill={"name": NAME}, consolidate={"min_support": 2})
    result = build(folder, _many(320, lambda i: 1), config=config)
    low = result.files["references/low-support-lessons.md"]
    assert len(low.splitlines()) > 300 and "- [Gotchas](#gotchas)" in low
    assert validate_skill_dir(folder) == []


# ------------------------------------------------------------------------------------------
# Writing and explaining


def test_failed_validation_leaves_the_old_folder_intact(tmp_path):
    folder = tmp_path / NAME
    build(folder, [lesson("timeout:pytest", ["f1", "f2"])])
    before = folder_bytes(folder)
    bad = Config(skill={"name": NAME, "description": "Use for <html> work"})
    result = build(folder, [lesson("timeout:pytest", ["f1", "f2"])], config=bad, write=False)
    assert any("'<' or '>'" in p for p in validate_build(result, NAME))
    with pytest.raises(SkillValidationError):
        write_skill_dir(folder, result.files)
    assert folder_bytes(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_explain_rule_on_an_authored_skill(tmp_path):
    folder = tmp_path / NAME
    build(folder, [lesson("timeout:pytest", ["f1", "s1"], title="Pytest hangs without a timeout")])
    for query in (rule_id("timeout:pytest"), "hangs without"):
        info = explain_rule(folder, query)
        assert info["trace_ids"] == ["f1", "s1"] and info["section"] == "Agent lessons > Gotchas"
        assert info["evidence"][1] == {"trace_id": "s1", "outcome": "success", "steps": [1, 2],
                                       "quote": "timeout:pytest seen in s1"}


def test_raising_min_support_moves_written_rules_out_and_back(tmp_path):
    folder = tmp_path / NAME
    lessons = [lesson("a:1", ["f1", "f2", "f3"]), lesson("b:2", ["f1", "f2"]), lesson("c:3", ["s1", "s2"], kind="fact")]
    build(folder, lessons)
    strict = build(folder, lessons, config=Config(skill={"name": NAME}, consolidate={"min_support": 3}))
    assert (strict.version, strict.changed_rules) == ("1.0.1", sorted([rule_id("b:2"), rule_id("c:3")]))
    low = (folder / "references" / "low-support-lessons.md").read_text()
    assert low.index("## Gotchas") < low.index("## Facts") and validate_skill_dir(folder) == []
    relaxed = build(folder, lessons)
    assert relaxed.version == "1.0.2" and not (folder / "references").exists()
    assert "Reference files" not in skill_md(folder) and skill_md(folder).count("<!-- rule:") == 3
