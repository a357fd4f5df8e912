"""Skill folders on disk: frontmatter edits, validation, atomic writes and `explain`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import skills_ref

from trace2skill.errors import RuleLookupError, SkillValidationError
from trace2skill.skill import explain_rule, links, validate_skill_dir, write_skill_dir
from trace2skill.skillfmt.frontmatter import edit_frontmatter, frontmatter_data, split_frontmatter

GOOD = """---
name: demo
description: "Checks things. Use when testing."
metadata:
  trace2skill-version: "1.0.0"
---

# Demo

See [more](references/more.md) and [the web](https://example.com) and [top](#demo).

## Gotchas

- Keep it short.
"""


def _skill(tmp_path: Path, text: str = GOOD, refs: dict[str, str] | None = None, name: str = "demo") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "SKILL.md").write_text(text, encoding="utf-8")
    for rel, body in ({"references/more.md": "# More\n\nDetail.\n"} if refs is None else refs).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(body, encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------
# Frontmatter


def test_edit_frontmatter_keeps_hand_written_lines_and_adds_block_metadata():
    front, _ = split_frontmatter("---\n# a comment\nname: demo\ndescription: >\n  Folded text.\nlicense: MIT\n"
                                 "metadata:\n    owner: me\n---\nbody\n")
    edited = edit_frontmatter(front, {"name": "demo", "description": "Folded text.\n"},
                              {"owner": "me", "trace2skill-version": "1.2.3", "trace2skill-run": "run: x"})
    text = "".join(edited)
    assert "# a comment\nname: demo\ndescription: >\n  Folded text.\nlicense: MIT\n" in text
    assert '    owner: me\n    trace2skill-version: "1.2.3"\n    trace2skill-run: "run: x"\n---\n' in text
    data = frontmatter_data(edited)
    assert data["metadata"] == {"owner": "me", "trace2skill-version": "1.2.3", "trace2skill-run": "run: x"}


def test_edit_frontmatter_replaces_changed_values_and_creates_missing_frontmatter():
    edited = edit_frontmatter([], {"name": "demo", "description": 'Say "hi" \\ now'}, {"trace2skill-version": "1.0.0"})
    assert frontmatter_data(edited) == {"name": "demo", "description": 'Say "hi" \\ now',
                                        "metadata": {"trace2skill-version": "1.0.0"}}
    again = edit_frontmatter(edited, {"name": "other"}, {"trace2skill-version": "2.0.0"})
    assert frontmatter_data(again)["name"] == "other"
    assert frontmatter_data(again)["metadata"]["trace2skill-version"] == "2.0.0"
    assert again[2] == edited[2]


def test_flow_style_metadata_is_refused_with_a_clear_error():
    front, _ = split_frontmatter("---\nname: demo\nmetadata: {a: b}\n---\n")
    with pytest.raises(SkillValidationError, match="block-style"):
        edit_frontmatter(front, {}, {"trace2skill-version": "1.0.0"})


# ------------------------------------------------------------------------------------------
# Validation


def test_valid_folder_has_no_problems(tmp_path):
    assert validate_skill_dir(_skill(tmp_path)) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace("# Demo", "# Demo\n" + "line\n" * 500), "lines"),
    (lambda t: t.replace("# Demo", "# Demo\n" + "word " * 5000), "tokens"),
    (lambda t: t.replace("## Gotchas", "## New Section"), "generic heading"),
    (lambda t: t.replace("## Gotchas", "## Gotchas\n\nx\n\n## gotchas"), "duplicate heading"),
    (lambda t: t.replace("## Gotchas", "##"), "empty heading"),
    (lambda t: t.replace("[the web]", "[missing](docs/missing.md) [the web]"), "does not resolve"),
    (lambda t: t.replace("[the web]", "[up](../outside.md) [the web]"), "outside the skill folder"),
    (lambda t: t.replace('  trace2skill-version: "1.0.0"', "  nested:\n    deeper: x"), "must be a string"),
    (lambda t: t.replace("Checks things.", "Checks <things>."), "'<' or '>'"),
    (lambda t: t.replace("name: demo", "name: other"), "must match skill name"),
])
def test_each_problem_is_reported(tmp_path, mutate, expected):
    problems = validate_skill_dir(_skill(tmp_path, mutate(GOOD)))
    assert any(expected in p for p in problems), problems


def test_reference_layout_problems(tmp_path):
    folder = _skill(tmp_path, refs={"references/more.md": "# More\n" + "- x\n" * 301,
                                    "references/orphan.md": "# Orphan\n",
                                    "references/deep/nested.md": "# Nested\n"})
    problems = validate_skill_dir(folder)
    assert any("orphan reference" in p and "orphan.md" in p for p in problems)
    assert any("one level deep" in p for p in problems)
    assert any("table of contents" in p for p in problems)
    (folder / "references/more.md").write_text("# More\n\n- [Part](#part)\n\n## Part\n" + "- x\n" * 301)
    assert not any("table of contents" in p for p in validate_skill_dir(folder))


def test_links_in_code_are_ignored():
    text = "[a](a.md)\n`[b](b.md)`\n```\n[c](c.md)\n```\n[d]: d.md\n"
    assert links(text) == ["a.md", "d.md"]


def test_skills_ref_is_part_of_validation(tmp_path):
    folder = _skill(tmp_path, GOOD.replace("name: demo\n", "name: demo\nversion: 3\n"))
    assert skills_ref.validate(folder)
    assert set(skills_ref.validate(folder)) <= set(validate_skill_dir(folder))


# ------------------------------------------------------------------------------------------
# Writing


def test_write_keeps_files_that_are_not_ours_and_drops_our_stale_ones(tmp_path):
    folder = _skill(tmp_path, GOOD.replace("See [more](references/more.md)", "See [more](references/more.md) and [run](scripts/run.sh)"))
    (folder / "scripts").mkdir()
    (folder / "scripts" / "run.sh").write_text("echo hi\n")
    (folder / "references" / "old-generated.md").write_text("# Old\n")
    (folder / "provenance.json").write_text(json.dumps({"files": ["SKILL.md", "references/old-generated.md"]}))
    new_skill = (folder / "SKILL.md").read_text().replace("Keep it short.", "Keep it shorter.")
    write_skill_dir(folder, {"SKILL.md": new_skill, "provenance.json": '{"files": ["SKILL.md"]}\n'})
    assert (folder / "scripts" / "run.sh").read_text() == "echo hi\n"
    assert (folder / "references" / "more.md").exists()
    assert not (folder / "references" / "old-generated.md").exists()
    assert "Keep it shorter." in (folder / "SKILL.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_failed_validation_leaves_the_old_folder_intact(tmp_path):
    folder = _skill(tmp_path)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(SkillValidationError):
        write_skill_dir(folder, {"SKILL.md": "no frontmatter\n"})
    with pytest.raises(SkillValidationError, match="inside the skill folder"):
        write_skill_dir(folder, {"../escape.md": "x"})
    with pytest.raises(OSError):
        write_skill_dir(folder, {"SKILL.md": GOOD, "SKILL.md/inner.md": "x"})
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_write_creates_a_new_folder_byte_exact(tmp_path):
    target = tmp_path / "out" / "demo"
    write_skill_dir(target, {"SKILL.md": GOOD.replace("\n", "\r\n"), "references/more.md": "# More\n"})
    assert (target / "SKILL.md").read_bytes() == GOOD.replace("\n", "\r\n").encode()


# ------------------------------------------------------------------------------------------
# explain


def _provenance(folder: Path) -> None:
    record = {"id": "r-1", "title": "Pytest hangs without a timeout", "rule": "Use --timeout.", "when": "testing",
              "kind": "pitfall", "signature": "timeout:pytest", "file": "SKILL.md", "section": "Demo > Gotchas",
              "evidence": [{"trace_id": "t1", "outcome": "failure", "steps": [3, 4], "quote": "Timeout"}],
              "first_seen_run": "run-a", "last_seen_run": "run-b", "support": 1}
    other = dict(record, id="r-2", title="Pytest needs a plugin", signature="plugin:pytest", reason="needs-review",
                 file="", section="")
    (folder / "provenance.json").write_text(json.dumps({"rules": {"r-1": record}, "withheld": {"r-2": other}}))


def test_explain_by_id_and_by_unique_title_part(tmp_path):
    folder = _skill(tmp_path)
    _provenance(folder)
    info = explain_rule(folder, "r-1")
    assert info["evidence"] == [{"trace_id": "t1", "outcome": "failure", "steps": [3, 4], "quote": "Timeout"}]
    assert info["failing_support"] == 1 and info["section"] == "Demo > Gotchas" and info["status"] == "in skill"
    assert explain_rule(folder, "PLUGIN")["status"] == "withheld: needs-review"


def test_explain_errors_are_helpful(tmp_path):
    folder = _skill(tmp_path)
    with pytest.raises(RuleLookupError, match="no provenance.json"):
        explain_rule(folder, "r-1")
    _provenance(folder)
    with pytest.raises(RuleLookupError, match="matches 2 rules"):
        explain_rule(folder, "pytest")
    with pytest.raises(RuleLookupError, match="no rule"):
        explain_rule(folder, "r-404")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused_up_front(tmp_path):
    from trace2skill.errors import ConfigError
    from trace2skill.skill import check_skill_target

    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            check_skill_target(locked / "skill")
    finally:
        locked.chmod(0o755)
    check_skill_target(tmp_path / "new" / "deeper" / "skill")
