import asyncio

from trace2skill.consolidate import MergeDecision, chunk, merge_sets, merge_sets_llm
from trace2skill.testing import ScriptedLLM
from trace2skill.types import Evidence, Lesson, LessonSet


def lesson(trace_id, outcome="failure", signature="timeout:pytest", title="Run single tests", rule="Run one test with -x.",
           subject="pytest", polarity="do", when="When running tests.", kind="pitfall"):
    return Lesson.create(
        title=title, rule=rule, when=when, kind=kind, signature=signature, subject=subject, polarity=polarity,
        evidence=(Evidence(trace_id=trace_id, outcome=outcome, steps=(3,), quote=f"quote from {trace_id}"),),
    )


def one(l: Lesson) -> LessonSet:
    return LessonSet(lessons=(l,), sources=(l.evidence[0].trace_id,))


def test_chunk_spreads_a_lone_remainder_over_the_previous_group():
    assert [len(g) for g in chunk(list(range(11)), 5)] == [5, 6]
    assert [len(g) for g in chunk(list(range(12)), 5)] == [5, 5, 2]
    assert chunk([1], 5) == [[1]]


def test_same_signature_merges_with_exact_support_and_leaf_provenance():
    leaves = [lesson("t1"), lesson("t2"), lesson("t3", outcome="success"), lesson("t1")]
    merged = merge_sets([one(l) for l in leaves], level=1)
    assert len(merged.lessons) == 1
    top = merged.lessons[0]
    assert (top.failing_support, top.succeeding_support) == (2, 1)
    assert set(top.merged_from) == {l.id for l in leaves}
    assert merged.sources == ("t1", "t2", "t3")


def test_provenance_survives_two_levels():
    leaves = [lesson(f"t{i}", signature=f"sig:{i % 3}", title=f"Rule family {i % 3}", rule=f"Do thing number {i % 3} always.") for i in range(9)]
    level1 = [merge_sets([one(l) for l in group], 1) for group in chunk(leaves, 3)]
    top = merge_sets(level1, 2)
    assert {leaf for l in top.lessons for leaf in l.merged_from} == {l.id for l in leaves}
    assert sorted(l.support for l in top.lessons) == [3, 3, 3]


def test_near_identical_wording_merges_but_different_rules_do_not():
    a = lesson("t1", signature="x:1", title="Use python -m pytest", rule="Invoke pytest as python -m pytest in this environment.")
    b = lesson("t2", signature="x:2", title="Use python -m pytest", rule="Invoke pytest as python -m pytest in this environment!")
    c = lesson("t3", signature="x:3", title="Reproduce first", rule="Write a reproduction script before editing code.", subject="repro")
    merged = merge_sets([one(a), one(b), one(c)], 1)
    assert sorted(l.support for l in merged.lessons) == [1, 2]


def test_opposite_polarity_on_one_subject_is_a_conflict_not_a_drop():
    do = [lesson(f"s{i}", outcome="success", signature="sed:do", title="Edit files with sed -i", rule="Use sed -i for edits.", subject="sed", polarity="do", when="When editing files") for i in range(2)]
    avoid = [lesson(f"f{i}", signature="sed:avoid", title="Do not edit files with sed -i", rule="Avoid sed -i for multi-line edits.", subject="sed", polarity="avoid", when="When editing files") for i in range(2)]
    merged = merge_sets([one(l) for l in do + avoid], 1)
    assert len(merged.lessons) == 2
    [conflict] = merged.conflicts
    assert conflict.status == "needs-review"
    assert {conflict.a.signature, conflict.b.signature} == {"sed:do", "sed:avoid"}
    assert conflict.a.evidence and conflict.b.evidence


def test_llm_merge_groups_paraphrases_and_records_contradictions():
    a = lesson("t1", signature="llm:a", title="Run targeted tests", rule="Run only the affected test file.", subject="pytest")
    b = lesson("t2", signature="llm:b", title="Only run relevant tests", rule="Limit pytest to the touched module.", subject="pytest")
    c = lesson("t3", signature="llm:c", title="Run the full suite", rule="Always run every test before submitting.", subject="tests", kind="procedure")
    sets = [one(a), one(b), one(c)]
    ids = sorted(l.id for l in merge_sets(sets, 1).lessons)
    llm = ScriptedLLM().enqueue("merge", MergeDecision(
        groups=[{"members": [a.id, b.id, "L-invented"], "title": "Run targeted tests", "rule": "Run only the tests of the module you changed.",
                 "when": "Before submitting.", "kind": "procedure", "subject": "pytest", "polarity": "do"}],
        contradictions=[{"a": a.id, "b": c.id, "reason": "targeted vs full suite"}],
    ))
    merged = asyncio.run(merge_sets_llm(sets, 1, llm))
    assert len(ids) == 3 and llm.count("merge") == 1
    assert sorted(l.support for l in merged.lessons) == [1, 2]
    grouped = next(l for l in merged.lessons if l.support == 2)
    assert set(grouped.merged_from) == {a.id, b.id}
    assert [c.detected_by for c in merged.conflicts] == ["llm"]
    assert merged.conflicts[0].status == "needs-review"


def test_merge_is_order_invariant():
    leaves = [lesson(f"t{i}", signature=f"s{i % 4}", title=f"Title {i % 4}", rule=f"Rule {i % 4} text here.") for i in range(12)]
    forward = merge_sets([one(l) for l in leaves], 1)
    backward = merge_sets([one(l) for l in reversed(leaves)], 1)
    assert forward == backward


def test_large_sets_are_judged_in_bounded_windows_without_losing_lessons():
    from trace2skill.consolidate import MERGE_WINDOW

    leaves = [lesson(f"t{i}", signature=f"sig:{i}", title=f"Distinct rule {i} about topic {i * 7}",
                     rule=f"Follow instruction number {i} exactly as {i * 13} says.", subject=f"tool-{i % 9}") for i in range(90)]
    llm = ScriptedLLM(lambda messages, output, purpose: MergeDecision(groups=[], contradictions=[]))
    merged = asyncio.run(merge_sets_llm([one(l) for l in leaves], 1, llm))
    assert llm.count("merge") == -(-90 // MERGE_WINDOW)
    assert all(len(call.messages[1]["content"].split("- id: ")) - 1 <= MERGE_WINDOW for call in llm.calls)
    assert len(merged.lessons) == 90
