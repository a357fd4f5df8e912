"""Managed rules: stable ids, evidence that accumulates across runs, and the bullet text.

A rule's id comes from its lesson's *signature* (`r-` + the first 8 hex digits of the
signature's SHA-256), not from its wording or evidence, so the same rule keeps its id while
its support grows and its wording is refined. A `RuleRecord` is what provenance.json keeps
for each rule; `merge_records` folds a run's lessons into the previous records:

- evidence is unioned by trace: a trace analysed in this run contributes exactly what this
  run found in it (so re-running on the same traces changes nothing, and a trace that no
  longer supports a rule stops counting), while traces not analysed in this run keep their
  old evidence (so an incremental run over new traces keeps the old support);
- a record whose evidence becomes empty disappears.

Support counts are always derived from the evidence, as for `Lesson`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .types import (Evidence, EvidenceRow, EvidenceTuple, Lesson, LessonKind, PackedEvidence, Supported, evidence_of_rows,
                    evidence_rows, key_runs, sorted_rows)

_WHEN_OPENERS = ("when", "if ", "before", "after", "while", "whenever", "during", "for ", "in ", "on ", "once",
                 "unless", "every ", "any ")


def rule_id(signature: str) -> str:
    """The stable id of the rule for lessons with this signature."""
    return "r-" + hashlib.sha256(signature.encode("utf-8")).hexdigest()[:8]


class RuleRecord(Supported, BaseModel):
    """One rule as provenance.json records it."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    id: str
    title: str
    rule: str
    when: str
    kind: LessonKind
    signature: str
    polarity: Literal["do", "avoid"] = "do"
    subject: str = ""
    lesson_ids: tuple[str, ...] = ()
    """Ids of the lessons (and the leaf lessons they merged) that fed this rule."""
    evidence: EvidenceTuple = ()
    first_seen_run: str = ""
    last_seen_run: str = ""
    """The latest run whose lessons included this rule."""
    file: str = ""
    """Where the rule is written (`SKILL.md`, `references/...`); empty while withheld."""
    section: str = ""
    """Heading path of the section holding it, joined with ` > `."""
    text: str = ""
    """The bullet as written, without its marker."""
    reason: str | None = None
    """Why a withheld rule is not written: needs-review, lost-conflict, rejected, below-min-support."""
    rendered: str = ""
    """Set once a person has reworded the rule or moved it to another file: `rendered_key` of
    the bullet and file trace2skill last wrote, so the edit is recognised (and kept) on every
    later run. Empty while the bullet is as trace2skill wrote it (`text` and `file`)."""


def rendered_key(text: str, file: str) -> str:
    """What identifies a bullet as trace2skill wrote it: its text and the file holding it."""
    from .types import content_hash

    return content_hash([text, file])[:16]



def rank_key(record: RuleRecord) -> tuple:
    """More support first; failure evidence ahead of success evidence; then id, for determinism."""
    return -record.support, -record.failing_support, record.id


def merge_records(
    lessons: Iterable[Lesson],
    previous: Mapping[str, RuleRecord],
    reanalysed: Iterable[str],
    run_id: str,
) -> dict[str, RuleRecord]:
    """Fold this run's lessons into the previous records (see the module docstring).

    Args:
        lessons: the run's final lessons (losers of resolved conflicts already removed).
        previous: records from the last build (written and withheld ones).
        reanalysed: ids of every trace analysed in this run.
        run_id: this run's id, for first/last seen.
    """
    groups: dict[str, list[Lesson]] = defaultdict(list)
    for lesson in lessons:
        groups[rule_id(lesson.signature)].append(lesson)
    fresh_runs = set(reanalysed)
    merged: dict[str, RuleRecord] = {}
    for rid in sorted(set(groups) | set(previous)):
        group, prior = groups.get(rid, []), previous.get(rid)
        merged_record = _merge_one(rid, group, prior, fresh_runs, run_id)
        if merged_record is not None:
            merged[rid] = merged_record
    return merged


def _merge_one(rid: str, group: list[Lesson], prior: RuleRecord | None, reanalysed: set[str],
               run_id: str) -> RuleRecord | None:
    kept = _kept_rows(prior, group, reanalysed)
    evidence = union_records(kept, [lesson.evidence for lesson in group])
    if not evidence:
        return None
    lead = min(group, key=lambda l: (-l.support, -l.failing_support, l.id)) if group else None
    lesson_ids = set(prior.lesson_ids if prior and kept.found else ())
    lesson_ids |= {l.id for l in group} | {m for l in group for m in l.merged_from}
    wording = lead if lead is not None else prior
    return RuleRecord(
        id=rid, title=wording.title, rule=wording.rule, when=wording.when, kind=wording.kind,
        signature=wording.signature, polarity=wording.polarity, subject=wording.subject,
        lesson_ids=tuple(sorted(lesson_ids)), evidence=evidence,
        first_seen_run=prior.first_seen_run if prior and prior.first_seen_run else run_id,
        last_seen_run=run_id if group else (prior.last_seen_run if prior else run_id),
    )


class _KeptRows:
    """The prior record's evidence of traces neither analysed in this run nor in the new
    evidence, streamed; `found` says (once read) whether any was kept."""

    def __init__(self, rows: Iterable[EvidenceRow], gone: Callable[[str], bool]):
        self.rows, self.gone, self.found = rows, gone, False

    def __iter__(self) -> Iterator[EvidenceRow]:
        for row in self.rows:
            if not self.gone(row[0]):
                self.found = True
                yield row


def _kept_rows(prior: RuleRecord | None, group: list[Lesson], reanalysed: set[str]) -> _KeptRows:
    if prior is None or not prior.evidence:
        return _KeptRows((), bool)
    new_ids = {row[0] for lesson in group for row in evidence_rows(lesson.evidence)}
    return _KeptRows(sorted_rows(prior.evidence), lambda trace_id: trace_id in reanalysed or trace_id in new_ids)


def union_records(kept: Iterable[EvidenceRow], new: list[Iterable[Evidence]]) -> "PackedEvidence | tuple[Evidence, ...]":
    """A record's evidence: the distinct items of `kept` (rows in `row_key` order) and `new`,
    sorted by trace id, steps, quote and outcome (`sorted(set(...))` of the items, streamed: a
    k-way merge of the sorted inputs, whose runs of one `row_key` differ only in outcome);
    packed from `PACK_EVIDENCE_FROM` items on."""
    streams = [iter(kept), *(sorted_rows(evidence) for evidence in new)]
    return evidence_of_rows(row for run in key_runs(streams) for row in sorted(set(run), key=lambda row: row[1]))


def record_lesson(record: RuleRecord) -> Lesson:
    """The record as a `Lesson`, for the conflict ledger."""
    return Lesson.create(
        title=record.title, rule=record.rule, when=record.when, kind=record.kind, signature=record.signature,
        polarity=record.polarity, subject=record.subject, evidence=record.evidence, merged_from=record.lesson_ids,
    )


# --------------------------------------------------------------------------------------------
# Bullet text


def render_rule(record: RuleRecord) -> str:
    """`- **Title.** Rule. When it applies. (evidence: N failed / M successful runs)`, one line."""
    title = clean(record.title).rstrip(" .:;") or clean(record.signature)
    parts = [f"- **{title}.**", sentence(clean(record.rule)), when_clause(clean(record.when)), f"({support_phrase(record)})"]
    return " ".join(part for part in parts if part)


def support_phrase(record: RuleRecord) -> str:
    phrase = f"evidence: {record.failing_support} failed / {record.succeeding_support} successful runs"
    unlabelled = record.support - record.failing_support - record.succeeding_support
    return phrase + (f", {unlabelled} unlabelled" if unlabelled else "")


def clean(text: str) -> str:
    """One line of Markdown-safe text: no HTML comments, no code fences, single spaces."""
    text = text.replace("<!--", "").replace("-->", "")
    text = re.sub(r"`{3,}", "`", text)
    return " ".join(text.split())


def sentence(text: str) -> str:
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?`)\"'" else text + "."


def when_clause(when: str) -> str:
    """`running pytest` -> `When running pytest.`; clauses that open with a condition keep it."""
    if not when:
        return ""
    lowered = when.casefold()
    if not lowered.startswith(_WHEN_OPENERS) and not lowered.startswith("applies"):
        head = when[0].lower() if when[1:2].islower() else when[0]
        when = "When " + head + when[1:]
    return sentence(when)
