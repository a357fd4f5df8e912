"""Evidence is merged, sorted and written a chunk at a time, and gives what the whole lists gave.

At 50,000 trajectories the rule most of them support holds about 51,000 evidence items. A
merge (`consolidate._combine`), the author (`rules._merge_one`) and provenance.json's encoder
used to unpack every item as an `Evidence` object, into a dict or a set, and sort it. They now
read packed rows (`types.EvidenceRow`) in chunks and merge the members' sorted rows k ways.
These tests hold the streamed results to the plain computations they replace, written out
here in a few lines over the items (a dict keyed as before, `sorted(set(...))`, sets of ids),
on random inputs with duplicates, conflicting outcomes, unsorted and multi-chunk members.
"""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest

from trace2skill import types
from trace2skill.provenance import Provenance, dump_provenance
from trace2skill.rules import RuleRecord, _merge_one, union_records
from trace2skill.types import (Conflict, Evidence, Lesson, LessonSet, PackedEvidence, content_hash, evidence_rows,
                               union_evidence)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 rows, so inputs of a few dozen items span several chunks."""
    monkeypatch.setattr(types, "EVIDENCE_CHUNK", 7)


def _items(rng: random.Random, n: int, traces: int = 25) -> list[Evidence]:
    """Random items drawn from a small space, so keys repeat within and across groups, and a
    repeated key may carry another outcome (the case where which one wins matters)."""
    return [Evidence(trace_id=f"t{rng.randrange(traces):02d}", outcome=rng.choice(["failure", "success", "unknown"]),
                     steps=tuple(sorted(rng.sample(range(6), rng.randrange(1, 3)))), quote=rng.choice(["a", "b", "c \u2026"]))
            for _ in range(n)]


def _as_held(rng: random.Random, items: list[Evidence]):
    """`items` as a lesson may hold them: sorted and packed, packed unsorted, or a plain tuple."""
    key = lambda e: (e.trace_id, e.steps, e.quote)  # noqa: E731
    form = rng.randrange(3)
    if form == 0:
        return PackedEvidence.of(sorted(items, key=key))
    if form == 1:
        return PackedEvidence.of(items)
    return tuple(items)


def _counts(items) -> tuple[int, int, int, int]:
    items = list(items)
    return (len(items), len({e.trace_id for e in items}), len({e.trace_id for e in items if e.outcome == "failure"}),
            len({e.trace_id for e in items if e.outcome == "success"}))


def test_packed_rows_read_back_in_order_with_counts_of_the_items(small_chunks):
    rng = random.Random(7)
    for n in (0, 1, 6, 7, 8, 50, 200):
        items = _items(rng, n)
        for held in (PackedEvidence.of(items), PackedEvidence.of(sorted(items, key=lambda e: (e.trace_id, e.steps, e.quote)))):
            assert list(held) == items or list(held) == sorted(items, key=lambda e: (e.trace_id, e.steps, e.quote))
            assert len(held.chunks) == -(-n // 7)
            assert (held.count, held.support, held.failing, held.succeeding) == _counts(held)
            assert held.ordered == (list(held) == sorted(held, key=lambda e: (e.trace_id, e.steps, e.quote)))


def test_k_way_merge_equals_the_dict_merge_on_random_members(small_chunks):
    """`union_evidence` against `{(trace_id, steps, quote): item ...}` over every member in
    order (later members win a key), sorted: what `_combine` computed before."""
    rng = random.Random(13)
    for _ in range(200):
        groups = [_items(rng, rng.randrange(0, 40)) for _ in range(rng.randrange(1, 6))]
        held = [_as_held(rng, g) for g in groups]
        expected = {(e.trace_id, e.steps, e.quote): e for g in groups for e in g}
        expected = tuple(sorted(expected.values(), key=lambda e: (e.trace_id, e.steps, e.quote)))
        merged = union_evidence(held)
        assert tuple(merged) == expected
        assert isinstance(merged, PackedEvidence) == (len(expected) >= types.PACK_EVIDENCE_FROM)
        if isinstance(merged, PackedEvidence):
            assert merged.ordered and (merged.count, merged.support, merged.failing, merged.succeeding) == _counts(expected)


def test_record_union_equals_the_set_sort_on_random_members(small_chunks):
    """`union_records` against `sorted(set(kept + new), key=(trace_id, steps, quote, outcome))`."""
    rng = random.Random(17)
    key4 = lambda e: (e.trace_id, e.steps, e.quote, e.outcome)  # noqa: E731
    for _ in range(200):
        kept = sorted(_items(rng, rng.randrange(0, 30)), key=key4)
        new = [_items(rng, rng.randrange(0, 40)) for _ in range(rng.randrange(0, 4))]
        expected = tuple(sorted(set(kept + [e for g in new for e in g]), key=key4))
        merged = union_records(evidence_rows(kept), [_as_held(rng, g) for g in new])
        assert tuple(merged) == expected


def test_a_record_keeps_prior_evidence_of_traces_not_seen_again(small_chunks):
    """`_merge_one` with a prior record: items of traces re-analysed or in the new evidence are
    replaced, the rest kept (counted here from the items)."""
    rng = random.Random(19)
    for _ in range(50):
        prior_items = _items(rng, 40)
        prior = RuleRecord(id="R-1", title="T", rule="R.", when="Always.", kind="pitfall", signature="s:t",
                           lesson_ids=("L-old",), evidence=prior_items)
        new = _items(rng, rng.randrange(0, 30), traces=10)
        group = [Lesson.create(title="T", rule="R.", when="Always.", kind="pitfall", signature="s:t", evidence=new)] if new else []
        reanalysed = {f"t{i:02d}" for i in rng.sample(range(25), 5)}
        replaced = reanalysed | {e.trace_id for e in new}
        kept = [e for e in prior_items if e.trace_id not in replaced]
        expected = tuple(sorted(set(kept + new), key=lambda e: (e.trace_id, e.steps, e.quote, e.outcome)))
        record = _merge_one("R-1", group, prior, reanalysed, "run-x")
        if not expected:
            assert record is None
            continue
        assert tuple(record.evidence) == expected
        assert ("L-old" in record.lesson_ids) == bool(kept)
        assert record.support == len({e.trace_id for e in expected})


def test_provenance_writes_packed_evidence_as_the_items_dump(small_chunks):
    rng = random.Random(23)
    items = sorted(set(_items(rng, 300, traces=60)), key=lambda e: (e.trace_id, e.steps, e.quote, e.outcome))
    record = RuleRecord(id="R-1", title="T", rule="R.", when="Always.", kind="pitfall", signature="s:t", evidence=items)
    assert isinstance(record.evidence, PackedEvidence) and len(record.evidence.chunks) > 1
    data = json.loads(dump_provenance(Provenance(skill="s", rules={"R-1": record})))["rules"]["R-1"]
    assert data["evidence"] == [e.model_dump(mode="json") for e in items]
    assert data["trace_ids"] == sorted({e.trace_id for e in items})
    assert (data["support"], data["failing_support"]) == (len(data["trace_ids"]), len({e.trace_id for e in items if e.outcome == "failure"}))


def test_hashes_of_packed_lessons_and_conflicts_are_those_of_their_whole_dumps(small_chunks):
    rng = random.Random(29)
    a, b = (Lesson.create(title=t, rule=f"{t} it.", when="When testing.", kind="heuristic", signature=f"s:{t}", polarity=p,
                          subject="pytest", evidence=_items(rng, 120))
            for t, p in (("Use pytest", "do"), ("Avoid pytest", "avoid")))
    assert isinstance(a.evidence, PackedEvidence)
    conflict = Conflict(id="C-1", a=a, b=b, reason="r", detected_by="polarity", status="needs-review")
    lesson_set = LessonSet(lessons=(a, b), conflicts=(conflict,), level=2, sources=("t00",))
    assert lesson_set.key() == content_hash(lesson_set.model_dump(mode="json"))
    assert a.id == "L-" + content_hash(a.model_dump(mode="json", exclude={"id", "cause"}))[:12]


def test_the_merge_holds_a_chunk_of_each_member_not_their_items():
    """Merging two packed members of 20,000 items allocates at its peak a small part of what
    their rows take when read whole (the old merge held every item as an object, and more)."""
    rng = random.Random(31)
    members = [PackedEvidence.of(sorted((Evidence(trace_id=f"trajectory-{rng.randrange(10**6):07d}", outcome="failure",
                                                  steps=(rng.randrange(100),), quote=f"quote {rng.randrange(10**6)}")
                                         for _ in range(20_000)), key=lambda e: (e.trace_id, e.steps, e.quote)))
               for _ in range(2)]
    tracemalloc.start()
    whole = [list(m.rows()) for m in members]
    _, rows_peak = tracemalloc.get_traced_memory()
    del whole
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    merged = union_evidence(members)
    _, merge_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(merged) == len({(e.trace_id, e.steps, e.quote) for m in members for e in m})
    assert merge_peak - base < rows_peak / 4, (merge_peak - base, rows_peak)
