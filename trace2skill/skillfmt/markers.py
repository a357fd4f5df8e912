"""The markers trace2skill puts in a skill's text, and the readers of rule bullets.

A rule bullet ends with `<!-- rule:ID -->`; `<!-- trace2skill:locked -->` locks a section (or the
whole file, above the first heading); `metadata.trace2skill-version` holds the skill's version.
These readers work on plain strings, so the merge, history and rollback code can read blobs
straight from git without touching the disk. This module is the one home of these names.
"""

from __future__ import annotations

import re

RULE_MARKER = re.compile(r"<!--\s*rule:(?P<id>[A-Za-z0-9][A-Za-z0-9_.:-]*)\s*-->\s*$")
"""A rule bullet ends with this marker; the id is the rule's identity across versions."""
LOCK_MARKER = "<!-- trace2skill:locked -->"
"""A section (or the preamble, for the whole body) holding this line is never changed by the bot."""
VERSION_KEY = "trace2skill-version"


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
