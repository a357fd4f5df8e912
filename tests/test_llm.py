import asyncio

import pytest

from trace2skill.analyse import AnalystReport
from trace2skill.config import load_config
from trace2skill.errors import LessonParseError, LLMRequestsBlocked
from trace2skill.llm import build_llm
from trace2skill.llm.litellm_backend import sampling_params
from trace2skill.llm.parse import parse_reply
from trace2skill.testing import ScriptedLLM
from trace2skill.types import LessonSet

REPORT = '{"lessons": [{"title": "Use python -m pytest", "rule": "Run tests via python -m pytest.", "when": "Always", "kind": "fact", "subject": "pytest", "polarity": "do", "steps": [1], "quote": "not found"}]}'


def test_parse_reply_accepts_fenced_json_and_rejects_garbage():
    assert parse_reply(f"Here you go:\n```json\n{REPORT}\n```", AnalystReport).lessons[0].subject == "pytest"
    with pytest.raises(LessonParseError):
        parse_reply('{"lessons": [{"title": "x"}]}', AnalystReport)


def test_only_parameters_the_user_set_are_sent():
    assert sampling_params(load_config(env={}).llm) == {}
    config = load_config(overrides={"llm.temperature": 0.0, "llm.seed": 7}, env={})
    assert sampling_params(config.llm) == {"temperature": 0.0, "seed": 7}


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
