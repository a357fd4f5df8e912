"""The section tree: exact round trips, heading detection, typed edits and their refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace2skill.errors import EditError
from trace2skill.skillfmt.sections import (LOCK_MARKER, AddRule, AddSection, CreateFile, DeleteFile, MoveToReference,
                                  RemoveLink, RemoveRule, RemoveSection, ReorderRules, ReplaceRule, SetLink,
                                  apply_edit, find_section, heading_problem, item_locations, item_text, locked_at,
                                  parse, render, walk)
from trace2skill.skillfmt.frontmatter import split_frontmatter

REAL_SKILL = Path(__file__).parent / "data" / "skills" / "brand-guidelines" / "SKILL.md"

FRAGMENTS = ["#", "## ", "### Title", " ", "\n", "\r\n", "\r", "```", "~~~", "```py", "    ", "- item", "text",
             "<!-- rule:r-1 -->", "<!-- link:x.md -->", LOCK_MARKER, "é", "\t", "* ", "# closing #", "1. ", "---"]

DOC = """\
Preamble line.

# Skill

Intro.

## Gotchas

- Hand-written bullet.
- **Old rule.** Do the old thing. <!-- rule:r-old -->

## Locked part
<!-- trace2skill:locked -->
- Never touch this.
- **Pinned.** Kept. <!-- rule:r-pinned -->

### Child of locked

Text.

## Procedures

1. Step one.
"""


def _ws(text: str = DOC) -> dict:
    return {"SKILL.md": parse(text)}


def _titles(text: str) -> list[tuple[int, str]]:
    return [(section.level, section.title) for path, section in walk(parse(text)) if path]


# ------------------------------------------------------------------------------------------
# Round trip and parsing


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_round_trip_markdown_like_text(text):
    assert render(parse(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_text(text):
    assert render(parse(text)) == text


def test_round_trip_real_skill_and_code_fences_hide_headings():
    text = REAL_SKILL.read_text(encoding="utf-8")
    assert render(parse(text)) == text
    _, body = split_frontmatter(text)
    titles = [title for _, title in _titles(body)]
    assert "Brand colors as RGBColor objects" not in titles
    assert "Anthropic Brand Styling" in titles and "Dark Mode Guidance" in titles


def test_heading_levels_nest_and_closing_hashes_are_stripped():
    text = "# A #\n## B\n#### C\n## D ##\n#nospace\n    # indented code\n# E\n"
    assert _titles(text) == [(1, "A"), (2, "B"), (4, "C"), (2, "D"), (1, "E")]
    root = parse(text)
    assert [c.title for c in root.children[0].children] == ["B", "D"]
    assert root.children[0].children[1].body == ["#nospace\n", "    # indented code\n"]


def test_unclosed_fence_swallows_later_headings():
    text = "# A\n~~~\n# not a heading\n```\n# still code\n"
    assert _titles(text) == [(1, "A")]


# ------------------------------------------------------------------------------------------
# Edits that apply


def test_add_replace_remove_rule_keep_hand_written_lines():
    edited = _apply(_ws(), [
        AddRule(("Skill", "Gotchas"), "r-new", "- **New rule.** Do the new thing."),
        ReplaceRule("r-old", "- **Old rule.** Do it better."),
        AddRule(("Skill", "Procedures"), "r-proc", "- **Proc.** Run it."),
        RemoveRule("r-proc"),
    ])
    out = render(edited["SKILL.md"])
    assert "- **New rule.** Do the new thing. <!-- rule:r-new -->\n" in out
    assert "Do it better. <!-- rule:r-old -->" in out and "Do the old thing" not in out
    assert "r-proc" not in out
    kept = [line for line in DOC.splitlines(keepends=True) if "rule:r-old" not in line]
    assert _is_subsequence(kept, out.splitlines(keepends=True))


def test_new_rule_goes_after_the_last_managed_line_and_a_paragraph_gets_a_blank_line():
    ws = _apply(_ws("# S\n\nA paragraph.\n"), [AddRule(("S",), "r-1", "- one"), AddRule(("S",), "r-2", "- two")])
    assert render(ws["SKILL.md"]) == "# S\n\nA paragraph.\n\n- one <!-- rule:r-1 -->\n- two <!-- rule:r-2 -->\n"


def test_wrapped_bullet_is_replaced_as_one_block_keeping_its_indent():
    text = "# S\n\nIntro.\n  - **Wrapped.** First line\n    second line <!-- rule:r-w -->\nAfter.\n"
    ws = _apply(_ws(text), [ReplaceRule("r-w", "- **Wrapped.** One line now")])
    assert render(ws["SKILL.md"]) == "# S\n\nIntro.\n  - **Wrapped.** One line now <!-- rule:r-w -->\nAfter.\n"
    assert item_text(ws, "rule:r-w") == "- **Wrapped.** One line now"


def test_reorder_keeps_hand_written_lines_in_their_slots():
    text = "# S\n\n- b <!-- rule:r-b -->\n- hand\n- a <!-- rule:r-a -->\n"
    ws = _apply(_ws(text), [ReorderRules(("S",), ("r-a", "r-b"))])
    assert render(ws["SKILL.md"]) == "# S\n\n- a <!-- rule:r-a -->\n- hand\n- b <!-- rule:r-b -->\n"


def test_sections_links_and_reference_files():
    ws = _apply(_ws(), [
        AddSection(("Skill",), "Facts"),
        CreateFile("references/more.md", "More lessons", "Lower-ranked rules."),
        AddSection(("More lessons",), "Gotchas", file="references/more.md"),
        MoveToReference("r-old", "references/more.md", ("More lessons", "Gotchas")),
        SetLink(("Skill", "Facts"), "references/more.md", "- [More](references/more.md)"),
        SetLink(("Skill", "Facts"), "references/more.md", "- [More lessons](references/more.md)"),
    ])
    skill = render(ws["SKILL.md"])
    assert skill.endswith("## Facts\n\n- [More lessons](references/more.md) <!-- link:references/more.md -->\n")
    assert "r-old" not in skill
    assert render(ws["references/more.md"]) == (
        "# More lessons\n\nLower-ranked rules.\n\n## Gotchas\n\n- **Old rule.** Do the old thing. <!-- rule:r-old -->\n")
    ws = _apply(ws, [RemoveRule("r-old"), RemoveSection(("More lessons", "Gotchas"), "references/more.md"),
                          DeleteFile("references/more.md"), RemoveLink("references/more.md")])
    assert "references/more.md" not in ws
    assert item_locations(ws).keys() == {"rule:r-pinned"}


def test_new_section_after_a_locked_last_line_without_newline_is_not_glued_on():
    text = "# S\n\n## Locked\n" + LOCK_MARKER + "\n- keep"
    ws = _apply(_ws(text), [AddSection(("S",), "Gotchas")])
    assert render(ws["SKILL.md"]) == text + "\n## Gotchas\n\n"
    assert [t for _, t in _titles(render(ws["SKILL.md"]))] == ["S", "Locked", "Gotchas"]


# ------------------------------------------------------------------------------------------
# Edits that must raise


@pytest.mark.parametrize("edit", [
    ReplaceRule("r-missing", "- x"),
    RemoveRule("r-missing"),
    AddRule(("Skill", "Nope"), "r-x", "- x"),
    AddRule(("Skill", "Gotchas"), "r-old", "- duplicate id"),
    AddRule(("Skill", "Gotchas"), "bad id!", "- x"),
    AddRule(("Skill", "Gotchas"), "r-x", "- two\nlines"),
    AddRule(("Skill", "Gotchas"), "r-x", "- sneaky <!-- rule:r-y -->"),
    ReorderRules(("Skill", "Gotchas"), ("r-old", "r-missing")),
    MoveToReference("r-old", "SKILL.md", ("Skill",)),
    MoveToReference("r-old", "references/absent.md", ("X",)),
    RemoveSection(("Skill", "Gotchas")),
    DeleteFile("SKILL.md"),
    CreateFile("SKILL.md", "Again"),
    RemoveLink("references/none.md"),
])
def test_unapplicable_edit_raises(edit):
    with pytest.raises(EditError):
        _apply(_ws(), [edit])


@pytest.mark.parametrize("edit", [
    ReplaceRule("r-pinned", "- changed"),
    RemoveRule("r-pinned"),
    AddRule(("Skill", "Locked part"), "r-x", "- x"),
    AddRule(("Skill", "Locked part", "Child of locked"), "r-x", "- x"),
    AddSection(("Skill", "Locked part"), "Inside the lock"),
    MoveToReference("r-pinned", "references/more.md", ("More",)),
])
def test_edits_touching_a_locked_section_raise(edit):
    ws = _ws()
    ws["references/more.md"] = parse("# More\n")
    with pytest.raises(EditError, match="locked|not found"):
        _apply(ws, [edit])


def test_lock_in_the_preamble_locks_the_whole_file():
    ws = _ws(LOCK_MARKER + "\n# S\n\n- a <!-- rule:r-a -->\n")
    assert locked_at(ws["SKILL.md"], ("S",))
    with pytest.raises(EditError, match="locked"):
        _apply(ws, [RemoveRule("r-a")])


@pytest.mark.parametrize("title", ["New Section", "Misc", "Section 1", "Untitled", "", "  ", "TODO", "Section 2.1", "42"])
def test_generic_headings_are_rejected(title):
    assert heading_problem(title) is not None
    with pytest.raises(EditError):
        _apply(_ws(), [AddSection(("Skill",), title)])


@pytest.mark.parametrize("title", ["Gotchas", "Pytest timeouts", "决策树", "Section on retries", "Phase 1: Research"])
def test_meaningful_headings_pass(title):
    assert heading_problem(title) is None


def test_duplicate_sibling_and_unstable_headings_are_rejected():
    with pytest.raises(EditError, match="already has"):
        _apply(_ws(), [AddSection(("Skill",), "gotchas")])
    with pytest.raises(EditError, match="nest"):
        _apply(_ws(), [AddSection(("Skill",), "Tips #")])


def test_duplicate_rule_markers_are_an_error_not_a_guess():
    ws = _ws("# S\n\n- a <!-- rule:r-a -->\n- a again <!-- rule:r-a -->\n")
    with pytest.raises(EditError, match="appears 2 times"):
        _apply(ws, [ReplaceRule("r-a", "- b")])


def test_markers_inside_code_are_not_rules():
    ws = _ws("# S\n\n```\n- example <!-- rule:r-doc -->\n```\n")
    assert item_locations(ws) == {}
    assert find_section(ws["SKILL.md"], ("S",)).title == "S"


def _is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(line == candidate for candidate in it) for line in needles)


def _apply(workspace, edits):
    """Apply `edits` in order, in place, the way the layout planner does; returns the workspace."""
    for edit in edits:
        apply_edit(workspace, edit)
    return workspace
