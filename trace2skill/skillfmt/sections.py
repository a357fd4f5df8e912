"""A Markdown section tree that renders back byte for byte, and typed edits applied to it.

Why a tree: the official Trace2Skill applies edits by text anchors, skips the ones whose anchor
is missing, emits `## New Section` headings and glues headings onto bullet lines. Here a
document is cut at its ATX headings (outside fenced code) into a tree of sections; every line
keeps its own bytes and line ending, so `render(parse(text)) == text` for any text. Edits name
sections by heading path and rules by marker id, never by line number, and an edit that cannot
be applied exactly raises `EditError`.

Markers (see docs/skill-format.md):
- `<!-- rule:ID -->` ends a bullet the pipeline manages; `<!-- link:TARGET -->` ends a managed
  link line (links to reference files, tables of contents). Every other line is hand-written:
  edits never change it, they only insert or remove managed lines around it.
- `<!-- trace2skill:locked -->` on a line of its own in a section's body locks that section and
  its subtree; in the preamble (before the first heading) it locks the whole file. An edit that
  would change locked text raises. The one exception is a missing final newline at the end of
  the file, which is added when content is appended after it (otherwise the next heading would
  be glued onto the last line).

The tree is mutable because edits rewrite lists in place (`apply_edit`); the layout planner
applies them one at a time to a workspace it owns.

Why an index: placing n rules used to rescan every section of every file (fences, markers) once
per rule, O(n^2): 1,500 low-support rules took tens of seconds. Each section now keeps what a
scan of its body found (`_Scan`: managed keys and their lines, the lock) and each file root a
map from key to the sections holding it; both are built on first use and kept current by
`_splice`, the one function edits change a body through. A body that holds a fence line (code
blocks change which lines count) is rescanned after an edit instead of updated in place.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import EditError
from .markers import LOCK_MARKER

SKILL_FILE = "SKILL.md"
REFERENCES_DIR = "references/"
MAX_LEVEL = 6

SectionPath = tuple[str, ...]
Workspace = dict[str, "Section"]
"""Parsed Markdown files of one skill, keyed by path relative to the skill folder."""

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_MARKER = re.compile(r"<!--\s*(rule|link):([^\s>]+?)\s*-->\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])(?:\s|$)")
_BULLET_ITEM = re.compile(r"^\s*[-*+](?:\s|$)")
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_PLACEHOLDER_WORDS = {"new", "untitled", "unnamed", "section", "heading", "header", "title", "part", "chapter"}
_GENERIC_TITLES = {"misc", "miscellaneous", "stuff", "todo", "tbd", "placeholder", "tmp", "temp", "xxx", "lorem ipsum"}


@dataclass
class Section:
    """A heading and everything up to the next heading of the same or a higher level."""

    level: int
    """Heading level 1-6; 0 for the document root (the preamble before the first heading)."""
    title: str
    """Heading text without the `#`s; empty for the root."""
    heading: str = ""
    """The heading line exactly as written, line ending included; empty for the root."""
    body: list[str] = field(default_factory=list)
    """Lines between the heading and the first child heading, each with its line ending."""
    children: list[Section] = field(default_factory=list)
    _scan: _Scan | None = field(default=None, init=False, repr=False, compare=False)
    """What `_scan_of` found in `body`, kept current by `_splice`; None until first asked."""
    _index: dict[str, list[tuple[SectionPath, Section]]] | None = field(default=None, init=False, repr=False, compare=False)
    """On a file's root: managed key -> `(path, section)` holding it, in document order."""


@dataclass
class _Scan:
    """The managed lines and the lock of one section's body (see the module docstring)."""

    keys: list[str]
    """Managed keys (`rule:ID`, `link:TARGET`) in body order."""
    lines: list[int]
    """The body index of each key's marker line, ascending."""
    at: dict[str, int]
    """Key -> the body index of its marker line (of one of them, for a key the body holds twice)."""
    locked: bool
    plain: bool
    """No line opens or closes a fence, so no line is code and edits can update the scan."""


# --------------------------------------------------------------------------------------------
# Parsing and rendering


def split_lines(text: str) -> list[str]:
    """Lines with their endings; only `\\n` ends a line, so joining them gives `text` back."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def parse(text: str) -> Section:
    """Cut `text` into a section tree at its ATX headings outside fenced code."""
    root = Section(level=0, title="")
    stack = [root]
    fence: str | None = None
    for line in split_lines(text):
        heading = None if fence else _heading(line)
        if heading is None:
            fence = _next_fence(fence, line)
            stack[-1].body.append(line)
            continue
        level, title = heading
        while stack[-1].level >= level:
            stack.pop()
        section = Section(level=level, title=title, heading=line)
        stack[-1].children.append(section)
        stack.append(section)
    return root


def render(section: Section) -> str:
    """The exact text the section was parsed from, with any edits applied."""
    return section.heading + "".join(section.body) + "".join(render(child) for child in section.children)


def _heading(line: str) -> tuple[int, str] | None:
    match = _HEADING.match(line.rstrip("\r\n"))
    if not match:
        return None
    title = _CLOSING_HASHES.sub("", match.group(2) or "").strip()
    return len(match.group(1)), title


def _next_fence(fence: str | None, line: str) -> str | None:
    match = _FENCE.match(line.rstrip("\r\n"))
    if fence is None:
        if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            return match.group(1)
        return None
    closes = match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not match.group(2).strip()
    return None if closes else fence


def code_mask(lines: list[str]) -> list[bool]:
    """For each line, whether it sits inside a fenced code block (fence lines included)."""
    mask, fence = [], None
    for line in lines:
        after = _next_fence(fence, line)
        mask.append(fence is not None or after is not None)
        fence = after
    return mask


# --------------------------------------------------------------------------------------------
# Queries


def walk(root: Section, path: SectionPath = ()) -> Iterator[tuple[SectionPath, Section]]:
    """Every section in document order, with its heading path (the root's path is `()`)."""
    yield path, root
    for child in root.children:
        yield from walk(child, path + (child.title,))


def find_section(root: Section, path: SectionPath) -> Section:
    """The section at `path` (a tuple of heading titles from the top).

    Raises:
        EditError: no such section, or two siblings share a title on the way.
    """
    node = root
    for depth, title in enumerate(path):
        matches = [child for child in node.children if child.title == title]
        if len(matches) != 1:
            where = " > ".join(path[: depth + 1])
            problem = "no section" if not matches else f"{len(matches)} sections"
            raise EditError(f"{problem} titled {where!r}; edits need exactly one")
        node = matches[0]
    return node


def is_locked(section: Section) -> bool:
    """Whether the section's own body holds the lock marker on a line of its own."""
    return _scan_of(section).locked


def locked_at(root: Section, path: SectionPath) -> bool:
    """Whether the section at `path`, one of its ancestors or the whole file is locked."""
    node = root
    if is_locked(node):
        return True
    for depth in range(len(path)):
        node = find_section(root, path[: depth + 1])
        if is_locked(node):
            return True
    return False


def items(section: Section) -> Iterator[tuple[str, int]]:
    """`(key, line index)` for each managed line in the section's own body, e.g. `rule:r-1a2b`."""
    scan = _scan_of(section)
    yield from list(zip(scan.keys, scan.lines))


def item_locations(workspace: Mapping[str, Section]) -> dict[str, list[tuple[str, SectionPath]]]:
    """Where each managed key occurs: key -> [(file, section path), ...] in document order."""
    found: dict[str, list[tuple[str, SectionPath]]] = {}
    for file in sorted(workspace):
        for path, section in walk(workspace[file]):
            for key in _scan_of(section).keys:
                found.setdefault(key, []).append((file, path))
    return found


def item_text(workspace: Mapping[str, Section], key: str, file: str | None = None) -> str:
    """The managed item's text without its marker, wrapped lines joined by single spaces."""
    _, section, _, index = _locate(workspace, key, file)
    start, end = _span(section.body, index)
    text = " ".join(line.strip() for line in section.body[start:end])
    return _MARKER.sub("", text).rstrip()


def heading_problem(title: str) -> str | None:
    """Why a heading title is not meaningful (empty or a placeholder), or None when it is."""
    text = title.strip()
    if not text:
        return "empty heading"
    words = re.sub(r"[^\w ]+", " ", text.casefold()).split()
    meaningful = [word for word in words if not word.isdigit()]
    if not meaningful or set(meaningful) <= _PLACEHOLDER_WORDS or " ".join(meaningful) in _GENERIC_TITLES:
        return f"generic heading {title!r}; name what the section is about"
    return None


def same_title(a: str, b: str) -> bool:
    """Heading equality as a reader sees it: case and spacing ignored."""
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def slug(title: str) -> str:
    """The GitHub-style anchor of a heading (`Low-support lessons` -> `low-support-lessons`)."""
    return re.sub(r"[^\w\- ]", "", title.strip().casefold()).replace(" ", "-")


# --------------------------------------------------------------------------------------------
# Edits


EditKind = Literal["add_rule", "replace_rule", "remove_rule", "reorder_rules", "move_to_reference",
                   "add_section", "remove_section", "set_link", "remove_link", "create_file", "delete_file"]


@dataclass(frozen=True)
class Edit:
    """One change to the skill's Markdown files: `kind` says which, and which fields it reads.

    | kind | file | section | key | text |
    | --- | --- | --- | --- | --- |
    | add_rule: append a rule bullet after the section's last managed line | yes | yes | rule id | the bullet |
    | replace_rule: rewrite a rule bullet in place, in whatever file it is | - | - | rule id | the bullet |
    | remove_rule: drop a rule bullet, in whatever file it is | - | - | rule id | - |
    | reorder_rules: put the section's rules in the order of `order`, in the slots they occupy | yes | yes | - | - |
    | move_to_reference: move a rule bullet into a section of an existing reference file | that file | yes | rule id | - |
    | add_section: append a child section with a meaningful, unique heading | yes | the parent | - | its title |
    | remove_section: remove a section that is empty (no non-blank line, no subsection) | yes | yes | - | - |
    | set_link: add a managed link line to a section, or rewrite it in place | yes | yes | link target | the line |
    | remove_link: remove the managed link line to a target that is gone | yes | - | link target | - |
    | create_file: start a Markdown file with a level-1 heading and `intro` (may be empty) | the new file | - | - | its title |
    | delete_file: drop a file that holds no managed rule and no locked section | yes | - | - | - |

    One record rather than one class per kind: the kinds share their operands (a file, a section,
    an item key, a line), and `apply_edit` dispatches on `kind`.
    """

    kind: EditKind
    file: str = SKILL_FILE
    section: SectionPath = ()
    key: str = ""
    text: str = ""
    order: tuple[str, ...] = ()
    intro: str = ""


def apply_edit(workspace: Workspace, edit: Edit) -> None:
    """Apply one edit in place (`layout.Layout.do` keeps the list of edits applied).

    Raises:
        EditError: the edit cannot be applied exactly (missing target, locked text, bad heading).
    """
    handler = _HANDLERS.get(edit.kind)
    if handler is None:
        raise EditError(f"unknown edit {edit!r}")
    handler(workspace, edit)


def _add_rule(ws: Workspace, edit: Edit) -> None:
    _check_rule_id(edit.key)
    if any(f"rule:{edit.key}" in _file_index(root) for root in ws.values()):
        raise EditError(f"rule {edit.key!r} already exists; use replace_rule")
    section = _editable(ws, edit.file, edit.section)
    _insert(ws[edit.file], tuple(edit.section), section, [_item_line("rule", edit.key, edit.text)])


def _replace_rule(ws: Workspace, edit: Edit) -> None:
    _replace_item(ws, f"rule:{edit.key}", _item_line("rule", edit.key, edit.text), None)


def _remove_rule(ws: Workspace, edit: Edit) -> None:
    _take_item(ws, f"rule:{edit.key}", None)


def _reorder_rules(ws: Workspace, edit: Edit) -> None:
    section = _editable(ws, edit.file, edit.section)
    positions = {key: index for key, index in items(section)}
    wanted = [f"rule:{rule_id}" for rule_id in edit.order]
    missing = [key for key in wanted if key not in positions]
    if missing or len(set(wanted)) != len(wanted):
        raise EditError(f"cannot reorder {edit.section!r}: rules {missing or wanted!r} are missing or repeated")
    spans = {key: _span(section.body, positions[key]) for key in wanted}
    slots = sorted(spans.values())
    body, cursor = [], 0
    for (start, end), key in zip(slots, wanted):
        block = _terminated(section.body[slice(*spans[key])])
        body += section.body[cursor:start] + block
        cursor = end
    _splice(ws[edit.file], tuple(edit.section), section, 0, len(section.body), body + section.body[cursor:])


def _move_to_reference(ws: Workspace, edit: Edit) -> None:
    if not edit.file.startswith(REFERENCES_DIR):
        raise EditError(f"{edit.file!r} is not under {REFERENCES_DIR!r}")
    target = _editable(ws, edit.file, edit.section)
    block = _take_item(ws, f"rule:{edit.key}", None)
    _insert(ws[edit.file], tuple(edit.section), target, _terminated(block))


def _add_section(ws: Workspace, edit: Edit) -> None:
    title = edit.text
    problem = heading_problem(title)
    if problem or "\n" in title or title != title.strip():
        raise EditError(f"cannot add section {title!r}: {problem or 'a title is one trimmed line'}")
    parent = _editable(ws, edit.file, edit.section)
    if any(same_title(child.title, title) for child in parent.children):
        raise EditError(f"{edit.file}: {' > '.join(edit.section) or 'the top level'} already has a section {title!r}")
    level = parent.children[-1].level if parent.children else (2 if parent.level == 0 else parent.level + 1)
    if level > MAX_LEVEL:
        raise EditError(f"cannot add {title!r} below {edit.section!r}: headings stop at level {MAX_LEVEL}")
    _separate_end(parent)
    parent.children.append(Section(level=level, title=title, heading=f"{'#' * level} {title}\n", body=["\n"]))
    _check_stable(ws[edit.file], edit)


def _remove_section(ws: Workspace, edit: Edit) -> None:
    if not edit.section:
        raise EditError("the document root cannot be removed")
    section = _editable(ws, edit.file, edit.section)
    if section.children or any(line.strip() for line in section.body):
        raise EditError(f"{edit.file}: section {' > '.join(edit.section)!r} is not empty")
    find_section(ws[edit.file], edit.section[:-1]).children.remove(section)


def _set_link(ws: Workspace, edit: Edit) -> None:
    key, line = f"link:{edit.key}", _item_line("link", edit.key, edit.text)
    if edit.file in ws and key in _file_index(ws[edit.file]):
        _replace_item(ws, key, line, edit.file)
        return
    section = _editable(ws, edit.file, edit.section)
    _insert(ws[edit.file], tuple(edit.section), section, [line])


def _remove_link(ws: Workspace, edit: Edit) -> None:
    _take_item(ws, f"link:{edit.key}", edit.file)


def _create_file(ws: Workspace, edit: Edit) -> None:
    problem = heading_problem(edit.text)
    if edit.file in ws or problem:
        raise EditError(f"cannot create {edit.file!r}: {problem or 'it already exists'}")
    intro = f"\n{edit.intro.strip()}\n" if edit.intro.strip() else ""
    ws[edit.file] = parse(f"# {edit.text}\n{intro}")


def _delete_file(ws: Workspace, edit: Edit) -> None:
    root = _file(ws, edit.file)
    rules = [key for key in item_locations({edit.file: root}) if key.startswith("rule:")]
    if rules or any(is_locked(section) for _, section in walk(root)):
        raise EditError(f"cannot delete {edit.file!r}: it holds {'rules ' + ', '.join(rules) if rules else 'a locked section'}")
    del ws[edit.file]


_HANDLERS: dict[str, Callable[[Workspace, Edit], None]] = {
    "add_rule": _add_rule, "replace_rule": _replace_rule, "remove_rule": _remove_rule, "reorder_rules": _reorder_rules,
    "move_to_reference": _move_to_reference, "add_section": _add_section, "remove_section": _remove_section,
    "set_link": _set_link, "remove_link": _remove_link, "create_file": _create_file, "delete_file": _delete_file,
}


# --------------------------------------------------------------------------------------------
# Edit helpers


def _file(ws: Workspace, file: str) -> Section:
    if file not in ws:
        raise EditError(f"no file {file!r} in the skill")
    return ws[file]


def _editable(ws: Workspace, file: str, path: SectionPath) -> Section:
    root = _file(ws, file)
    section = find_section(root, path)
    if locked_at(root, path):
        raise EditError(f"{file}: section {' > '.join(path) or '(preamble)'!r} is locked ({LOCK_MARKER})")
    return section


def _locate(ws: Mapping[str, Section], key: str, file: str | None) -> tuple[str, Section, SectionPath, int]:
    """The one place `key` occurs: `(file, section, path, line index)`, from the files' indexes."""
    files = [file] if file is not None else sorted(ws)
    found = [(name, path, section) for name in files if name in ws for path, section in _file_index(ws[name]).get(key, ())]
    if len(found) != 1:
        where = ", ".join(f"{name} > {' > '.join(path)}" for name, path, _ in found)
        raise EditError(f"{key!r} " + (f"appears {len(found)} times ({where}); keep one" if found else "not found"))
    name, path, section = found[0]
    scan = _scan_of(section)
    return name, section, path, scan.at[key]


def _replace_item(ws: Workspace, key: str, line: str, file: str | None) -> None:
    name, section, path, index = _locate(ws, key, file)
    _editable(ws, name, path)
    start, end = _span(section.body, index)
    indent = re.match(r"[ \t]*", section.body[start]).group(0)
    ending = "" if not section.body[end - 1].endswith("\n") and end == len(section.body) else "\n"
    _splice(ws[name], path, section, start, end, [indent + line.rstrip("\n") + ending])


def _take_item(ws: Workspace, key: str, file: str | None) -> list[str]:
    name, section, path, index = _locate(ws, key, file)
    _editable(ws, name, path)
    body = section.body
    start, end = _span(body, index)
    block = body[start:end]
    # the blank line `_insert` put before the item would be doubled: it goes too
    doubled = 0 < start and end < len(body) and not body[start - 1].strip() and not body[end].strip()
    _splice(ws[name], path, section, start, end + doubled, [])
    return block


def _span(body: list[str], index: int) -> tuple[int, int]:
    """The lines of the list item whose last line (holding the marker) is `body[index]`."""
    start = index
    while (start > 0 and not _LIST_ITEM.match(body[start]) and body[start - 1].strip()
           and not _MARKER.search(body[start - 1]) and body[start - 1].strip() != LOCK_MARKER):
        start -= 1
    return (start if _LIST_ITEM.match(body[start]) else index), index + 1


def _insert(root: Section, path: SectionPath, section: Section, block: list[str]) -> None:
    """Insert managed lines after the section's last managed line, else after its content."""
    body = section.body
    managed = _scan_of(section).lines
    content = next((index for index in range(len(body) - 1, -1, -1) if body[index].strip()), None)
    position = managed[-1] + 1 if managed else (content + 1 if content is not None else min(1, len(body)))
    lines = list(block)
    if position == 0 or (content is not None and not managed and not _BULLET_ITEM.match(body[position - 1])):
        lines.insert(0, "\n")
    if position == len(body) and section.children:
        lines.append("\n")
    if position > 0 and not body[position - 1].endswith("\n"):
        body[position - 1] += "\n"  # a line ending changes no scan: every pattern ignores it
    _splice(root, path, section, position, position, lines)


def _scan_of(section: Section) -> _Scan:
    """The section's `_Scan`, computed on first use (fence lines, markers and the lock)."""
    if section._scan is None:
        body = section.body
        plain = not any(_FENCE.match(line.rstrip("\r\n")) for line in body)
        mask = code_mask(body) if not plain else [False] * len(body)
        keys, lines, locked = [], [], False
        for index, (line, code) in enumerate(zip(body, mask)):
            match = None if code else _MARKER.search(line)
            if match:
                keys.append(f"{match.group(1)}:{match.group(2)}")
                lines.append(index)
            locked = locked or (not code and line.strip() == LOCK_MARKER)
        section._scan = _Scan(keys, lines, dict(zip(keys, lines)), locked, plain)
    return section._scan


def _file_index(root: Section) -> dict[str, list[tuple[SectionPath, Section]]]:
    """Managed key -> `(path, section)` for each place it occurs in the file, in document order."""
    if root._index is None:
        index: dict[str, list[tuple[SectionPath, Section]]] = {}
        for path, section in walk(root):
            for key in _scan_of(section).keys:
                index.setdefault(key, []).append((path, section))
        root._index = index
    return root._index


def _splice(root: Section, path: SectionPath, section: Section, start: int, end: int, lines: list[str]) -> None:
    """`section.body[start:end] = lines`, keeping the section's scan and the file's index current.

    `section` sits at `path` in the file whose root is `root`. In a body without fence lines
    every marker is an item, so the scan is patched: the keys of the removed lines go, those of
    the new lines come in, later line numbers shift. A fence or lock line in play, a key the body
    holds twice, or a key the file already holds, makes the scan or index be rebuilt on next
    use instead.
    """
    scan, body = section._scan, section.body
    removed = body[start:end]
    body[start:end] = lines
    if (scan is None or not scan.plain or len(scan.at) != len(scan.keys)
            or any(_FENCE.match(line.rstrip("\r\n")) or line.strip() == LOCK_MARKER for line in lines)
            or any(line.strip() == LOCK_MARKER for line in removed)):
        section._scan, root._index = None, None
        return
    low, high = bisect_left(scan.lines, start), bisect_left(scan.lines, end)
    gone = scan.keys[low:high]
    new = [(f"{m.group(1)}:{m.group(2)}", start + n) for n, line in enumerate(lines) if (m := _MARKER.search(line))]
    scan.keys[low:high] = [key for key, _ in new]
    scan.lines[low:high] = [line for _, line in new]
    shift = len(lines) - (end - start)
    for n in range(low + len(new), len(scan.lines)):
        scan.lines[n] += shift
        scan.at[scan.keys[n]] = scan.lines[n]
    for key in gone:
        del scan.at[key]
    scan.at.update(new)
    index = root._index
    if index is None:
        return
    for key in gone:
        places = index[key]
        places.pop(next(n for n, (_, where) in enumerate(places) if where is section))
        if not places:
            del index[key]
    for key, _ in new:
        if key in index:  # a second place for the key: document order needs a rebuild
            root._index = None
            return
        index[key] = [(path, section)]


def _item_line(kind: str, key: str, text: str) -> str:
    if kind == "rule":
        _check_rule_id(key)
    elif not key or re.search(r"[\s>]", key):
        raise EditError(f"link target {key!r} must be non-empty without spaces or '>'")
    if "\n" in text or "\r" in text or "<!--" in text or "-->" in text or not text.strip():
        raise EditError(f"{kind} {key!r}: text must be one non-empty line without HTML comments, got {text[:80]!r}")
    return f"{text.rstrip()} <!-- {kind}:{key} -->\n"


def _check_rule_id(rule_id: str) -> None:
    if not _RULE_ID.match(rule_id):
        raise EditError(f"invalid rule id {rule_id!r}: letters, digits, '.', '_', ':' and '-' only")


def _terminated(lines: list[str]) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def _separate_end(parent: Section) -> None:
    """Make the text before a new last child of `parent` end with a blank line.

    A blank line is only added to an unlocked section; a missing final newline is always added,
    since without it the new heading would be glued onto the previous line.
    """
    chain = [parent]
    while chain[-1].children:
        chain.append(chain[-1].children[-1])
    last = chain[-1]
    if not last.body:
        if last.heading and not last.heading.endswith("\n"):
            last.heading += "\n"
        return
    if not last.body[-1].endswith("\n"):
        last.body[-1] += "\n"
    if last.body[-1].strip() and not any(is_locked(section) for section in chain):
        last.body.append("\n")


def _shape(section: Section) -> tuple:
    return section.level, section.title, tuple(_shape(child) for child in section.children)


def _check_stable(root: Section, edit: Edit) -> None:
    """An edit must leave a tree that parses back to the same shape, or the next run would
    see a different document than this one wrote."""
    if _shape(parse(render(root))) != _shape(root):
        raise EditError(f"{edit!r} would change how the document's headings nest; choose another parent")
