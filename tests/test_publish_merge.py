"""The human-wins three-way merge of SKILL.md (`trace2skill.publish.merge`), on plain strings."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from trace2skill.publish.merge import merge3, merge_json, merge_text
from trace2skill.skillfmt.markers import rule_lines

FRONT = '---\nname: demo\ndescription: Demo skill.\nmetadata:\n  trace2skill-version: "1.0.0"\n---\n'


def doc(*sections: str, intro: str = "Intro.", version: str = "1.0.0") -> str:
    return FRONT.replace("1.0.0", version) + f"# Demo\n\n{intro}\n\n" + "\n".join(sections)


def section(title: str, *bullets: str) -> str:
    return f"## {title}\n\n" + "".join(f"{b}\n" for b in bullets) + "\n"


def rule(rid: str, text: str) -> str:
    return f"- **{rid.upper()}**: {text} <!-- rule:r-{rid} -->"


BASE = doc(section("Gotchas", rule("a", "do a."), rule("b", "do b.")), section("Procedures", rule("c", "do c.")))


def test_independent_edits_both_land():
    ours = doc(section("Gotchas", rule("a", "do a."), rule("b", "do b."), rule("d", "do d.")),
               section("Procedures", rule("c", "do c.")), version="1.1.0")
    theirs = doc(section("Gotchas", rule("a", "do a, carefully."), rule("b", "do b.")),
                 section("Procedures", rule("c", "do c."), "- a human note"), intro="Intro, edited.")
    merged, clashes = merge3(BASE, ours, theirs)
    assert clashes == []
    assert merged == doc(section("Gotchas", rule("a", "do a, carefully."), rule("b", "do b."), rule("d", "do d.")),
                         section("Procedures", rule("c", "do c."), "- a human note"), intro="Intro, edited.", version="1.1.0")


def test_rule_changed_on_both_sides_keeps_human_text_and_clashes():
    ours = BASE.replace("do b.", "do b twice.")
    theirs = BASE.replace("do b.", "do b, but only on Mondays.")
    merged, clashes = merge3(BASE, ours, theirs)
    assert merged == theirs
    assert [(c.kind, c.rule_id, c.note) for c in clashes] == [("rule", "r-b", "changed on both sides")]
    assert "do b twice." in clashes[0].ours and "Mondays" in clashes[0].theirs
    assert clashes[0].where == "## Gotchas"


def test_human_deletion_beats_bot_change():
    ours = BASE.replace("do c.", "do c now.")
    theirs = BASE.replace(rule("c", "do c.") + "\n", "")
    merged, clashes = merge3(BASE, ours, theirs)
    assert "rule:r-c" not in merged
    assert [(c.rule_id, c.theirs) for c in clashes] == [("r-c", None)]


def test_bot_deletion_of_untouched_rule_applies_without_clash():
    ours = BASE.replace(rule("a", "do a.") + "\n", "")
    merged, clashes = merge3(BASE, ours, BASE)
    assert merged == ours and clashes == []


def test_bot_deletion_of_human_edited_rule_keeps_it_and_clashes():
    ours = BASE.replace(rule("a", "do a.") + "\n", "")
    theirs = BASE.replace("do a.", "do a (edited).")
    merged, clashes = merge3(BASE, ours, theirs)
    assert "do a (edited)." in merged
    assert [c.rule_id for c in clashes] == ["r-a"]


def test_moved_rule_stays_where_the_human_put_it_with_the_bots_wording():
    ours = BASE.replace("do a.", "do a, always.")
    theirs = doc(section("Gotchas", rule("b", "do b.")), section("Procedures", rule("c", "do c."), rule("a", "do a.")))
    merged, clashes = merge3(BASE, ours, theirs)
    assert clashes == []
    assert merged == doc(section("Gotchas", rule("b", "do b.")), section("Procedures", rule("c", "do c."), rule("a", "do a, always.")))


def test_new_bot_section_lands_after_its_neighbour():
    ours = BASE + section("Facts", rule("f", "f is true."))
    theirs = BASE.replace("## Procedures", "## Procedures\n\nHuman intro to procedures.")
    merged, clashes = merge3(BASE, ours, theirs)
    assert clashes == []
    assert merged.index("Human intro") < merged.index("## Facts") < merged.index("rule:r-f")


def test_renamed_section_receives_the_bots_new_rule():
    ours = BASE.replace(rule("b", "do b."), rule("b", "do b.") + "\n" + rule("d", "do d."))
    theirs = BASE.replace("## Gotchas", "## Pitfalls")
    merged, clashes = merge3(BASE, ours, theirs)
    assert clashes == []
    assert "## Gotchas" not in merged
    assert merged.index("## Pitfalls") < merged.index("rule:r-d") < merged.index("## Procedures")


def test_locked_section_is_never_changed():
    theirs = BASE.replace("## Gotchas\n", "## Gotchas\n<!-- trace2skill:locked -->\n")
    ours = BASE.replace("do a.", "do a now.").replace(rule("b", "do b."), rule("b", "do b.") + "\n" + rule("d", "do d."))
    merged, clashes = merge3(BASE, ours, theirs)
    assert merged == theirs
    assert {c.rule_id for c in clashes} == {"r-a", "r-d"}
    assert all(c.note == "section is locked" for c in clashes if c.rule_id)


def test_lock_in_preamble_locks_the_whole_skill():
    theirs = BASE.replace("Intro.", "Intro.\n\n<!-- trace2skill:locked -->")
    ours = BASE.replace("do c.", "do c now.")
    merged, clashes = merge3(BASE, ours, theirs)
    assert merged == theirs and [c.where for c in clashes] == ["document"]


def test_bot_rule_in_a_section_the_human_deleted_is_a_clash():
    ours = BASE.replace(rule("c", "do c."), rule("c", "do c.") + "\n" + rule("e", "do e."))
    theirs = doc(section("Gotchas", rule("a", "do a."), rule("b", "do b.")))
    merged, clashes = merge3(BASE, ours, theirs)
    assert merged == theirs
    assert "r-e" in {c.rule_id for c in clashes}


def test_prose_changed_on_both_sides_keeps_human_prose():
    ours = BASE.replace("Intro.", "Intro by the bot.")
    theirs = BASE.replace("Intro.", "Intro by a human.")
    merged, clashes = merge3(BASE, ours, theirs)
    assert merged == theirs
    assert [(c.kind, c.where, c.ours) for c in clashes] == [("text", "# Demo", "Intro by the bot.")]


def test_insertions_at_the_same_spot_are_both_kept():
    ours = BASE.replace(rule("b", "do b."), rule("b", "do b.") + "\n" + rule("d", "do d."))
    theirs = BASE.replace(rule("b", "do b."), rule("b", "do b.") + "\n- a human bullet")
    merged, clashes = merge3(BASE, ours, theirs)
    assert clashes == []
    assert "- a human bullet" in merged and "rule:r-d" in merged


def test_version_bump_and_human_description_edit_merge():
    ours = BASE.replace('"1.0.0"', '"1.1.0"')
    theirs = BASE.replace("Demo skill.", "Demo skill, for demos.")
    merged, clashes = merge3(BASE, ours, theirs)
    assert clashes == []
    assert '"1.1.0"' in merged and "Demo skill, for demos." in merged


def test_merge_without_base_keeps_human_text_and_adds_bot_rules():
    ours = BASE.replace(rule("c", "do c."), rule("c", "do c.") + "\n" + rule("e", "do e."))
    merged, clashes = merge3(None, ours, BASE)
    assert "rule:r-e" in merged and merged.count("rule:r-c") == 1


def test_heading_inside_a_code_fence_is_not_a_section():
    base = doc(section("Gotchas", "```", "## not a heading", "```", rule("a", "do a.")))
    ours = base.replace("do a.", "do a now.")
    merged, clashes = merge3(base, ours, base)
    assert merged == ours and clashes == []


def test_merge_text_keeps_human_side_of_a_conflict():
    merged, clashes = merge_text("a\nb\nc\n", "a\nB-bot\nc\n", "a\nB-human\nc\n", "CHANGELOG.md")
    assert merged == "a\nB-human\nc\n" and clashes[0].ours == "B-bot"


def test_merge_json_merges_keys_and_keeps_human_values():
    base = json.dumps({"r-a": {"title": "A"}, "r-b": {"title": "B"}})
    ours = json.dumps({"r-a": {"title": "A2"}, "r-b": {"title": "B"}, "r-c": {"title": "C"}})
    theirs = json.dumps({"r-a": {"title": "A-human"}})
    merged, clashes = merge_json(base, ours, theirs, "provenance.json")
    assert json.loads(merged) == {"r-a": {"title": "A-human"}, "r-c": {"title": "C"}}
    assert [c.where for c in clashes] == ["provenance.json:r-a:title"]


_LINES = st.sampled_from(["", "Some prose.", "More prose.", "## Gotchas", "## Procedures", "### Detail", "- a plain bullet"])


@st.composite
def _docs(draw):
    lines = draw(st.lists(_LINES, max_size=12))
    rules = draw(st.lists(st.integers(0, 20), unique=True, max_size=6))
    for rid in rules:
        lines.insert(draw(st.integers(0, len(lines))), rule(f"{rid:02d}", f"text {draw(st.integers(0, 2))}"))
    return FRONT + "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(_docs(), _docs())
def test_one_sided_changes_come_through_unchanged(base, other):
    assert merge3(base, base, other) == (other, [])
    assert merge3(base, other, base) == (other, [])
    assert merge3(base, other, other) == (other, [])


@settings(max_examples=150, deadline=None)
@given(_docs(), _docs(), _docs())
def test_human_rule_edits_and_deletions_always_survive(base, ours, theirs):
    merged, _ = merge3(base, ours, theirs)
    before, human, after = rule_lines(base), rule_lines(theirs), rule_lines(merged)
    for rid, line in human.items():
        if before.get(rid) != line:
            assert after.get(rid) == line
    for rid in before:
        if rid not in human:
            assert rid not in after
    assert merged.count("<!-- rule:") == len(after)
