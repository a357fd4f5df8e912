"""Where each rule goes: typed edits against the skill's section trees, within size budgets.

Given where every managed rule should live (`skill`, `more`, `low`), `plan_layout` emits the
edits that move the existing files there, applying each edit as it is emitted so later
decisions see the current tree: remove or move what changed place, rewrite changed bullets in
place, add new ones (kinds in a fixed order, rules by rank), restore rank order inside each
section, link the reference files from SKILL.md, drop sections and files trace2skill created
that are now empty, and give long reference files a table of contents. `fit_layout` then moves
the least-supported rules out of SKILL.md into `references/more-lessons.md` until the body fits
its budgets.

Routing around locks: a rule inside a locked section is left exactly as it is. When the section
a kind of rule would go to (say `## Gotchas`) is locked, new rules of that kind go to a sibling
section `Gotchas learned from traces` instead.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .skillfmt.sections import (SKILL_FILE, Edit, Section, SectionPath, Workspace, apply_edit, find_section, item_locations,
                                item_text, items, locked_at, render, slug, split_lines, walk)
from .skill import TOC_AFTER_LINES, body_overage
from .types import LessonKind

Placement = Literal["skill", "more", "low"]

KIND_ORDER: tuple[LessonKind, ...] = ("pitfall", "procedure", "fact", "heuristic")
KIND_TITLES = {"pitfall": "Gotchas", "procedure": "Procedures", "fact": "Facts", "heuristic": "Heuristics"}
_KIND_SYNONYMS = {
    "pitfall": {"gotchas", "pitfalls", "common pitfalls", "common mistakes", "known issues"},
    "procedure": {"procedures", "workflow", "workflows", "working procedures"},
    "fact": {"facts", "environment facts", "background"},
    "heuristic": {"heuristics", "tips", "rules of thumb"},
}
LOCKED_SUFFIX = " learned from traces"
LINKS_TITLE = "Reference files"


@dataclass(frozen=True)
class ReferenceFile:
    path: str
    title: str
    intro: str
    link: str


REFERENCE_FILES: dict[Placement, ReferenceFile] = {
    "more": ReferenceFile(
        "references/more-lessons.md", "More lessons",
        "Lower-ranked rules, moved out of SKILL.md to keep it short. Each rule ends with how many "
        "failed and successful runs are its evidence.",
        "lower-ranked rules; read them when the rules in this file do not cover the situation."),
    "low": ReferenceFile(
        "references/low-support-lessons.md", "Low-support lessons",
        "Rules seen in too few runs to enter SKILL.md. Treat them as hints to check, not as rules.",
        "rules seen in too few runs to trust yet; hints, not rules."),
}


@dataclass(frozen=True)
class Rule:
    """What the planner needs to know about one managed rule."""

    id: str
    kind: LessonKind
    text: str
    """The bullet, without its marker."""


@dataclass
class Layout:
    workspace: Workspace
    edits: list[Edit] = field(default_factory=list)
    sections: set[tuple[str, ...]] = field(default_factory=set)
    """`(file, heading, ...)` of sections trace2skill created that still exist."""
    files: set[str] = field(default_factory=set)
    """Reference files trace2skill created that still exist."""

    def do(self, edit: Edit) -> None:
        apply_edit(self.workspace, edit)
        self.edits.append(edit)


def fit_layout(workspace: Workspace, rules: Mapping[str, Rule], targets: dict[str, Placement], ranked: list[str],
               managed: set[str], sections: set[tuple[str, ...]], files: set[str]) -> tuple[Layout, dict[str, Placement]]:
    """`plan_layout`, moving the lowest-ranked SKILL.md rules to `more` until the body fits.

    Returns the layout and the final placements. When nothing movable is left (hand-written
    text alone is over budget) the over-budget layout is returned and validation reports it.
    """
    targets = dict(targets)
    while True:
        layout = plan_layout(workspace, rules, targets, ranked, managed, sections, files)
        over_lines, over_tokens = body_overage(render(layout.workspace[SKILL_FILE]))
        movable = [rid for rid in reversed(ranked) if targets.get(rid) == "skill"]
        if not (over_lines or over_tokens) or not movable:
            return layout, targets
        for rid in _to_demote(movable, rules, over_lines, over_tokens, first="more" not in targets.values()):
            targets[rid] = "more"


def _to_demote(movable: list[str], rules: Mapping[str, Rule], over_lines: int, over_tokens: int, first: bool) -> list[str]:
    """Enough of the least-supported rules to cover the overage (plus the link section, once)."""
    slack_lines, slack_tokens = (4, 60) if first else (0, 0)
    chosen, lines, tokens = [], 0, 0
    for rid in movable:
        if lines >= over_lines + slack_lines and tokens >= over_tokens + slack_tokens:
            break
        chosen.append(rid)
        lines, tokens = lines + 1, tokens + (len(rules[rid].text) + 24) // 4
    return chosen


def plan_layout(workspace: Workspace, rules: Mapping[str, Rule], targets: Mapping[str, Placement], ranked: list[str],
                managed: set[str], sections: set[tuple[str, ...]], files: set[str]) -> Layout:
    """Edits that put every managed rule where `targets` says (absent from `targets`: remove).

    Args:
        workspace: the parsed SKILL.md and reference files (not modified).
        rules: kind and bullet text of every rule in `targets`.
        targets: rule id -> placement, for rules to write.
        ranked: every rule id in rank order (best first).
        managed: rule ids trace2skill may edit; markers of other ids, and rules in locked
            sections, are left alone.
        sections, files: what earlier runs created (from provenance.json).
    """
    layout = Layout(copy.deepcopy(dict(workspace)), sections=set(sections), files=set(files))
    _place_existing(layout, rules, targets, ranked, managed)
    _add_missing(layout, rules, targets, ranked)
    _reorder(layout, ranked, managed)
    _link_references(layout)
    _drop_empty_sections(layout)
    for reference in REFERENCE_FILES.values():
        _table_of_contents(layout, reference.path)
    return layout


def rule_locations(workspace: Workspace) -> dict[str, tuple[str, SectionPath]]:
    """Rule id -> (file, section path) for every rule marker that occurs exactly once."""
    return {key[5:]: places[0] for key, places in item_locations(workspace).items()
            if key.startswith("rule:") and len(places) == 1}


def pinned_rules(workspace: Workspace) -> set[str]:
    """Rule ids sitting in locked sections (never edited)."""
    return {rid for rid, (file, path) in rule_locations(workspace).items() if locked_at(workspace[file], path)}


def _target_file(placement: Placement) -> str:
    return SKILL_FILE if placement == "skill" else REFERENCE_FILES[placement].path


def _place_existing(layout: Layout, rules: Mapping[str, Rule], targets: Mapping[str, Placement], ranked: list[str],
                    managed: set[str]) -> None:
    """Remove, move or rewrite rules already written; kinds in their fixed order and rules by
    rank, so sections a move creates appear in the same order as in a fresh build."""
    ours = {SKILL_FILE} | {ref.path for ref in REFERENCE_FILES.values()}
    pinned = pinned_rules(layout.workspace)
    order = {rid: (KIND_ORDER.index(rules[rid].kind), index) for index, rid in enumerate(ranked) if rid in rules}
    located = rule_locations(layout.workspace)
    for rid in sorted(located, key=lambda r: (r in order, order.get(r, (0, 0)), r)):
        file = located[rid][0]
        if rid not in managed or rid in pinned:
            continue
        if rid not in targets:
            layout.do(Edit("remove_rule", key=rid))
            continue
        wanted = _target_file(targets[rid])
        if file != wanted and file in ours:
            if wanted == SKILL_FILE:
                layout.do(Edit("remove_rule", key=rid))
                continue
            layout.do(Edit("move_to_reference", wanted, _ensure_kind_section(layout, wanted, rules[rid].kind), rid))
        if item_text(layout.workspace, f"rule:{rid}") != rules[rid].text:
            layout.do(Edit("replace_rule", key=rid, text=rules[rid].text))


def _add_missing(layout: Layout, rules: Mapping[str, Rule], targets: Mapping[str, Placement], ranked: list[str]) -> None:
    present = rule_locations(layout.workspace)
    for placement in ("skill", "more", "low"):
        file = _target_file(placement)
        for kind in KIND_ORDER:
            for rid in ranked:
                if targets.get(rid) == placement and rules[rid].kind == kind and rid not in present:
                    path = _ensure_kind_section(layout, file, kind)
                    layout.do(Edit("add_rule", file, path, rid, rules[rid].text))


def _reorder(layout: Layout, ranked: list[str], managed: set[str]) -> None:
    rank = {rid: index for index, rid in enumerate(ranked)}
    for file in sorted(layout.workspace):
        root = layout.workspace[file]
        for path, section in list(walk(root)):
            current = [key[5:] for key, _ in items(section) if key.startswith("rule:") and key[5:] in managed and key[5:] in rank]
            wanted = sorted(current, key=rank.__getitem__)
            if len(current) > 1 and current != wanted and not locked_at(root, path):
                layout.do(Edit("reorder_rules", file, path, order=tuple(wanted)))


def _container(root: Section) -> SectionPath:
    """Where top-level sections go: under the document's single level-1 heading, if it has one."""
    if len(root.children) == 1 and root.children[0].level == 1 and not locked_at(root, (root.children[0].title,)):
        return (root.children[0].title,)
    return ()


def _ensure_file(layout: Layout, file: str) -> None:
    if file in layout.workspace:
        return
    reference = next(ref for ref in REFERENCE_FILES.values() if ref.path == file)
    layout.do(Edit("create_file", file, text=reference.title, intro=reference.intro))
    layout.files.add(file)


def _ensure_section(layout: Layout, file: str, title: str, synonyms: set[str] = frozenset()) -> SectionPath:
    """The path of an unlocked section named `title` under the container, creating it if needed;
    when the matching section is locked, a sibling `<title> learned from traces` is used."""
    _ensure_file(layout, file)
    root = layout.workspace[file]
    container = _container(root)
    parent = find_section(root, container)
    for candidate in (title, title + LOCKED_SUFFIX):
        names = {candidate.casefold()} | (set(synonyms) if candidate == title else set())
        match = next((c for c in parent.children if " ".join(c.title.casefold().split()) in names), None)
        if match is None:
            layout.do(Edit("add_section", file, container, text=candidate))
            layout.sections.add((file, *container, candidate))
            return container + (candidate,)
        if not locked_at(root, container + (match.title,)):
            return container + (match.title,)
    raise AssertionError("unreachable: the fallback title is never locked and missing at once")


def _ensure_kind_section(layout: Layout, file: str, kind: LessonKind) -> SectionPath:
    synonyms = _KIND_SYNONYMS[kind] if file == SKILL_FILE else set()
    return _ensure_section(layout, file, KIND_TITLES[kind], synonyms)


def _link_references(layout: Layout) -> None:
    links = {key[5:] for key in item_locations({SKILL_FILE: layout.workspace[SKILL_FILE]}) if key.startswith("link:")}
    for reference in REFERENCE_FILES.values():
        root = layout.workspace.get(reference.path)
        has_rules = root is not None and any(k.startswith("rule:") for k in item_locations({reference.path: root}))
        text = f"- [{reference.title}]({reference.path}): {reference.link}"
        if has_rules:
            section = _ensure_section(layout, SKILL_FILE, LINKS_TITLE)
            if reference.path not in links or item_text(layout.workspace, f"link:{reference.path}", SKILL_FILE) != text:
                layout.do(Edit("set_link", SKILL_FILE, section, reference.path, text))
            continue
        if reference.path in links:
            layout.do(Edit("remove_link", key=reference.path))
        if root is not None and reference.path in layout.files:
            layout.do(Edit("delete_file", reference.path))
            layout.files.discard(reference.path)


def _drop_empty_sections(layout: Layout) -> None:
    for created in sorted(layout.sections, key=len, reverse=True):
        file, path = created[0], tuple(created[1:])
        root = layout.workspace.get(file)
        section = _find(root, path) if root is not None else None
        if section is None:
            layout.sections.discard(created)
        elif not section.children and not any(line.strip() for line in section.body) and not locked_at(root, path):
            layout.do(Edit("remove_section", file, path))
            layout.sections.discard(created)


def _find(root: Section, path: SectionPath) -> Section | None:
    node = root
    for title in path:
        matches = [child for child in node.children if child.title == title]
        if len(matches) != 1:
            return None
        node = matches[0]
    return node


def _table_of_contents(layout: Layout, file: str) -> None:
    """Long reference files start with links to their sections; short ones carry none."""
    root = layout.workspace.get(file)
    if root is None:
        return
    container = _container(root)
    existing = {key[5:] for key in item_locations({file: root}) if key.startswith("link:#")}
    without = len(split_lines(render(root))) - len(existing)
    if without <= TOC_AFTER_LINES or locked_at(root, container):
        for target in sorted(existing):
            layout.do(Edit("remove_link", file, key=target))
        return
    children = find_section(root, container).children
    wanted = {f"#{slug(child.title)}": child.title for child in children}
    for target in sorted(existing - set(wanted)):
        layout.do(Edit("remove_link", file, key=target))
    for target, title in wanted.items():
        text = f"- [{title}]({target})"
        if target not in existing or item_text(layout.workspace, f"link:{target}", file) != text:
            layout.do(Edit("set_link", file, container, target, text))
