"""provenance.json and CONFLICTS.md: why each rule exists, and what disagrees with what.

provenance.json is the memory between runs: it maps every written rule to its lessons,
traces, support and evidence; keeps withheld rules (needing review, rejected by a reviewer,
below the support threshold) with their evidence so their support keeps growing; records the
conflict ledger, the rules reviewers removed, the sections and files trace2skill created (so it
can tidy them and never touches anything else), and the derived description. It is written
deterministically (sorted keys, indent 2, trailing newline) so equal content is equal bytes.

CONFLICTS.md renders the ledger for people: both sides' evidence, status and resolution.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import SkillValidationError
from .rules import RuleRecord, clean
from .types import Conflict, JSONFields, Lesson, distinct_trace_ids, evidence_rows, row_json

FORMAT = 1


class Provenance(BaseModel):
    """The parsed provenance.json (unknown keys are ignored so older tools can read newer files)."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    format: int = FORMAT
    skill: str = ""
    version: str | None = None
    run: JSONFields = Field(default_factory=dict)
    """The run that produced this version: id, model, mode, source digest, trace outcomes."""
    description: str | None = None
    """The description trace2skill derived, so a later run knows it may re-derive it."""
    rules: dict[str, RuleRecord] = Field(default_factory=dict)
    withheld: dict[str, RuleRecord] = Field(default_factory=dict)
    conflicts: tuple[Conflict, ...] = ()
    rejected: dict[str, int] = Field(default_factory=dict)
    """Rule id -> support it had when a reviewer removed it from the skill."""
    sections: tuple[tuple[str, ...], ...] = ()
    """`(file, heading, ...)` of every section trace2skill created and may remove when empty."""
    files: tuple[str, ...] = ()
    """Files trace2skill generated; only these are ever deleted from the folder."""
    gate: JSONFields | None = None
    """The gate decision this version passed (kind, both scores, tolerance, command), when gated."""


def load_provenance(text: str) -> Provenance:
    """Parse provenance.json.

    Raises:
        SkillValidationError: not JSON, not the shape trace2skill writes, or a `files` entry
            that is not a plain relative path inside the skill folder.
    """
    from .fsguard import safe_relative

    try:
        provenance = Provenance.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise SkillValidationError([f"provenance.json is unreadable ({str(exc).splitlines()[0]}); "
                                    "restore it from git or delete it to start a fresh history"]) from None
    for name in provenance.files:
        safe_relative(name, "provenance.json lists the file")
    return provenance


def dump_provenance(provenance: Provenance) -> str:
    """Deterministic JSON: sorted keys, indent 2, derived support counts beside the evidence
    (the text `iter_provenance` streams, joined)."""
    return "".join(iter_provenance(provenance))


_ENCODER = json.JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False)


def iter_provenance(provenance: Provenance) -> Iterator[str]:
    """provenance.json in pieces, one evidence item at a time: the text
    `json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"` gives the whole
    file's data, without ever holding that data or its text. Each record's evidence grows with
    the corpus (every trajectory that supports it), so the file is encoded and written as it
    goes (`skill.FileSet`): objects and lists down to the evidence items are written by
    `_pieces`, every other value is encoded alone and indented by its depth, which is exact
    because JSON text never holds a raw line break inside a string."""
    data = provenance.model_dump(mode="json", exclude={"rules", "withheld"})  # records dumped one at a time, below
    if data.get("gate") is None:
        data.pop("gate", None)  # written only by a gated run (gate.recorded)
    for table in ("rules", "withheld"):
        records = getattr(provenance, table)
        data[table] = _Object(lambda records=records: ((rid, _Object(lambda r=records[rid]: _record_items(r)))
                                                       for rid in sorted(records)))
    yield from _pieces(_Object(lambda: sorted(data.items())), 0)
    yield "\n"


class _Object:
    """A JSON object written a member at a time: `members()` gives `(key, value)` in key order."""

    def __init__(self, members: Callable[[], Iterable[tuple[str, object]]]):
        self.members = members


class _List:
    """A JSON list written an item at a time."""

    def __init__(self, items: Iterable[object]):
        self.items = items


def _pieces(value: object, depth: int) -> Iterator[str]:
    """`value` at nesting `depth` as `json.dumps(..., sort_keys=True, indent=2)` writes it there."""
    if not isinstance(value, (_Object, _List)):
        yield _ENCODER.encode(value).replace("\n", "\n" + "  " * depth)
        return
    opening, closing = ("{", "}") if isinstance(value, _Object) else ("[", "]")
    pad = "\n" + "  " * (depth + 1)
    count = 0
    for item in (value.members() if isinstance(value, _Object) else value.items):
        yield ("," if count else opening) + pad
        count += 1
        if isinstance(value, _Object):
            key, item = item
            yield _ENCODER.encode(key) + ": "
        yield from _pieces(item, depth + 1)
    yield "\n" + "  " * depth + closing if count else opening + closing


def _record_items(record: RuleRecord) -> list[tuple[str, object]]:
    """A record's members as provenance.json writes them, its evidence and trace ids as lists
    written an item at a time (read from packed rows, no `Evidence` object per item); derived
    support counts beside the evidence."""
    data: dict[str, object] = record.model_dump(mode="json", exclude={"evidence"})
    if not data.get("rendered"):
        data.pop("rendered", None)  # only hand-edited rules carry it; other records stay as they were
    data.update(evidence=_List(row_json(row) for row in evidence_rows(record.evidence)),
                trace_ids=_List(distinct_trace_ids(record.evidence)),
                support=record.support, failing_support=record.failing_support, succeeding_support=record.succeeding_support)
    return sorted(data.items())


# --------------------------------------------------------------------------------------------
# The ledger for people


def render_conflicts(conflicts: Iterable[Conflict], rule_id_of: Callable[[str], str]) -> str:
    """CONFLICTS.md: needs-review conflicts first, each with both sides' evidence."""
    ordered = sorted(conflicts, key=lambda c: (c.status != "needs-review", c.id))
    lines = ["# Conflict ledger", "",
             "Contradictions between lessons, or between a lesson and this skill, recorded rather than "
             "settled silently. A lesson in a conflict that needs review stays out of SKILL.md until "
             "the conflict is resolved.", ""]
    if not ordered:
        lines += ["No conflicts recorded.", ""]
    for conflict in ordered:
        lines += _conflict_lines(conflict, rule_id_of)
    return "\n".join(lines)


def _conflict_lines(conflict: Conflict, rule_id_of: Callable[[str], str]) -> list[str]:
    resolution = conflict.resolution or ("kept out of SKILL.md until a person decides" if conflict.status == "needs-review" else "")
    winner = next((side for side in (conflict.a, conflict.b) if side.id == conflict.winner), None)
    lines = [f"## {conflict.id}: {clean(conflict.a.title)} vs {clean(conflict.b.title)}", "",
             f"- Status: {conflict.status}", f"- Detected by: {conflict.detected_by}",
             f"- Reason: {clean(conflict.reason)}"]
    if resolution:
        lines.append(f"- Resolution: {clean(resolution)}")
    if winner is not None:
        lines.append(f"- Kept: {clean(winner.title)} (`{rule_id_of(winner.signature)}`)")
    lines.append("")
    for label, side in (("A", conflict.a), ("B", conflict.b)):
        lines += _side_lines(label, side, rule_id_of)
    return lines


def _side_lines(label: str, side: Lesson, rule_id_of: Callable[[str], str]) -> list[str]:
    stance = "recommends" if side.polarity == "do" else "forbids"
    name = "A hand-written bullet" if side.signature.startswith("hand-written:") else f"Rule `{rule_id_of(side.signature)}`"
    lines = [f"### Side {label}: {clean(side.title)}", "",
             f"{name} {stance} {clean(side.subject) or 'its subject'}: {clean(side.rule)}",
             "", f"Support: {side.failing_support} failed / {side.succeeding_support} successful runs.", ""]
    if not side.evidence:
        lines += ["Evidence: the text of the existing skill.", ""]
        return lines
    for evidence in side.evidence:
        steps = ", ".join(str(step) for step in evidence.steps) or "-"
        quote = clean(evidence.quote).replace("`", "'")
        lines.append(f"- `{evidence.trace_id}` ({evidence.outcome}), steps {steps}" + (f": `{quote}`" if quote else ""))
    return lines + [""]


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
