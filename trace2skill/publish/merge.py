"""Three-way merge of a skill's files where the human side always wins.

When people edit a skill on the default branch while the bot's pull request is open, the bot
branch must take their edits in without ever overwriting them. `merge3(base, ours, theirs)`
merges SKILL.md on its section tree: base is the merge-base version, ours the bot branch,
theirs the default branch (the humans).

How it works, and why:
- The body is cut into sections at every heading (outside code fences, by the skill format's
  one section parser), keyed by heading level and text, so independent edits in different sections never interact, a section the
  bot adds lands after its neighbour, and a section a human renamed is matched by content.
- Inside a section, rule bullets (lines ending in `<!-- rule:ID -->`) are replaced by their
  id before a line-level diff3, so placement is merged by lines while each rule's wording is
  merged by id across the whole document (a rule a human moved to another section stays
  where they put it).
- A rule changed by both sides differently, or changed by one side and deleted by the other,
  keeps the human's version (or stays deleted) and becomes a `Clash`, which the pull request
  lists under "needs review". Prose changed by both sides keeps the human's text and is a
  clash too; two insertions at the same spot are both kept (that is not a real conflict).
- A section containing `<!-- trace2skill:locked -->` on the human side is taken verbatim from
  the human side; the marker above the first `##` heading locks the whole file.

`merge_text` (changelogs, references) and `merge_json` (provenance) use the same policy.
Everything here is pure: strings in, strings and clashes out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal

from ..skillfmt.frontmatter import split_frontmatter
from ..skillfmt.markers import LOCK_MARKER, rule_id
from ..skillfmt.sections import parse, walk

ClashKind = Literal["rule", "text", "section", "file"]
_TOKEN = "\x00rule:"
_RENAME_SIMILARITY = 0.5


@dataclass(frozen=True)
class Clash:
    """A change the bot wanted that collided with a human edit; the human's text was kept."""

    kind: ClashKind
    where: str
    """Section heading, `frontmatter`, `document` or a file path."""
    rule_id: str | None = None
    base: str | None = None
    """Text before either side changed it (None: did not exist)."""
    ours: str | None = None
    """What the bot proposed and was not applied (None: the bot deleted it)."""
    theirs: str | None = None
    """What was kept (None: the human deleted it)."""
    note: str = ""

    def summary(self) -> str:
        """One line for a pull-request checklist."""
        subject = f"rule `{self.rule_id}`" if self.rule_id else f"{self.kind} change"
        return f"{subject} in {self.where}: {self.note or 'edited on both sides'}"


# -- diff3 over lists of lines ---------------------------------------------------------------


def _sync_regions(base: list[str], ours: list[str], theirs: list[str]) -> list[tuple[int, ...]]:
    """Regions where base, ours and theirs all agree, as (b0, b1, o0, o1, t0, t1) slices."""
    ours_blocks = SequenceMatcher(None, base, ours, autojunk=False).get_matching_blocks()
    theirs_blocks = SequenceMatcher(None, base, theirs, autojunk=False).get_matching_blocks()
    regions: list[tuple[int, ...]] = []
    i = j = 0
    while i < len(ours_blocks) and j < len(theirs_blocks):
        ob, oo, olen = ours_blocks[i]
        tb, tt, tlen = theirs_blocks[j]
        start, end = max(ob, tb), min(ob + olen, tb + tlen)
        if start < end:
            o0, t0 = oo + start - ob, tt + start - tb
            regions.append((start, end, o0, o0 + end - start, t0, t0 + end - start))
        if ob + olen < tb + tlen:
            i += 1
        else:
            j += 1
    regions.append((len(base), len(base), len(ours), len(ours), len(theirs), len(theirs)))
    return regions


def _diff3(base: list[str], ours: list[str], theirs: list[str]) -> Iterator[tuple[str, list[str], list[str], list[str]]]:
    """Yield (kind, base_chunk, ours_chunk, theirs_chunk); kind is same|ours|theirs|conflict."""
    b = o = t = 0
    for b0, b1, o0, o1, t0, t1 in _sync_regions(base, ours, theirs):
        chunk_b, chunk_o, chunk_t = base[b:b0], ours[o:o0], theirs[t:t0]
        if chunk_o or chunk_t:
            if chunk_o == chunk_t:
                yield "same", chunk_b, chunk_o, chunk_t
            elif chunk_o == chunk_b:
                yield "theirs", chunk_b, chunk_o, chunk_t
            elif chunk_t == chunk_b:
                yield "ours", chunk_b, chunk_o, chunk_t
            else:
                yield "conflict", chunk_b, chunk_o, chunk_t
        if b1 > b0:
            yield "same", base[b0:b1], ours[o0:o1], theirs[t0:t1]
        b, o, t = b1, o1, t1


def merge_lines(base: list[str], ours: list[str], theirs: list[str]) -> tuple[list[str], list[tuple[list[str], list[str], list[str]]]]:
    """Line-level three-way merge; theirs wins true conflicts, insert-insert keeps both.

    Returns:
        The merged lines and the true conflicts as (base, ours, theirs) chunks.
    """
    merged: list[str] = []
    conflicts = []
    for kind, chunk_b, chunk_o, chunk_t in _diff3(base, ours, theirs):
        if kind == "ours":
            merged.extend(chunk_o)
        elif kind in ("same", "theirs"):
            merged.extend(chunk_t)
        elif not chunk_b:
            merged.extend(chunk_t + [line for line in chunk_o if line not in chunk_t])
        else:
            merged.extend(chunk_t)
            conflicts.append((chunk_b, chunk_o, chunk_t))
    return merged, conflicts


def merge_text(base: str | None, ours: str, theirs: str, where: str) -> tuple[str, list[Clash]]:
    """Merge any text file line by line with the human-wins policy (changelogs, references)."""
    merged, conflicts = merge_lines((base or "").splitlines(), ours.splitlines(), theirs.splitlines())
    clashes = [Clash("text", where, None, "\n".join(b), "\n".join(o), "\n".join(t)) for b, o, t in conflicts]
    return _join(merged, theirs), clashes


def merge_json(base: str | None, ours: str, theirs: str, where: str) -> tuple[str, list[Clash]]:
    """Merge JSON objects key by key (human wins a clash); falls back to `merge_text`."""
    try:
        parsed_b = json.loads(base) if base else {}
        parsed_o, parsed_t = json.loads(ours), json.loads(theirs)
    except ValueError:
        return merge_text(base, ours, theirs, where)
    if not all(isinstance(value, dict) for value in (parsed_b, parsed_o, parsed_t)):
        return merge_text(base, ours, theirs, where)
    clashes: list[Clash] = []
    merged = _merge_objects(parsed_b, parsed_o, parsed_t, where, clashes)
    return json.dumps(merged, indent=2, ensure_ascii=False) + "\n", clashes


def _merge_objects(base: dict, ours: dict, theirs: dict, where: str, clashes: list[Clash]) -> dict:
    missing = object()
    merged: dict[str, Any] = {}
    for key in [*theirs, *(k for k in ours if k not in theirs)]:
        b, o, t = base.get(key, missing), ours.get(key, missing), theirs.get(key, missing)
        if isinstance(b, dict) and isinstance(o, dict) and isinstance(t, dict):
            value = _merge_objects(b, o, t, f"{where}:{key}", clashes)
        elif o in (t, b):
            value = t
        elif t == b:
            value = o
        else:
            value = t
            clashes.append(Clash("text", f"{where}:{key}", note="value changed on both sides; kept the base branch's"))
        if value is not missing:
            merged[key] = value
    return merged


def _join(lines: list[str], like: str) -> str:
    text = "\n".join(lines)
    return text + "\n" if like.endswith("\n") and lines else text


# -- the section tree ------------------------------------------------------------------------


@dataclass
class _Doc:
    front: list[str]
    sections: dict[str, list[str]]
    """Section key -> lines (heading first; rule bullets replaced by tokens), in document order."""
    rules: dict[str, str] = field(default_factory=dict)
    home: dict[str, str] = field(default_factory=dict)
    """Rule id -> key of the section it sits in."""

    def locked(self, key: str) -> bool:
        return any(line.strip() == LOCK_MARKER for line in self.sections.get(key, ()))

    def wholly_locked(self) -> bool:
        """The marker before any `##` section (preamble or `#` title section) locks everything."""
        return any(self.locked(key) for key in self.sections if key == "" or key.startswith("1:"))


def _parse(text: str) -> _Doc:
    """The document as flat sections in document order (the skill format's section tree,
    flattened), lines without their endings, rule bullets replaced by tokens."""
    front, body = split_frontmatter(text)
    doc = _Doc(front=[line.rstrip("\r\n") for line in front], sections={})
    for _, section in walk(parse(body)):
        key = f"{section.level}:{section.title.lower()}" if section.level else ""
        while key in doc.sections:
            key += "'"
        lines = doc.sections[key] = []
        for line in ([section.heading] if section.level else []) + section.body:
            line = line.rstrip("\r\n")
            rid = rule_id(line)
            if rid is not None and rid not in doc.rules:
                doc.rules[rid], doc.home[rid] = line, key
                line = _TOKEN + rid
            lines.append(line)
    return doc


def _title(doc: _Doc, key: str) -> str:
    lines = doc.sections.get(key) or [""]
    return lines[0].strip() if key else "preamble"


def _align_renames(base: _Doc, side: _Doc) -> None:
    """Re-key sections the side renamed, so they merge with their base section."""
    lost = [k for k in base.sections if k not in side.sections]
    new = [k for k in side.sections if k not in base.sections]
    renames: dict[str, str] = {}
    for old in lost:
        level = old.split(":", 1)[0]
        best, best_score = None, _RENAME_SIMILARITY
        for candidate in new:
            if candidate in renames or candidate.split(":", 1)[0] != level:
                continue
            score = SequenceMatcher(None, base.sections[old][1:], side.sections[candidate][1:], autojunk=False).ratio()
            if score >= best_score and base.sections[old][1:]:
                best, best_score = candidate, score
        if best is not None:
            renames[best] = old
    if renames:
        side.sections = {renames.get(k, k): v for k, v in side.sections.items()}
        side.home = {rid: renames.get(k, k) for rid, k in side.home.items()}


def _section_order(base: _Doc, ours: _Doc, theirs: _Doc) -> list[str]:
    """Every section key, in the human order if they reordered sections, else in the bot's."""
    kept = [k for k in theirs.sections if k in base.sections]
    reordered = kept != [k for k in base.sections if k in theirs.sections]
    primary, secondary = (theirs, ours) if reordered else (ours, theirs)
    order = list(primary.sections)
    others = list(secondary.sections)
    for index, key in enumerate(others):
        if key not in order:
            previous = next((k for k in reversed(others[:index]) if k in order), None)
            order.insert(order.index(previous) + 1 if previous is not None else 0, key)
    return order


def _prose(lines: list[str]) -> list[str]:
    return [line for line in lines if line.strip() and not line.startswith(_TOKEN)]


def _merge_section(key: str, base: _Doc, ours: _Doc, theirs: _Doc, clashes: list[Clash]) -> list[str] | None:
    b, o, t = base.sections.get(key), ours.sections.get(key), theirs.sections.get(key)
    where = _title(theirs if t is not None else ours if o is not None else base, key)
    if t is not None and o is not None:
        if theirs.locked(key) or b is None:
            if _prose(o) != _prose(t) and (b is None or _prose(o) != _prose(b)):
                note = "section is locked" if theirs.locked(key) else "added on both sides"
                clashes.append(Clash("section", where, None, _text(b), _text(o), _text(t), note))
            return t
        merged, conflicts = merge_lines(b, o, t)
        for cb, co, ct in conflicts:
            if _prose(co) != _prose(cb) and _prose(co) != _prose(ct):
                clashes.append(Clash("text", where, None, _text(cb), _text(co), _text(ct)))
        return merged
    if t is not None:
        edited = b is None or t != b or _rules_edited(t, base, theirs)
        if b is not None and edited:
            clashes.append(Clash("section", where, None, _text(b), None, _text(t), "the bot removed a section edited on the base branch"))
        return t if edited else None
    if o is not None and b is None:
        return o
    if o is not None and _prose(o) != _prose(b or []):
        clashes.append(Clash("section", where, None, _text(b), _text(o), None, "section was removed on the base branch"))
    return None


def _rules_edited(lines: list[str], base: _Doc, side: _Doc) -> bool:
    """Whether a rule held in these section lines reads differently on `side` than on base."""
    rids = [line[len(_TOKEN):] for line in lines if line.startswith(_TOKEN)]
    return any(side.rules.get(rid) != base.rules.get(rid) for rid in rids)


def _text(lines: list[str] | None) -> str | None:
    return None if lines is None else "\n".join(line for line in lines if not line.startswith(_TOKEN))


def _decide_rules(base: _Doc, ours: _Doc, theirs: _Doc, merged: dict[str, list[str]], clashes: list[Clash]) -> dict[str, str | None]:
    """Pick each rule's final text (None: absent), recording clashes; humans win."""
    decisions: dict[str, str | None] = {}
    for rid in dict.fromkeys([*theirs.rules, *ours.rules, *base.rules]):
        b, o, t = base.rules.get(rid), ours.rules.get(rid), theirs.rules.get(rid)
        if o in (t, b):
            decision, note = t, ""
        elif theirs.locked(theirs.home.get(rid) or ours.home.get(rid, "")):
            decision, note = t, "section is locked"
        elif t == b:
            decision, note = o, ""
            if o is not None and t is None and ours.home[rid] not in merged:
                decision, note = None, "its section was removed on the base branch"
        elif t is None:
            decision, note = None, "deleted on the base branch, changed by the bot"
        elif o is None:
            decision, note = t, "deleted by the bot, edited on the base branch"
        else:
            decision, note = t, "changed on both sides"
        if note:
            clashes.append(Clash("rule", _rule_where(rid, base, ours, theirs), rid, b, o, t, note))
        decisions[rid] = decision
    return decisions


def _rule_where(rid: str, *docs: _Doc) -> str:
    for doc in reversed(docs):
        if rid in doc.home:
            return _title(doc, doc.home[rid])
    return "document"


def _place_rules(decisions: dict[str, str | None], ours: _Doc, theirs: _Doc, merged: dict[str, list[str]], clashes: list[Clash]) -> None:
    """Make every kept rule appear exactly once, where its deciding side put it."""
    seen: set[str] = set()
    for key, lines in merged.items():
        kept = []
        for line in lines:
            if line.startswith(_TOKEN):
                rid = line[len(_TOKEN):]
                if decisions.get(rid) is None or rid in seen or _elsewhere(rid, key, theirs, merged):
                    continue
                seen.add(rid)
            kept.append(line)
        merged[key] = kept
    for rid in dict.fromkeys([*ours.rules, *theirs.rules]):
        if decisions.get(rid) is None or rid in seen:
            continue
        homes = [(doc, doc.home[rid]) for doc in (theirs, ours) if rid in doc.home and doc.home[rid] in merged]
        if not homes:
            clashes.append(Clash("rule", "document", rid, None, ours.rules.get(rid), theirs.rules.get(rid), "no section left to hold it"))
            decisions[rid] = None
            continue
        doc, key = homes[0]
        _insert(merged[key], doc.sections[key], _TOKEN + rid)
        seen.add(rid)


def _elsewhere(rid: str, key: str, theirs: _Doc, merged: dict[str, list[str]]) -> bool:
    """True when the human side keeps this rule in another merged section."""
    home = theirs.home.get(rid)
    return home is not None and home != key and home in merged and _TOKEN + rid in merged[home]


def _insert(target: list[str], source: list[str], token: str) -> None:
    position = source.index(token)
    for anchor in reversed(source[:position]):
        if anchor.startswith(_TOKEN) and anchor in target:
            target.insert(target.index(anchor) + 1, token)
            return
    for anchor in source[position + 1 :]:
        if anchor.startswith(_TOKEN) and anchor in target:
            target.insert(target.index(anchor), token)
            return
    end = len(target)
    while end > 1 and not target[end - 1].strip():
        end -= 1
    target.insert(end, token)


def merge3(base: str | None, ours: str, theirs: str) -> tuple[str, list[Clash]]:
    """Three-way merge of SKILL.md texts; the human side (theirs) wins every clash.

    Args:
        base: the common ancestor's SKILL.md (None or "" when there was none).
        ours: the bot branch's SKILL.md.
        theirs: the default branch's SKILL.md, carrying human edits.

    Returns:
        The merged text and the clashes to list as needs-review items.
    """
    doc_b, doc_o, doc_t = _parse(base or ""), _parse(ours), _parse(theirs)
    if doc_t.wholly_locked():
        clash = [Clash("section", "document", None, base, ours, theirs, "the whole skill is locked")]
        return theirs, clash if ours != (base or "") else []
    _align_renames(doc_b, doc_o)
    _align_renames(doc_b, doc_t)
    clashes: list[Clash] = []
    front, conflicts = merge_lines(doc_b.front, doc_o.front, doc_t.front)
    clashes += [Clash("text", "frontmatter", None, _text(b), _text(o), _text(t)) for b, o, t in conflicts]
    merged: dict[str, list[str]] = {}
    for key in _section_order(doc_b, doc_o, doc_t):
        lines = _merge_section(key, doc_b, doc_o, doc_t, clashes)
        if lines is not None:
            merged[key] = lines
    decisions = _decide_rules(doc_b, doc_o, doc_t, merged, clashes)
    _place_rules(decisions, doc_o, doc_t, merged, clashes)
    out = list(front)
    for lines in merged.values():
        out.extend(decisions[line[len(_TOKEN):]] or "" if line.startswith(_TOKEN) else line for line in lines)
    return _join(out, theirs or ours), clashes
