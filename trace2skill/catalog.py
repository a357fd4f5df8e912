"""The skill catalog a client loads: description budgets and descriptions that collide.

Agents read every installed skill's name and description up front and pick skills by them, so
a folder of several skills has two failure modes no single skill shows:

* the descriptions together exceed what a client loads (Claude Code keeps about 15,000
  characters of skill descriptions in all; Codex about 2 % of the context window, some 8,000
  characters), and skills past the budget are silently left out;
* two descriptions say nearly the same thing, so both trigger on the same requests and the
  client picks one arbitrarily. Similarity is the Jaccard index of the descriptions' word
  pairs (2-word shingles), which is cheap, needs no model and catches reworded copies.

Both are warnings, not problems: the skills are valid, the combination is risky.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .skill import SKILL_FILE, frontmatter_data, split_frontmatter

CLIENT_BUDGETS = {"Claude Code": 15_000, "Codex": 8_000}
"""Characters of skill names and descriptions each client loads in all (approximate, documented limits)."""
SIMILAR = 0.5
"""Shingle Jaccard index from which two descriptions are reported as triggering on the same requests."""
_LAYOUTS = ("*", ".agents/skills/*", ".claude/skills/*")


@dataclass(frozen=True)
class Entry:
    folder: Path
    name: str
    description: str

    @property
    def size(self) -> int:
        """What the catalog line costs: the name and the description."""
        return len(self.name) + len(self.description)


def skill_folders(root: Path) -> list[Path]:
    """Skill folders directly under `root` (flat, `.agents/skills/`, `.claude/skills/` layouts)."""
    found = {p.parent for pattern in _LAYOUTS for p in root.glob(f"{pattern}/{SKILL_FILE}") if p.is_file()}
    return sorted(found)


def read_entry(folder: Path) -> Entry:
    try:
        front, _ = split_frontmatter((folder / SKILL_FILE).read_text(encoding="utf-8"))
        data = frontmatter_data(front) if front else {}
    except Exception:  # an unreadable SKILL.md is reported by the folder's own validation
        data = {}
    name, description = data.get("name"), data.get("description")
    return Entry(folder, name if isinstance(name, str) else folder.name, " ".join(str(description or "").split()))


def catalog_warnings(entries: list[Entry]) -> list[str]:
    """Budget overruns and colliding descriptions across `entries`."""
    warnings = []
    total = sum(e.size for e in entries)
    for client, budget in CLIENT_BUDGETS.items():
        if total > budget:
            warnings.append(f"the {len(entries)} skills' names and descriptions take {total:,} characters; {client} loads "
                            f"about {budget:,} in all, so some skills may not be offered (shorten descriptions or split the folder)")
    names: dict[str, Entry] = {}
    for entry in entries:
        if entry.name in names:
            warnings.append(f"{names[entry.name].folder} and {entry.folder} both declare the name {entry.name!r}")
        names.setdefault(entry.name, entry)
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            score = similarity(a.description, b.description)
            if score >= SIMILAR:
                warnings.append(f"{a.name} and {b.name} have similar descriptions ({score:.0%} of word pairs shared), "
                                "so both would trigger on the same requests; make each say what sets it apart")
    return warnings


def similarity(a: str, b: str) -> float:
    """Jaccard index of the two texts' 2-word shingles (lower case, words of letters and digits)."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def _shingles(text: str) -> set[tuple[str, str]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return set(zip(words, words[1:]))
