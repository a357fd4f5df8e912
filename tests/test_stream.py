"""The streaming map stage and its executors, on the real demo corpus.

Expected numbers come from plain Python over the files (a count of `.traj.json` files, the
labels in `results_summary.json`), or from the exact formula (math.comb), never from our code.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.executor import executor_for
from trace2skill.offline.stats import fisher_exact
from trace2skill.pipeline import read_corpus
from trace2skill.stream import ShardJob, label_book, plan_shards

from conftest import DEMO_CORPUS, demo_subset

runner = CliRunner()


def _skill_files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_process_executor_writes_the_same_skill_as_the_local_one(demo_traces, tmp_path):
    produced = {}
    for executor, workers in (("local", "1"), ("process", "2")):
        out = tmp_path / executor
        result = runner.invoke(app, ["distill", str(demo_traces), "--out", str(out), "--skill", "demo",
                                     "--executor", executor, "--workers", workers, "--json"])
        assert result.exit_code == 0, result.output
        produced[executor] = _skill_files(out / "demo")
        assert json.loads(result.stdout)["traces_read"] == len(list(DEMO_CORPUS.glob("trajs/*/*.traj.json")))
    assert produced["local"] == produced["process"]
    assert Path("SKILL.md") in produced["local"]


def test_each_shard_gives_its_traces_in_order_and_executors_agree(tmp_path):
    ids = sorted(p.name for p in (DEMO_CORPUS / "trajs").iterdir())[:6]
    folder = demo_subset(tmp_path / "run", ids) / "trajs"  # its labels sit in results_summary.json beside it
    config = load_config(env={})
    shards, skips = plan_shards([folder], config)
    assert skips == [] and [Path(s.path).name for s in shards] == [f"{i}.traj.json" for i in ids]
    job = ShardJob(config, label_book([folder], config), "offline")
    local = list(executor_for("local").map(shards, job))
    spread = list(executor_for("process", 2).map(shards, job))
    assert [r.shard for r in spread] == shards, "results come back in shard order"
    assert [[e.id for e in r.entries] for r in local] == [[i] for i in ids]
    assert [r.entries for r in local] == [r.entries for r in spread]
    assert [[p.unpack() for p in r.lessons] for r in local] == [[p.unpack() for p in r.lessons] for r in spread]
    assert [[p.key for p in r.lessons] for r in local] == [[p.key for p in r.lessons] for r in spread]
    labels = {row["instance_id"]: row["resolved"] for row in json.loads((DEMO_CORPUS / "results_summary.json").read_text())["instances"]}
    outcomes = {e.id: e.outcome for r in local for e in r.entries}
    assert outcomes == {i: "success" if labels[i] else "failure" for i in ids}
    assert all(e.behaviours is not None for r in local for e in r.entries), "labelled runs carry their behaviours"


def test_the_corpus_keeps_its_lesson_sets_in_the_spill_file_and_reads_them_back_whole(tmp_path):
    ids = sorted(p.name for p in (DEMO_CORPUS / "trajs").iterdir())[:5]
    folder = demo_subset(tmp_path / "run", ids) / "trajs"
    config = load_config(env={})
    corpus = read_corpus(config, True, [folder])
    assert sorted(corpus.lessons) == ids
    assert all(p.blob == b"" and p.spill is not None for p in corpus.lessons.values()), "nothing packed stays in memory"
    job = ShardJob(config, label_book([folder], config), "offline")
    for shard in plan_shards([folder], config)[0]:
        (held,) = executor_for("local").map([shard], job)
        (entry,), (packed,) = held.entries, held.lessons
        assert corpus.lessons[entry.id].key == packed.key
        assert corpus.lessons[entry.id].unpack() == packed.unpack()  # each set at its own offset


def test_colliding_ids_across_files_are_suffixed_and_exact_copies_skipped(tmp_path):
    source = sorted((DEMO_CORPUS / "trajs").glob("*/*.traj.json"))[0]
    record = json.loads(source.read_text())
    (tmp_path / "in").mkdir()
    shutil.copy(source, tmp_path / "in" / "a.traj.json")
    shutil.copy(source, tmp_path / "in" / "b.traj.json")             # an exact copy: a skip
    record["messages"] = record["messages"][:-2]
    (tmp_path / "in" / "c.traj.json").write_text(json.dumps(record))  # same id, other content
    config = load_config(env={})
    for offline in (True, False):
        corpus = read_corpus(config, offline, [tmp_path / "in"])
        ident = record["instance_id"]
        assert len(corpus.entries) == 2
        assert all(e.id.startswith(ident + "~") and len(e.id) == len(ident) + 9 for e in corpus.entries)
        assert [s.reason for s in corpus.skips] == [f"exact duplicate of trace {ident!r} from {tmp_path / 'in' / 'a.traj.json'}"]
        if offline:
            assert set(corpus.lessons) == {e.id for e in corpus.entries}
            for entry in corpus.entries:
                assert all(ev.trace_id == entry.id for lesson in corpus.lessons[entry.id].unpack().lessons for ev in lesson.evidence)


def _exact_fisher(a: int, b: int, c: int, d: int) -> float:
    """The textbook definition, with exact binomial coefficients."""
    row1, col1, n = a + b, a + c, a + b + c + d
    total = math.comb(n, col1)

    def probability(x: int) -> float:
        return math.comb(row1, x) * math.comb(n - row1, col1 - x) / total

    observed = probability(a)
    low, high = max(0, col1 - (n - row1)), min(row1, col1)
    return min(1.0, sum(q for x in range(low, high + 1) if (q := probability(x)) <= observed * (1 + 1e-7)))


@pytest.mark.parametrize("seed", range(3))
def test_fisher_exact_matches_the_exact_definition(seed):
    rng = random.Random(seed)
    for _ in range(300):
        table = [rng.randint(0, 40) for _ in range(4)]
        expected = _exact_fisher(*table)
        assert fisher_exact(*table) == pytest.approx(expected, rel=1e-9, abs=1e-300), table
    assert fisher_exact(3000, 700, 900, 400) == pytest.approx(_exact_fisher(3000, 700, 900, 400), rel=1e-9)


def test_unknown_executor_and_bad_worker_counts_are_configuration_errors(demo_traces, tmp_path):
    bad = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path), "--executor", "cluster"])
    assert bad.exit_code == 78, bad.output
    zero = runner.invoke(app, ["distill", str(demo_traces), "--out", str(tmp_path), "--workers", "0"])
    assert zero.exit_code == 78, zero.output


def _demo_as_jsonl(folder: Path) -> Path:
    """The 40 demo runs as one JSONL file, a run per line (instance id inside each record, as a
    mini-swe-agent batch dump writes it), two blank lines and a broken line among them, with
    their labels beside it."""
    folder.mkdir(parents=True)
    shutil.copy(DEMO_CORPUS / "results_summary.json", folder / "results_summary.json")
    lines = []
    for n, path in enumerate(sorted(DEMO_CORPUS.glob("trajs/*/*.traj.json"))):
        record = json.loads(path.read_text(encoding="utf-8"))
        record["instance_id"] = path.parent.name
        lines.append(json.dumps(record))
        if n == 7:
            lines += ["", "{not json", ""]
    (folder / "runs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "runs.jsonl"


def test_a_large_jsonl_file_is_cut_into_byte_ranges_that_read_exactly_what_the_whole_file_gives(tmp_path):
    dump = _demo_as_jsonl(tmp_path / "dump")
    raw = dump.read_bytes()
    whole = load_config(env={})
    cut = load_config(overrides={"ingest.shard_bytes": len(raw) // 7}, env={})
    [one], _ = plan_shards([dump], whole)
    shards, _ = plan_shards([dump], cut)
    assert one.span is None and len(shards) >= 7
    # independent of the planner: every range starts at a line start, they tile the file, and
    # each range's line count is the newlines before it in the raw bytes
    assert shards[0].span.start == 0 and shards[-1].span.end is None
    for before, after in zip(shards, shards[1:]):
        assert before.span.end == after.span.start and raw[after.span.start - 1:after.span.start] == b"\n"
        assert after.span.line == raw[:after.span.start].count(b"\n")
    jobs = [ShardJob(c, label_book([dump.parent], c), "offline") for c in (whole, cut)]
    read_whole = list(executor_for("local").map([one], jobs[0]))
    read_cut = list(executor_for("process", 2).map(shards, jobs[1]))
    entries = [e for r in read_cut for e in r.entries]
    assert len(entries) == raw.count(b"\n") - 3 == 40, "every run once; the blank and broken lines are not runs"
    assert [(e.id, e.digest, e.record, e.outcome) for e in entries] == \
        [(e.id, e.digest, e.record, e.outcome) for e in read_whole[0].entries]
    assert [s.record for r in read_cut for s in r.skips] == [s.record for s in read_whole[0].skips] == ["line 10"]


def test_distill_over_byte_ranges_writes_the_skill_and_fidelity_the_whole_file_gives(tmp_path):
    dump = _demo_as_jsonl(tmp_path / "dump")
    runs = {}
    for name, extra in (("whole", []), ("cut", ["--set", f"ingest.shard_bytes={dump.stat().st_size // 5}",
                                                "--executor", "process", "--workers", "2"])):
        out = tmp_path / name
        result = runner.invoke(app, ["distill", str(dump.parent), "--out", str(out), "--skill", "demo", "--json", *extra])
        assert result.exit_code == 3, result.output  # the broken line is a skipped record
        runs[name] = (json.loads(result.stdout), _skill_files(out / "demo"))
    (whole, whole_files), (cut, cut_files) = runs["whole"], runs["cut"]
    assert cut_files == whole_files and Path("SKILL.md") in whole_files
    assert cut["fidelity"] == whole["fidelity"] and cut["fidelity"]["files"] == 2, "the dump and its labels file"
    assert cut["traces_read"] == whole["traces_read"] == 40


def test_session_logs_are_never_cut_and_chat_dumps_are_cut_in_their_whole_files_mode(tmp_path):
    config = load_config(overrides={"ingest.shard_bytes": 1024}, env={})
    session = next((Path(__file__).parent / "data" / "real" / "claude_code").rglob("*.jsonl"))
    assert session.stat().st_size > 4 * 1024
    [whole], _ = plan_shards([session], config)
    assert whole.span is None, "a Claude Code session's lines belong together"
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"id": f"chat-{n}", "messages": [
        {"role": "user", "content": f"Rename variable {n} in module {n % 7}."},
        {"role": "assistant", "content": "Renamed it. " * (n % 13 + 5)}]}) + "\n" for n in range(60)), encoding="utf-8")
    shards, _ = plan_shards([chats], config)
    assert len(shards) > 3 and all(s.span is not None and s.span.format == "openai_chat" for s in shards)
    job = ShardJob(config, label_book([chats], config), "index")
    ids = [e.id for r in executor_for("local").map(shards, job) for e in r.entries]
    assert ids == [f"chat-{n}" for n in range(60)]


def test_the_index_holds_each_repeated_value_once(tmp_path):
    """Index entries keep the values that repeat across trajectories (the file, which is the
    shard's path; the labels file; a task's hash and literals) as one object each: at 50,000
    trajectories they were most of the index's memory. Two copies of each of four runs, with
    distinct ids, give four tasks; counted here from the files, not from the index."""
    ids = sorted(p.name for p in (DEMO_CORPUS / "trajs").iterdir())[:4]
    folder = demo_subset(tmp_path / "run", ids) / "trajs"
    for path in sorted(folder.glob("*/*.traj.json")):
        record = json.loads(path.read_text())
        record["instance_id"] = path.parent.name + "-copy"
        copy = folder / (path.parent.name + "-copy")
        copy.mkdir()
        (copy / (path.parent.name + "-copy.traj.json")).write_text(json.dumps(record))
    corpus = read_corpus(load_config(env={}), True, [folder])
    assert len(corpus.entries) == 2 * len(ids)
    by_order = {s.order: s for s in corpus.shards}
    assert all(e.path is by_order[e.shard].path for e in corpus.entries)
    assert len({id(e.literals) for e in corpus.entries}) == len({e.literals for e in corpus.entries}) < len(corpus.entries)
    assert len({id(e.task_hash) for e in corpus.entries}) == len(ids)
    labelled = [e for e in corpus.entries if e.label_source]  # the copies' ids are not in results_summary.json
    assert len(labelled) == len(ids) and len({id(e.label_source) for e in labelled}) == 1
