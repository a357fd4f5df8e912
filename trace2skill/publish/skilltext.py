"""Reading the few facts publishing needs out of a rendered skill's text.

Publishing never renders skills (that is `skill.py`'s job); it only needs to find rule bullets
by their `<!-- rule:ID -->` marker, read and rewrite the `trace2skill-version` metadata value,
and compare semantic versions. Keeping these readers here, on plain strings, lets the merge,
history and rollback code work on blobs read straight from git without touching the disk.
"""

from __future__ import annotations

import json

import re

import yaml

RULE_MARKER = re.compile(r"<!--\s*rule:(?P<id>[A-Za-z0-9][A-Za-z0-9_.:-]*)\s*-->\s*$")
"""A rule bullet ends with this marker; the id is the rule's identity across versions."""
LOCK_MARKER = "<!-- trace2skill:locked -->"
"""A section (or the preamble, for the whole body) holding this line is never changed by the bot."""
VERSION_KEY = "trace2skill-version"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_VERSION_LINE = re.compile(rf"^(?P<lead>\s*{re.escape(VERSION_KEY)}\s*:\s*).*$")


def rule_id(line: str) -> str | None:
    """The rule id a line carries in its end-of-line marker, or None."""
    match = RULE_MARKER.search(line)
    return match.group("id") if match else None


def rule_lines(text: str) -> dict[str, str]:
    """Map each rule id to its bullet line (first occurrence wins)."""
    rules: dict[str, str] = {}
    for line in text.splitlines():
        rid = rule_id(line)
        if rid is not None and rid not in rules:
            rules[rid] = line
    return rules


def rule_title(line: str) -> str:
    """A rule bullet's title: its first **bold** span, else its text without the marker."""
    match = re.search(r"\*\*(.+?)\*\*", line)
    if match:
        return match.group(1).strip().rstrip(":").strip()
    return RULE_MARKER.sub("", line).strip().lstrip("-*+ ").strip()[:80]


def split_frontmatter(text: str) -> tuple[list[str], list[str]]:
    """Split a SKILL.md into frontmatter lines (with both `---` fences) and body lines."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return [], lines
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            return lines[: index + 1], lines[index + 1 :]
    return [], lines


def read_version(text: str) -> str | None:
    """The `metadata.trace2skill-version` value of a SKILL.md, or None when absent or unreadable."""
    front, _ = split_frontmatter(text)
    if not front:
        return None
    try:
        data = yaml.safe_load("\n".join(front[1:-1]))
    except yaml.YAMLError:
        return None
    metadata = data.get("metadata") if isinstance(data, dict) else None
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
            front[index] = f'{match.group("lead")}"{version}"'
            ending = "\n" if text.endswith("\n") else ""
            return "\n".join(front + body) + ending
    raise ValueError(f"SKILL.md has no {VERSION_KEY!r} metadata line")


def parse_version(version: str) -> tuple[int, int, int]:
    """`"1.2.3"` -> `(1, 2, 3)`; a leading `v` is accepted.

    Raises:
        ValueError: not a MAJOR.MINOR.PATCH version.
    """
    match = _SEMVER.match(version.removeprefix("v"))
    if not match:
        raise ValueError(f"not a semantic version: {version!r} (expected MAJOR.MINOR.PATCH)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def bump(version: str, part: str) -> str:
    """Next version after `version` for a `major`, `minor` or `patch` change."""
    major, minor, patch = parse_version(version)
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def provenance_entries(text: str | None) -> dict[str, dict]:
    """Rule id -> provenance entry, from `{id: entry}`, `{"rules": {...}}` or `{"rules": [...]}`.

    Read defensively: a missing or damaged provenance.json means no evidence to show, not a crash.
    """
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    rules = data.get("rules", data) if isinstance(data, dict) else data
    if isinstance(rules, list):
        return {str(e.get("id") or e.get("rule_id")): e for e in rules if isinstance(e, dict)}
    return {k: v for k, v in rules.items() if isinstance(v, dict)} if isinstance(rules, dict) else {}
