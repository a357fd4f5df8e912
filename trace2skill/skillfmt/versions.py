"""Semantic versions and the changelog of a skill.

The version answers "can I take this update blindly?": a patch only rewords rules or changes
their support, a minor version adds rules, a major version removes a rule or reverses one
(its polarity flipped from do to avoid or back). The first trace2skill build of a skill is
1.0.0, whether it creates the skill or deepens a hand-written one. CHANGELOG.md holds one entry
per version, newest first, naming the run that produced it; entries carry no timestamps, so
the same inputs give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .sections import split_lines

FIRST_VERSION = "1.0.0"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def parse_semver(version: object) -> tuple[int, int, int] | None:
    """`"1.2.3"` -> `(1, 2, 3)`; None for anything else."""
    match = _SEMVER.match(version) if isinstance(version, str) else None
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def next_version(previous: str | None, *, added: Sequence[str], removed: Sequence[str], reversed_: Sequence[str]) -> str:
    """The version after `previous` for a build with these rule changes."""
    parts = parse_semver(previous)
    if parts is None:
        return FIRST_VERSION
    major, minor, patch = parts
    if removed or reversed_:
        return f"{major + 1}.0.0"
    if added:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def changelog_entry(version: str, run_line: str, titles: Mapping[str, str], *, added: Sequence[str],
                    changed: Sequence[str], removed: Sequence[str], reversed_: Sequence[str],
                    edited: Mapping[str, str] | None = None) -> str:
    """One `## VERSION` entry listing rules added, changed and removed (titles and ids), and
    the rules people reworded, moved or deleted since the last run (`edited`: id -> what)."""
    lines = [f"## {version}", "", run_line, ""]
    edited = edited or {}
    groups = (("Added", added), ("Changed", changed), ("Removed", [rid for rid in removed if rid not in edited]))
    for heading, ids in groups:
        if ids:
            lines += [f"### {heading}", ""]
            lines += [f"- {titles.get(rid, rid)} (`{rid}`)" + (" - reversed" if rid in reversed_ else "") for rid in ids]
            lines.append("")
    if edited:
        lines += ["### Edited by hand", ""]
        lines += [f"- {titles.get(rid, rid)} (`{rid}`): {what}" for rid, what in sorted(edited.items())]
        lines.append("")
    if not (added or changed or removed or edited):
        lines += ["No rule added, changed or removed; evidence, support or the conflict ledger changed.", ""]
    return "\n".join(lines)


def prepend_entry(existing: str | None, entry: str) -> str:
    """The changelog with `entry` above the newest existing entry (the first `## ` heading)."""
    if not existing or not existing.strip():
        return "# Changelog\n\n" + entry
    lines = split_lines(existing)
    first = next((index for index, line in enumerate(lines) if line.startswith("## ")), None)
    if first is None:
        separator = "" if existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
        return existing + separator + entry
    return "".join(lines[:first]) + entry + "\n" + "".join(lines[first:])


def parse_version(version: str) -> tuple[int, int, int]:
    """`"1.2.3"` -> `(1, 2, 3)`; a leading `v` is accepted.

    Raises:
        ValueError: not a MAJOR.MINOR.PATCH version.
    """
    parts = parse_semver(version.removeprefix("v"))
    if parts is None:
        raise ValueError(f"not a semantic version: {version!r} (expected MAJOR.MINOR.PATCH)")
    return parts


def bump(version: str, part: str) -> str:
    """Next version after `version` for a `major`, `minor` or `patch` change."""
    major, minor, patch = parse_version(version)
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def rollback_entry(existing: str, new_version: str, restored: str, skill: str) -> str:
    """The changelog with a rollback entry on top; no date, like every other entry, so the same
    rollback gives the same bytes."""
    entry = f"## {new_version}\n\nRollback: restores `{skill}` as it was in version {restored}.\n"
    lines = existing.splitlines(keepends=True)
    if lines and lines[0].startswith("# "):
        head, rest = lines[0], "".join(lines[1:]).lstrip("\n")
        return f"{head}\n{entry}\n{rest}" if rest else f"{head}\n{entry}"
    return f"# Changelog\n\n{entry}" + (f"\n{existing}" if existing else "")
