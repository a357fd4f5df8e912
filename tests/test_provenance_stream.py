"""provenance.json is encoded and written one record at a time, never held whole.

Every rule lists every trajectory that supports it, so provenance.json grows with the corpus
(9 MB for 5,000 trajectories). These tests show the text is streamed (its pieces are records,
validation and the report never read it) and that streaming changes no byte: the pieces
joined are exactly what `json.dumps(..., sort_keys=True, indent=2, ensure_ascii=False)` makes
of their own content. The demo skill's bytes against skills_out/ are checked in test_cli.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from conftest import DEMO_TRACES

from trace2skill.config import load_config
from trace2skill.consolidate import merge_sets
from trace2skill.errors import SkillValidationError
from trace2skill.html_report import report_context
from trace2skill.pipeline import distill
from trace2skill.skill import FileSet, validate_build, write_skill_dir
from trace2skill.stream import analyse_offline_entry
from trace2skill.ingest import load_traces
from trace2skill.types import Evidence, Lesson, LessonSet, PackedEvidence, content_hash


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = load_config(overrides={"skill.out": out, "skill.name": "swe-agent-lessons"}, env={})
    return distill(config, None, [DEMO_TRACES], write=False)


def test_provenance_is_streamed_record_by_record_and_equals_its_whole_encoding(demo_build):
    _, build = demo_build
    assert isinstance(build.files, FileSet) and "provenance.json" in build.files.streamed
    pieces = list(build.files.chunks("provenance.json"))
    text = "".join(pieces)
    data = json.loads(text)
    records = len(data["rules"]) + len(data["withheld"])
    assert records >= 10
    assert len(pieces) > records  # at least one piece per record, none holding the file
    assert max(len(p) for p in pieces) < len(text) / 4
    assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert build.files["provenance.json"] == text


def test_validation_and_the_report_never_read_the_streamed_text(demo_build, tmp_path):
    result, build = demo_build

    def refuse():
        raise AssertionError("provenance.json's text was read")

    files = FileSet(build.files.texts, {"provenance.json": refuse})
    assert validate_build(type("Build", (), {"files": files, "skill_dir": None})(), "swe-agent-lessons") == []
    from_object = report_context(result, build.provenance)
    from_text = report_context(result, build.files["provenance.json"])
    assert from_object["rules"] == from_text["rules"] and from_object["conflicts"] == from_text["conflicts"]
    assert len(from_object["rules"]) == len(json.loads(build.files["provenance.json"])["rules"])


def test_a_streamed_file_is_written_as_its_pieces_joined(tmp_path):
    pieces = ["{", '\n  "a": "\u2026"', ",\n  \"b\": 1" * 5000, "\n}\n"]
    skill = tmp_path / "s"
    write_skill_dir(skill, FileSet({"SKILL.md": "---\nname: s\ndescription: A test skill. Use in tests.\n---\n\n# S\n"},
                                   {"provenance.json": lambda: iter(pieces)}), validate=False)
    assert (skill / "provenance.json").read_bytes() == "".join(pieces).encode("utf-8")


def test_an_unwritable_character_stops_the_write_and_keeps_the_old_folder(tmp_path):
    skill = tmp_path / "s"
    skill_md = "---\nname: s\ndescription: A test skill. Use in tests.\n---\n\n# S\n"
    write_skill_dir(skill, {"SKILL.md": skill_md, "provenance.json": "{}\n"}, validate=False)
    with pytest.raises(SkillValidationError, match="UTF-8"):
        write_skill_dir(skill, FileSet({"SKILL.md": skill_md}, {"provenance.json": lambda: iter(['{"q": "', "\ud800", '"}\n'])}),
                        validate=False)
    assert (skill / "provenance.json").read_text() == "{}\n"
    assert not any(p.name.startswith(".s.") for p in tmp_path.iterdir())


def test_lesson_set_key_is_the_hash_of_the_whole_dump():
    """`LessonSet.key` hashes one lesson at a time; the bytes must be those of the whole dump
    (merge trees sort by it, so any other key would change which sets merge together)."""
    traces = load_traces([str(DEMO_TRACES)], load_config(env={})).traces[:12]
    sets = [analyse_offline_entry(trace)[0] for trace in traces]
    merged = merge_sets(sets[:6], 1)
    assert merged.lessons and any(len(l.evidence) > 1 for l in merged.lessons)
    both = [Lesson.create(title=t, rule=f"{t} it.", when="When testing.", kind="heuristic", signature=f"s:{t}",
                          polarity=p, subject="pytest",
                          evidence=(Evidence(trace_id=f"t-{t}", outcome="failure", steps=(1,), quote="q \u2026"),))
            for t, p in (("Use pytest", "do"), ("Avoid pytest", "avoid"))]
    conflicted = merge_sets([LessonSet(lessons=(both[0],), sources=("t-a",)), LessonSet(lessons=(both[1],), sources=("t-b",))], 1)
    assert conflicted.conflicts
    for lesson_set in [*sets, merged, conflicted, LessonSet()]:
        assert lesson_set.key() == content_hash(lesson_set.model_dump(mode="json"))
        for lesson in lesson_set.lessons:  # ids hash the evidence one item at a time too
            hashed = {"id"} if lesson.cause else {"id", "cause"}
            assert lesson.id == "L-" + content_hash(lesson.model_dump(mode="json", exclude=hashed))[:12]


def test_long_evidence_is_packed_and_reads_as_its_tuple():
    """Consolidated lessons carry every supporting trajectory's evidence; from
    `PACK_EVIDENCE_FROM` items on it is held compressed, with the same counts, order, equality,
    hash and JSON as the tuple (counts checked against a plain count over the items)."""
    items = [Evidence(trace_id=f"t{i % 30}", outcome="failure" if i % 30 < 12 else "success", steps=(i,), quote=f"q{i}")
             for i in range(45)]
    lesson = Lesson.create(title="T", rule="R.", when="Always.", kind="pitfall", signature="s:t", evidence=items)
    assert isinstance(lesson.evidence, PackedEvidence) and len(lesson.evidence) == 45
    assert (lesson.support, lesson.failing_support, lesson.succeeding_support) == (30, 12, 18)
    plain = lesson.model_copy(update={"evidence": tuple(lesson.evidence)})
    assert not isinstance(plain.evidence, PackedEvidence)
    assert plain == lesson and hash(plain) == hash(lesson)
    assert plain.model_dump_json() == lesson.model_dump_json()
    assert [e.steps[0] for e in lesson.evidence] == sorted(range(45), key=lambda i: (f"t{i % 30}", i))
    assert pickle.loads(pickle.dumps(lesson)) == lesson
    short = Lesson.create(title="T", rule="R.", when="Always.", kind="pitfall", signature="s:t", evidence=items[:3])
    assert isinstance(short.evidence, tuple)
