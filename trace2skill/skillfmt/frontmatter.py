"""SKILL.md frontmatter: split it off, read it as data, edit it line by line.

Frontmatter is read with strictyaml (the parser skills-ref validates with; the project's one
YAML library) and edited line by line, so a hand-written frontmatter keeps every line we do
not need to change; what we add is block-style YAML with quoted values, which strictyaml accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import strictyaml

from ..errors import SkillValidationError
from ..types import JSONObject
from .markers import VERSION_KEY
from .sections import split_lines

_TOP_KEY = re.compile(r"^([A-Za-z0-9_-]+)[ \t]*:(.*)$")


# --------------------------------------------------------------------------------------------
# Frontmatter


def split_frontmatter(text: str) -> tuple[list[str], str]:
    """`(frontmatter lines including both --- fences, body)`; `([], text)` when there is none."""
    lines = split_lines(text)
    if not lines or lines[0].strip() != "---":
        return [], text
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            return lines[: index + 1], "".join(lines[index + 1:])
    return [], text


def frontmatter_data(front: list[str]) -> JSONObject:
    """The frontmatter as data, parsed the way skills-ref parses it.

    Raises:
        SkillValidationError: the YAML is invalid for strictyaml (for example flow style).
    """
    inner = "".join(front[1:-1])
    if not inner.strip():
        return {}
    try:
        data = strictyaml.load(inner).data
    except strictyaml.YAMLError as exc:
        raise SkillValidationError([f"SKILL.md frontmatter is not valid block-style YAML: {_yaml_problem(exc)}"]) from None
    if not isinstance(data, dict):
        raise SkillValidationError(["SKILL.md frontmatter must be a YAML mapping"])
    return data


def _yaml_problem(exc: Exception) -> str:
    """strictyaml's multi-line report as one line: what is wrong and on which line of SKILL.md
    (the frontmatter starts on line 2, after the opening ---)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    return f"{problem}" + (f" (line {mark.line + 2})" if mark is not None else "")


def edit_frontmatter(front: list[str], values: Mapping[str, str], metadata: Mapping[str, str]) -> list[str]:
    """Set top-level keys and `metadata` entries, leaving every line that already holds the
    wanted value byte for byte as it was. Values are written double-quoted, block style.

    Raises:
        SkillValidationError: the existing frontmatter cannot be parsed, or `metadata` is not
            a block-style map.
    """
    current = frontmatter_data(front) if front else {}
    blocks = _blocks(front[1:-1] if front else [])
    for key, value in values.items():
        if current.get(key) != value:
            _set_block(blocks, key, [f"{key}: {quote(value)}\n"])
    _set_metadata(blocks, current.get("metadata"), metadata)
    opening, closing = (front[0], front[-1]) if front else ("---\n", "---\n")
    return [opening, *[line for _, lines in blocks for line in lines], closing]


def quote(value: str) -> str:
    """A double-quoted YAML scalar on one line."""
    flat = " ".join(value.split())
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _blocks(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in lines:
        match = _TOP_KEY.match(line)
        if match:
            blocks.append((match.group(1), [line]))
        else:
            blocks[-1][1].append(line)
    return blocks


def _set_block(blocks: list[tuple[str | None, list[str]]], key: str, lines: list[str]) -> None:
    for index, (name, old) in enumerate(blocks):
        if name == key:
            trailing = [line for line in old[1:] if not line.strip() or line.startswith("#")]
            blocks[index] = (key, lines + trailing)
            return
    blocks.append((key, lines))


def _set_metadata(blocks, current: Any, wanted: Mapping[str, str]) -> None:
    block = next((lines for name, lines in blocks if name == "metadata"), None)
    if block is None:
        blocks.append(("metadata", ["metadata:\n"] + [f"  {k}: {quote(v)}\n" for k, v in wanted.items()]))
        return
    head = _TOP_KEY.match(block[0]).group(2).strip()
    if (head and not head.startswith("#")) or not isinstance(current or {}, dict):
        raise SkillValidationError(["SKILL.md frontmatter `metadata` must be a block-style map of strings"])
    current = current or {}
    children = [i for i, line in enumerate(block) if i and line.strip() and not line.lstrip().startswith("#")]
    indent = re.match(r"[ \t]*", block[children[0]]).group(0) if children else "  "
    for key, value in wanted.items():
        if current.get(key) == value:
            continue
        line = f"{indent}{key}: {quote(value)}\n"
        hit = next((i for i in children if re.match(rf"^\s+{re.escape(key)}\s*:", block[i])), None)
        if hit is not None:
            block[hit] = line
        else:
            at = (children[-1] + 1) if children else 1
            block.insert(at, line)
            children = [*children, at]


# --------------------------------------------------------------------------------------------
# The version value


_VERSION_LINE = re.compile(rf"^(?P<lead>\s*{re.escape(VERSION_KEY)}\s*:\s*).*$")


def read_version(text: str) -> str | None:
    """The `metadata.trace2skill-version` value of a SKILL.md, or None when absent or unreadable."""
    front, _ = split_frontmatter(text)
    if not front:
        return None
    try:
        data = frontmatter_data(front)
    except SkillValidationError:
        return None
    metadata = data.get("metadata")
    value = metadata.get(VERSION_KEY) if isinstance(metadata, dict) else None
    return str(value) if value is not None else None


def set_version(text: str, version: str) -> str:
    """Rewrite the `trace2skill-version` line in place, leaving every other byte alone.

    Raises:
        ValueError: the frontmatter has no such line.
    """
    front, body = split_frontmatter(text)
    for index, line in enumerate(front):
        match = _VERSION_LINE.match(line)
        if match:
            ending = line[len(line.rstrip("\r\n")):]
            front[index] = f'{match.group("lead")}"{version}"{ending}'
            return "".join(front) + body
    raise ValueError(f"SKILL.md has no {VERSION_KEY!r} metadata line")
