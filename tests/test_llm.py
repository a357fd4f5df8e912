import asyncio

import pytest

from trace2skill.analyse import AnalystReport
from trace2skill.config import load_config
from trace2skill.errors import LessonParseError, LLMRequestsBlocked
from trace2skill.llm import build_llm
from trace2skill.llm.cache import CachedClient
from trace2skill.llm.litellm_backend import sampling_params
from trace2skill.llm.parse import parse_reply
from trace2skill.testing import ScriptedLLM

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


def test_cache_replays_only_identical_requests(tmp_path):
    messages = [{"role": "user", "content": "analyse this"}]
    inner = ScriptedLLM().enqueue("analyse-failure", REPORT, REPORT)
    seed1 = CachedClient(inner, load_config(overrides={"llm.seed": 1}, env={}).llm, tmp_path / "c.sqlite")
    for _ in range(2):
        asyncio.run(seed1.complete(messages, output=AnalystReport, purpose="analyse-failure"))
    assert inner.count() == 1 and seed1.hits == 1
    seed2 = CachedClient(inner, load_config(overrides={"llm.seed": 2}, env={}).llm, tmp_path / "c.sqlite")
    asyncio.run(seed2.complete(messages, output=AnalystReport, purpose="analyse-failure"))
    assert inner.count() == 2, "a new seed must not replay the old answer"
