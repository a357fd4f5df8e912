"""The section tree: exact round trips, heading detection, typed edits and their refusals."""

from __future__ import annotations

from pathlib import Path

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace2skill.errors import EditError
from trace2skill.skillfmt.sections import (LOCK_MARKER, Edit, apply_edit, code_mask, find_section, heading_problem, is_locked,
                                           item_locations, item_text, items, locked_at, parse, render, walk)
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
        Edit("add_rule", section=("Skill", "Gotchas"), key="r-new", text="- **New rule.** Do the new thing."),
        Edit("replace_rule", key="r-old", text="- **Old rule.** Do it better."),
        Edit("add_rule", section=("Skill", "Procedures"), key="r-proc", text="- **Proc.** Run it."),
        Edit("remove_rule", key="r-proc"),
    ])
    out = render(edited["SKILL.md"])
    assert "- **New rule.** Do the new thing. <!-- rule:r-new -->\n" in out
    assert "Do it better. <!-- rule:r-old -->" in out and "Do the old thing" not in out
    assert "r-proc" not in out
    kept = [line for line in DOC.splitlines(keepends=True) if "rule:r-old" not in line]
    assert _is_subsequence(kept, out.splitlines(keepends=True))


def test_new_rule_goes_after_the_last_managed_line_and_a_paragraph_gets_a_blank_line():
    ws = _apply(_ws("# S\n\nA paragraph.\n"), [Edit("add_rule", section=("S",), key="r-1", text="- one"),
                                                 Edit("add_rule", section=("S",), key="r-2", text="- two")])
    assert render(ws["SKILL.md"]) == "# S\n\nA paragraph.\n\n- one <!-- rule:r-1 -->\n- two <!-- rule:r-2 -->\n"


def test_wrapped_bullet_is_replaced_as_one_block_keeping_its_indent():
    text = "# S\n\nIntro.\n  - **Wrapped.** First line\n    second line <!-- rule:r-w -->\nAfter.\n"
    ws = _apply(_ws(text), [Edit("replace_rule", key="r-w", text="- **Wrapped.** One line now")])
    assert render(ws["SKILL.md"]) == "# S\n\nIntro.\n  - **Wrapped.** One line now <!-- rule:r-w -->\nAfter.\n"
    assert item_text(ws, "rule:r-w") == "- **Wrapped.** One line now"


def test_reorder_keeps_hand_written_lines_in_their_slots():
    text = "# S\n\n- b <!-- rule:r-b -->\n- hand\n- a <!-- rule:r-a -->\n"
    ws = _apply(_ws(text), [Edit("reorder_rules", section=("S",), order=("r-a", "r-b"))])
    assert render(ws["SKILL.md"]) == "# S\n\n- a <!-- rule:r-a -->\n- hand\n- b <!-- rule:r-b -->\n"


def test_sections_links_and_reference_files():
    ws = _apply(_ws(), [
        Edit("add_section", section=("Skill",), text="Facts"),
        Edit("create_file", file="references/more.md", text="More lessons", intro="Lower-ranked rules."),
        Edit("add_section", file="references/more.md", section=("More lessons",), text="Gotchas"),
        Edit("move_to_reference", file="references/more.md", section=("More lessons", "Gotchas"), key="r-old"),
        Edit("set_link", section=("Skill", "Facts"), key="references/more.md", text="- [More](references/more.md)"),
        Edit("set_link", section=("Skill", "Facts"), key="references/more.md", text="- [More lessons](references/more.md)"),
    ])
    skill = render(ws["SKILL.md"])
    assert skill.endswith("## Facts\n\n- [More lessons](references/more.md) <!-- link:references/more.md -->\n")
    assert "r-old" not in skill
    assert render(ws["references/more.md"]) == (
        "# More lessons\n\nLower-ranked rules.\n\n## Gotchas\n\n- **Old rule.** Do the old thing. <!-- rule:r-old -->\n")
    ws = _apply(ws, [Edit("remove_rule", key="r-old"),
                     Edit("remove_section", file="references/more.md", section=("More lessons", "Gotchas")),
                     Edit("delete_file", file="references/more.md"), Edit("remove_link", key="references/more.md")])
    assert "references/more.md" not in ws
    assert item_locations(ws).keys() == {"rule:r-pinned"}


def test_new_section_after_a_locked_last_line_without_newline_is_not_glued_on():
    text = "# S\n\n## Locked\n" + LOCK_MARKER + "\n- keep"
    ws = _apply(_ws(text), [Edit("add_section", section=("S",), text="Gotchas")])
    assert render(ws["SKILL.md"]) == text + "\n## Gotchas\n\n"
    assert [t for _, t in _titles(render(ws["SKILL.md"]))] == ["S", "Locked", "Gotchas"]


# ------------------------------------------------------------------------------------------
# Edits that must raise


@pytest.mark.parametrize("edit", [
    Edit("replace_rule", key="r-missing", text="- x"),
    Edit("remove_rule", key="r-missing"),
    Edit("add_rule", section=("Skill", "Nope"), key="r-x", text="- x"),
    Edit("add_rule", section=("Skill", "Gotchas"), key="r-old", text="- duplicate id"),
    Edit("add_rule", section=("Skill", "Gotchas"), key="bad id!", text="- x"),
    Edit("add_rule", section=("Skill", "Gotchas"), key="r-x", text="- two\nlines"),
    Edit("add_rule", section=("Skill", "Gotchas"), key="r-x", text="- sneaky <!-- rule:r-y -->"),
    Edit("reorder_rules", section=("Skill", "Gotchas"), order=("r-old", "r-missing")),
    Edit("move_to_reference", file="SKILL.md", section=("Skill",), key="r-old"),
    Edit("move_to_reference", file="references/absent.md", section=("X",), key="r-old"),
    Edit("remove_section", section=("Skill", "Gotchas")),
    Edit("delete_file", file="SKILL.md"),
    Edit("create_file", file="SKILL.md", text="Again"),
    Edit("remove_link", key="references/none.md"),
])
def test_unapplicable_edit_raises(edit):
    with pytest.raises(EditError):
        _apply(_ws(), [edit])


@pytest.mark.parametrize("edit", [
    Edit("replace_rule", key="r-pinned", text="- changed"),
    Edit("remove_rule", key="r-pinned"),
    Edit("add_rule", section=("Skill", "Locked part"), key="r-x", text="- x"),
    Edit("add_rule", section=("Skill", "Locked part", "Child of locked"), key="r-x", text="- x"),
    Edit("add_section", section=("Skill", "Locked part"), text="Inside the lock"),
    Edit("move_to_reference", file="references/more.md", section=("More",), key="r-pinned"),
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
        _apply(ws, [Edit("remove_rule", key="r-a")])


@pytest.mark.parametrize("title", ["New Section", "Misc", "Section 1", "Untitled", "", "  ", "TODO", "Section 2.1", "42"])
def test_generic_headings_are_rejected(title):
    assert heading_problem(title) is not None
    with pytest.raises(EditError):
        _apply(_ws(), [Edit("add_section", section=("Skill",), text=title)])


@pytest.mark.parametrize("title", ["Gotchas", "Pytest timeouts", "决策树", "Section on retries", "Phase 1: Research"])
def test_meaningful_headings_pass(title):
    assert heading_problem(title) is None


def test_duplicate_sibling_and_unstable_headings_are_rejected():
    with pytest.raises(EditError, match="already has"):
        _apply(_ws(), [Edit("add_section", section=("Skill",), text="gotchas")])
    with pytest.raises(EditError, match="nest"):
        _apply(_ws(), [Edit("add_section", section=("Skill",), text="Tips #")])


def test_duplicate_rule_markers_are_an_error_not_a_guess():
    ws = _ws("# S\n\n- a <!-- rule:r-a -->\n- a again <!-- rule:r-a -->\n")
    with pytest.raises(EditError, match="appears 2 times"):
        _apply(ws, [Edit("replace_rule", key="r-a", text="- b")])


def test_markers_inside_code_are_not_rules():
    ws = _ws("# S\n\n```\n- example <!-- rule:r-doc -->\n```\n")
    assert item_locations(ws) == {}
    assert find_section(ws["SKILL.md"], ("S",)).title == "S"


# ------------------------------------------------------------------------------------------
# The index the edits keep (sections' scans, files' key maps) agrees with a fresh reading


def _fresh_items(body: list[str]) -> list[tuple[str, int]]:
    """Managed lines read from scratch: a marker at the end of a line outside fenced code."""
    marker = re.compile(r"<!--\s*(rule|link):([^\s>]+?)\s*-->\s*$")
    return [(f"{m.group(1)}:{m.group(2)}", n) for n, (line, code) in enumerate(zip(body, code_mask(body)))
            if not code and (m := marker.search(line))]


def _assert_index_matches_a_fresh_reading(ws: dict) -> None:
    fresh_places: dict = {}
    for file in sorted(ws):
        for path, section in walk(ws[file]):
            fresh = _fresh_items(section.body)
            assert list(items(section)) == fresh, (file, path)
            mask = code_mask(section.body)
            assert is_locked(section) == any(line.strip() == LOCK_MARKER and not code for line, code in zip(section.body, mask))
            for key, _ in fresh:
                fresh_places.setdefault(key, []).append((file, path))
    assert item_locations(ws) == fresh_places
    for key, places in fresh_places.items():
        if len(places) == 1:
            item_text(ws, key)  # found where it is, without raising
        else:
            with pytest.raises(EditError, match=f"appears {len(places)} times"):
                item_text(ws, key)


SECTION_TEXTS = ["- plain bullet", "~~~ opens a fence", "```", "# looks like a heading", "  - indented", "text"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS + ["\n## Gotchas\n", "\n- r <!-- rule:r-1 -->\n", "\n~~~\n"]), max_size=30)
       .map("".join), st.data())
def test_index_kept_by_edits_matches_a_fresh_reading(text, data):
    """Random edits (fences, locks, duplicate markers, wrapped bullets) on random documents:
    after each one, every section's managed lines, lock and the files' key map are what a
    reading from scratch finds; an edit that raises leaves them consistent too."""
    ws = {"SKILL.md": parse(text), "references/more.md": parse("# More\n\n## Kept\n\n- a <!-- rule:r-9 -->\n")}
    keys = ["r-1", "r-2", "r-3", "r-9", "x.md"]
    for _ in range(data.draw(st.integers(1, 12))):
        file = data.draw(st.sampled_from(sorted(ws)))
        paths = [path for path, _ in walk(ws[file])]
        kind = data.draw(st.sampled_from(["add_rule", "replace_rule", "remove_rule", "reorder_rules", "move_to_reference",
                                          "add_section", "set_link", "remove_link"]))
        if kind == "move_to_reference":
            file, paths = "references/more.md", [("More",), ("More", "Kept")]
        text = data.draw(st.sampled_from(SECTION_TEXTS)) if kind != "add_section" else "Pitfalls found"
        edit = Edit(kind, file, data.draw(st.sampled_from(paths)), data.draw(st.sampled_from(keys)), text,
                    order=tuple(data.draw(st.permutations(["r-1", "r-2", "r-9"]))))
        try:
            apply_edit(ws, edit)
        except EditError:
            pass
        _assert_index_matches_a_fresh_reading(ws)


def _place(count: int) -> float:
    """CPU seconds to add `count` rules to one section of a file that holds as many already."""
    ws = {"references/low.md": parse("# Low\n\n## Facts\n\n" + "".join(f"- old {n} <!-- rule:o-{n} -->\n" for n in range(count)))}
    started = time.process_time()
    for n in range(count):
        apply_edit(ws, Edit("add_rule", "references/low.md", ("Low", "Facts"), f"r-{n}", f"- **Rule {n}.** Do {n}."))
        item_text(ws, f"rule:r-{n}")
    return time.process_time() - started


def test_placing_rules_is_linear_not_quadratic():
    """Placing n rules rescanned every section once per rule (O(n^2)): four times the rules
    took sixteen times the CPU. With the index it takes about four times (8 allowed for noise)."""
    small, large = min(_place(300) for _ in range(2)), min(_place(1200) for _ in range(2))
    assert large < 8 * small, (small, large)


def _is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(line == candidate for candidate in it) for line in needles)


def _apply(workspace, edits):
    """Apply `edits` in order, in place, the way the layout planner does; returns the workspace."""
    for edit in edits:
        apply_edit(workspace, edit)
    return workspace
