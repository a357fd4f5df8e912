import asyncio

import pytest

from trace2skill.analyse import AnalystReport
from trace2skill.config import load_config
from trace2skill.errors import LessonParseError, LLMRequestsBlocked
from trace2skill.llm import build_llm
from trace2skill.llm.chat import sampling_params
from trace2skill.llm.parse import parse_reply
from trace2skill.testing import ScriptedLLM
from trace2skill.types import LessonSet

REPORT = '{"lessons": [{"title": "Use python -m pytest", "rule": "Run tests via python -m pytest.", "when": "Always", "kind": "fact", "subject": "pytest", "polarity": "do", "steps": [1], "quote": "not found"}]}'


def test_parse_reply_accepts_fenced_json_and_rejects_garbage():
    assert parse_reply(f"Here you go:\n```json\n{REPORT}\n```", AnalystReport).lessons[0].subject == "pytest"
    with pytest.raises(LessonParseError):
        parse_reply('{"lessons": [{"title": "x"}]}', AnalystReport)


def test_only_parameters_the_user_set_are_sent_and_the_reply_cap_always():
    assert sampling_params(load_config(env={}).llm) == {"max_tokens": 2048}, "the budget reserves what max_tokens allows"
    config = load_config(overrides={"llm.temperature": 0.0, "llm.seed": 7, "llm.max_tokens": 300}, env={})
    assert sampling_params(config.llm) == {"temperature": 0.0, "seed": 7, "max_tokens": 300}


def test_real_backend_refuses_to_send_in_tests(tmp_path):
    config = load_config(overrides={"llm.model": "openai/gpt-4.1-mini", "state_dir": tmp_path}, env={})
    llm = build_llm(config)
    with pytest.raises(LLMRequestsBlocked):
        asyncio.run(llm.complete([{"role": "user", "content": "hi"}], output=AnalystReport, purpose="analyse-failure"))


def test_offline_model_needs_no_client():
    assert build_llm(load_config(env={})) is None


def test_the_journal_replays_only_work_done_with_the_same_settings(demo_traces, tmp_path):
    """The journal replaced the response cache: its run id hashes every setting sent, seed included."""
    from trace2skill.analyse import analyst_for
    from trace2skill.journal import AnalysisJournal
    from trace2skill.pipeline import read_corpus, run_info

    def run_id(seed):
        config = load_config(overrides={"llm.seed": seed, "llm.model": "scripted"}, env={})
        corpus = read_corpus(config, False, [demo_traces], index_only=True)
        return run_info(config, analyst_for(config, ScriptedLLM()), corpus).run_id

    first = AnalysisJournal(tmp_path / "j.sqlite", run_id(1))
    first.put("digest", LessonSet())
    assert AnalysisJournal(tmp_path / "j.sqlite", run_id(1)).get("digest") == LessonSet()
    assert AnalysisJournal(tmp_path / "j.sqlite", run_id(2)).get("digest") is None, "a new seed must not replay the old answer"


def test_the_journal_keeps_one_connection_and_commits_every_record_at_once(tmp_path, monkeypatch):
    """One connection for the journal's life, and every record committed when it is made, so a
    killed run keeps all it paid for (counts read back with plain sqlite3, journal still open)."""
    import sqlite3

    from trace2skill import journal as journal_module
    from trace2skill.journal import AnalysisJournal

    opened: list[str] = []
    real_connect = sqlite3.connect

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(journal_module.sqlite3, "connect", counting)
    path = tmp_path / "j.sqlite"
    journal = AnalysisJournal(path, "run-1")
    for n in range(5):
        journal.put(f"digest-{n}", LessonSet(sources=(f"t{n}",)))
        assert journal.get(f"digest-{n}") == LessonSet(sources=(f"t{n}",))
    journal.put_merge("key", LessonSet(level=1))
    assert journal.get("never-recorded") is None and journal.get_merge("key") == LessonSet(level=1)
    assert opened == [str(path)], "lookups and records reuse the journal's one connection"

    def committed(table: str) -> int:
        with real_connect(path) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table} WHERE run = 'run-1'").fetchone()[0]

    assert committed("analyses") == 5 and committed("merges") == 1, "each record is committed as it is made"
    assert journal.analysed() == {f"digest-{n}" for n in range(5)} and journal.merges_done() == 1
    journal.close()
    reopened = AnalysisJournal(path, "run-1")
    assert reopened.get("digest-4") == LessonSet(sources=("t4",)) and reopened.merges_done() == 1
