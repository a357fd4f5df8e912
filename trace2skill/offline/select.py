"""The corpus pass: keep the lessons the corpus backs, word them from the numbers.

It runs once after consolidation, with every trace of the run:

* an error or pack pitfall is kept when at least `MIN_PITFALL_SUPPORT` trajectories hit it,
  whatever their outcome (recurrence across runs is the signal, so unlabelled corpora teach
  too); a generic error's rule is rewritten with its template, its exact counts of failed,
  resolved and unlabelled runs, a real example and, when one form of command worked next in
  at least `MIN_RECOVERY_COUNT` runs and 1/`RECOVERY_SHARE` of them, that recovery;
* behaviours are contrasted between resolved and failed runs (`behaviours.contrast`): kept
  only when the difference is real, worded in the direction the numbers point, with the
  evidence limited to the runs that argue for the rule.

Anything else (facts, heuristics from elsewhere) passes through untouched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol, SupportsBytes

from ..types import Lesson, PackedEvidence, RowPacker, Trace, evidence_rows, union_evidence
from . import packs
from .behaviours import (MIN_RUNS, Behaviours, Labelled, Shown, Tally, Verdict, as_lesson, count, generic_behaviours,
                         source_of, tested)
from .edits import edited_files
from .runs import Run, read_runs
from .shell import shape
from .wording import (behaviour_shown, behaviour_wording, counted_error_rule, error_signature, error_wording,
                      parse_error)

MIN_PITFALL_SUPPORT = 2
MIN_RECOVERY_COUNT = 2
RECOVERY_SHARE = 4
"""A recovery is quoted in the rule only when at least 1/RECOVERY_SHARE of the runs used it."""
MAX_BEHAVIOURS = 8
"""Most behaviour rules one skill gets: the strongest by adjusted p-value, then signature."""


class Observed(Labelled, Protocol):
    """A run as the corpus pass sees it (`stream.IndexEntry`): id, outcome, and its packed
    `Behaviours` (`observed` makes them for a trace; None for an unlabelled run)."""

    @property
    def behaviours(self) -> "bytes | SupportsBytes | None": ...


def select_offline(lessons: list[Lesson], runs: Sequence[Observed]) -> list[Lesson]:
    """Corpus-level pass over consolidated offline lessons (module docstring).

    Args:
        lessons: consolidated lessons (one per signature), as produced from `analyse_offline`.
        runs: every run of the run's corpus, with its behaviours (their outcomes and behaviours
            feed the behaviour contrast); the trajectories themselves are not needed.

    Returns:
        The kept lessons, pitfalls first, each group by descending support then signature.
    """
    kept = [judged for lesson in merge_templates(lessons) if (judged := _judge_pitfall(lesson)) is not None]
    kept += behaviour_rules(runs)
    return sorted(kept, key=lambda x: (x.kind != "pitfall", -x.support, x.signature))


MERGE_MIN_TOKENS = 6
"""Templates this long that differ in one word are one message with an unmasked value."""


def merge_templates(lessons: list[Lesson]) -> list[Lesson]:
    """Merge generic errors of one family whose templates differ in a single word (a value the
    masker could not recognise, such as a branch name: "fatal: The current branch spotter-fum has
    no upstream branch."); that word becomes `<value>`. Deterministic: lessons are taken by
    signature, and a word is only generalised when at least two templates disagree on it."""
    clusters: dict[tuple[str, int], list[tuple[list[str], list[Lesson]]]] = {}
    rest = []
    for lesson in sorted(lessons, key=lambda l: l.signature):
        family, template = parse_error(lesson.signature) if lesson.signature.startswith("error:") else ("", "")
        words = template.split()
        if len(words) < MERGE_MIN_TOKENS:
            rest.append(lesson)
            continue
        for pattern, members in clusters.setdefault((family, len(words)), []):
            differ = [i for i, (a, b) in enumerate(zip(pattern, words)) if a != b and a != "<value>"]
            wild = [i for i, a in enumerate(pattern) if a == "<value>"]
            if len(differ) + len(wild) <= 1 and (not wild or not differ) and (differ or wild):
                for i in differ:
                    pattern[i] = "<value>"
                members.append(lesson)
                break
        else:
            clusters[(family, len(words))].append((list(words), [lesson]))
    for (family, _), found in sorted(clusters.items()):
        for pattern, members in found:
            if len(members) == 1:
                rest.append(members[0])
                continue
            signature = error_signature(family, " ".join(pattern))
            rest.append(Lesson.create(signature=signature, evidence=union_evidence(m.evidence for m in members),
                                      merged_from=tuple(sorted({i for m in members for i in (m.merged_from or (m.id,))})),
                                      **error_wording(signature)))
    return rest


def nothing_learned(traces: Iterable[Labelled]) -> str:
    """Why a corpus gave no rule, for the message the CLI prints (exit 3)."""
    outcomes = Counter(t.outcome for t in traces)
    total = sum(outcomes.values())
    reason = f"no error recurred in {MIN_PITFALL_SUPPORT} or more of the {total} runs"
    if outcomes["success"] and outcomes["failure"]:
        return reason + " and no behaviour separated resolved from failed runs; nothing was written"
    missing = "resolved and failed" if not outcomes["success"] and not outcomes["failure"] else (
        "failed" if not outcomes["failure"] else "resolved")
    return (reason + f", and behaviours were not compared because no {missing} runs are labelled "
            "(give outcomes with --labels); nothing was written")


def _judge_pitfall(lesson: Lesson) -> Lesson | None:
    """Keep a pitfall enough runs hit; name the recovery most of them used, when it is common."""
    if lesson.kind != "pitfall":
        return lesson
    if lesson.support < MIN_PITFALL_SUPPORT:
        return None
    recovery = _recovery_sentence(lesson)
    if lesson.signature.startswith("error:"):
        first = min((row for row in evidence_rows(lesson.evidence) if len(row[2]) == 1),
                    key=lambda row: (row[1] != "failure", row[0], row[2]), default=None)
        rule = counted_error_rule(lesson, first[3] if first else "", recovery)
        return Lesson.create(**{**lesson.model_dump(exclude={"id", "evidence", "rule"}), "rule": rule,
                                "evidence": lesson.evidence})
    return _restate(lesson, recovery) if recovery else lesson


def _recovery_sentence(lesson: Lesson) -> str:
    recoveries = {row[0]: row[3] for row in evidence_rows(lesson.evidence) if len(row[2]) == 2}
    shapes = Counter(shape(q) for q in recoveries.values())
    if not shapes:
        return ""
    common, count = min(shapes.items(), key=lambda kv: (-kv[1], kv[0]))
    if count < MIN_RECOVERY_COUNT or count * RECOVERY_SHARE < lesson.support:
        return ""
    if lesson.signature.startswith(f"error:{common}|"):
        return f"In {count} of the {lesson.support} runs that hit this, a later `{common}` call with other arguments worked."
    return f"In {count} of the {lesson.support} runs that hit this, `{common}` was the command that worked next."


def _restate(original: Lesson, sentence: str) -> Lesson:
    fields = original.model_dump(exclude={"id", "evidence"})
    fields["rule"] = f"{original.rule} {sentence}"
    return Lesson.create(evidence=original.evidence, **fields)


def observe(trace: Trace, runs: list[Run] | None = None, writes: list[set[str]] | None = None) -> tuple[list[Shown], set[str]]:
    """The behaviours one run showed, generic and from every pack that applies, and the
    sources (`generic`, pack names) it was judged by (`runs`, `writes`: when the caller has them)."""
    runs = read_runs(trace) if runs is None else runs
    writes = edited_files(runs) if writes is None else writes
    shown, sources = generic_behaviours(runs, writes), {"generic"}
    for pack in packs.PACKS:
        if pack.applies(trace, runs):
            shown += pack.behaviours(trace, runs, writes)
            sources.add(pack.NAME)
    return shown, sources


def observed(trace: Trace, runs: list[Run] | None = None, writes: list[set[str]] | None = None) -> bytes | None:
    """The packed `Behaviours` of a labelled trace (None for an unlabelled one), as a run keeps them."""
    if trace.outcome not in ("success", "failure"):
        return None
    shown, sources = observe(trace, runs, writes)
    return Behaviours(tuple(shown), tuple(sorted(sources))).pack()


def behaviour_rules(runs: Sequence[Observed]) -> list[Lesson]:
    """Behaviours that really separate resolved from failed runs, as lessons (module docstring).

    Two passes over the packed behaviours, one run unpacked at a time: count who showed what,
    test, then collect the evidence of the kept behaviours only."""
    labelled = [r for r in runs if r.outcome in ("success", "failure") and r.behaviours is not None]
    if len({r.outcome for r in labelled}) < 2 or len(labelled) < MIN_RUNS:
        return []
    showed: Tally = {}
    judged: Tally = {"generic": [0, 0], **{pack.NAME: [0, 0] for pack in packs.PACKS}}
    for run in labelled:
        behaviours = Behaviours.unpack(bytes(run.behaviours or b""))
        for signature in {item.signature for item in behaviours.shown}:
            count(showed, signature, run.outcome)
        for source in behaviours.sources:
            count(judged, source, run.outcome)
    verdicts = sorted(tested(showed, judged), key=lambda v: (v.q, v.signature))
    evidence = _evidence(verdicts, labelled)
    lessons = []
    for verdict in verdicts:
        if source_of(verdict.signature) == "generic":
            wording, what = behaviour_wording(verdict.signature, verdict.polarity), behaviour_shown(verdict.signature)
        else:
            wording, what = packs.wording(verdict.signature), packs.shown(verdict.signature)
            if wording is None or wording["polarity"] != verdict.polarity:
                continue  # the pack's advice points the other way than these numbers
        lessons.append(as_lesson(verdict, wording, what, evidence[verdict.signature]))
    return lessons[:MAX_BEHAVIOURS]


def _evidence(verdicts: list[Verdict], labelled: Sequence[Observed]) -> dict[str, PackedEvidence]:
    """Per kept behaviour, the runs on the side that argues for its rule, with steps and quote
    (the first item a run showed of it), packed as they come: a behaviour most runs show has
    an item per run, tens of thousands at scale."""
    wanted = {v.signature: "success" if v.polarity == "do" else "failure" for v in verdicts}
    found = {signature: RowPacker() for signature in wanted}
    for run in labelled:
        if run.outcome not in wanted.values():
            continue
        for item in Behaviours.unpack(bytes(run.behaviours or b"")).shown:
            packer = found.get(item.signature)
            if wanted.get(item.signature) == run.outcome and (packer.last is None or packer.last[0] != run.id):
                packer.add((run.id, run.outcome, tuple(item.steps), item.quote))
    return {signature: packer.packed() for signature, packer in found.items()}
