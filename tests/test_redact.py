"""Secrets are replaced by typed placeholders before any trace leaves ingest."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from trace2skill.compress import compress_trace
from trace2skill.config import Config, RedactConfig
from trace2skill.errors import ConfigError
from trace2skill.ingest import load_traces
from trace2skill.redact import Redactor

MINI_ZIP = Path(__file__).resolve().parent / "data" / "formats" / "mini_swe_agent" / "mini-swe-agent-500.zip"

SECRETS = {
    "openai-key": "sk-proj-Xk3b9QmZr2Lw8NvT5yHc1JdE7uPaFs4G",
    "anthropic-key": "sk-ant-api03-Q2w9Er8Ty7Ui6Op5As4Df3Gh2Jk1Lz0Xc",
    "aws-access-key": "AKIAIOSFODNN7EXAMPLE",
    "github-token": "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "slack-token": "xoxb-123456789012-abcdefABCDEF",
    "google-api-key": "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9Xb2Nz1Yx3Ww\nQ8pL0mR5tT2vV4xX6zZ8bB0dD2fF4hH6\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_token_type_is_replaced_and_counted(kind):
    redactor = Redactor()
    text = f"export TOKEN={SECRETS[kind]}\necho done"
    assert redactor.redact_text(text) == f"export TOKEN=[REDACTED:{kind}]\necho done"
    assert redactor.counts == {kind: 1}


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (f"key:\n{PRIVATE_KEY}\nafter", "key:\n[REDACTED:private-key]\nafter", "private-key"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n[output truncated]",
            "[REDACTED:private-key]\n[output truncated]",
            "private-key",
        ),
        ("psql postgres://admin:s3cr3t-pw@db:5432/app", "psql postgres://admin:[REDACTED:url-password]@db:5432/app", "url-password"),
        (
            'curl -H "Authorization: Bearer abcdef0123456789abcdef"',
            'curl -H "Authorization: Bearer [REDACTED:bearer-token]"',
            "bearer-token",
        ),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws-secret-key]",
            "aws-secret-key",
        ),
    ],
)
def test_structured_secrets_keep_their_context(text, expected, kind):
    redactor = Redactor()
    assert redactor.redact_text(text) == expected
    assert redactor.counts == {kind: 1}


def test_ordinary_text_is_left_alone():
    text = (
        "task-manager-configuration-values-2024 flask-sqlalchemy-extension-3 "
        "http://example.com:8080/path git@github.com:org/repo.git bearer of news "
        "Authorization: Bearer $TOKEN AKIA-like words and eyJ alone"
    )
    redactor = Redactor()
    assert redactor.redact_text(text) == text and redactor.counts == {}


def test_emails_and_extra_patterns_are_optional():
    text = "mail ada@example.org about ticket INT-4242"
    assert Redactor().redact_text(text) == text
    redactor = Redactor(RedactConfig(emails=True, patterns=[r"INT-\d{4}"]))
    assert redactor.redact_text(text) == "mail [REDACTED:email] about ticket [REDACTED:custom]"
    assert redactor.counts == {"custom": 1, "email": 1}
    with pytest.raises(ConfigError, match=r"redact.patterns\[0\]"):
        Redactor(RedactConfig(patterns=["("]))


def _planted_conversation() -> dict:
    key = SECRETS["openai-key"]
    return {
        "id": "leaky",
        "messages": [
            {"role": "user", "content": f"Deploy with OPENAI_API_KEY={key}"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "function": {"name": "bash", "arguments": json.dumps({"cmd": f"deploy --token {SECRETS['github-token']}"})}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": f"Error: bad credentials for {SECRETS['aws-access-key']}\n{PRIVATE_KEY}"},
        ],
    }


def test_planted_secrets_never_leave_ingest_or_reach_a_prompt(tmp_path):
    (tmp_path / "leaky.json").write_text(json.dumps(_planted_conversation()))
    (tmp_path / "odd.json").write_text(json.dumps({SECRETS["slack-token"]: "an unknown shape"}))
    result = load_traces([tmp_path])
    (trace,) = result.traces
    dumped = trace.model_dump_json() + json.dumps([s.model_dump() for s in result.skips])
    prompt = compress_trace(trace, 600)
    planted = ("openai-key", "github-token", "aws-access-key", "slack-token")
    for secret in [SECRETS[k] for k in planted] + ["MIIEowIBAAKCAQEA"]:
        assert secret not in dumped and secret not in prompt
    assert "[REDACTED:openai-key]" in prompt and "[REDACTED:private-key]" in prompt
    assert "[REDACTED:slack-token]" in result.skips[0].reason
    # the task repeats the first user message, so the OpenAI key was removed twice
    assert result.redactions == {
        "aws-access-key": 1, "github-token": 1, "openai-key": 2, "private-key": 1, "slack-token": 1
    }


def test_secret_in_a_real_mini_swe_agent_trajectory(tmp_path):
    member = "trajs/sympy__sympy-24539/sympy__sympy-24539.traj.json"
    with zipfile.ZipFile(MINI_ZIP) as archive:
        traj = json.loads(archive.read(member))
    traj["messages"][3]["content"] += f"\nANTHROPIC_API_KEY={SECRETS['anthropic-key']}"
    traj["info"]["submission"] += f"\n# token {SECRETS['jwt']}"
    (tmp_path / "x.traj.json").write_text(json.dumps(traj))
    result = load_traces([tmp_path], Config())
    dumped = result.traces[0].model_dump_json()
    assert SECRETS["anthropic-key"] not in dumped and SECRETS["jwt"] not in dumped
    assert result.redactions == {"anthropic-key": 1, "jwt": 1}


def test_clean_trace_is_returned_unchanged(tmp_path):
    (tmp_path / "clean.json").write_text(json.dumps({"id": "c", "messages": [{"role": "user", "content": "hello there"}]}))
    (trace,) = load_traces([tmp_path]).traces
    redactor = Redactor()
    assert redactor.redact_trace(trace) is trace and redactor.counts == {}


def test_a_lone_surrogate_is_replaced_and_counted_instead_of_losing_the_trace(tmp_path):
    """A logger that cuts text by UTF-16 units writes half an emoji as a `\\ud83d` escape. The
    trace is kept, the half character becomes U+FFFD and is counted; a whole pair is untouched."""
    from trace2skill.ingest import iter_traces

    lines = [{"id": "cut", "messages": [{"role": "user", "content": "Fix the test."},
                                        {"role": "assistant", "content": "Done \ud83d then stopped."}]},
             {"id": "whole", "messages": [{"role": "user", "content": "Fix the test."},
                                          {"role": "assistant", "content": "Done \ud83d\ude00 fully."}]}]
    raw = "".join(json.dumps(line) + "\n" for line in lines)  # ASCII escapes, as such loggers write
    assert raw.count("\\ud83d") == 2 and raw.count("\\ude00") == 1
    (tmp_path / "chats.jsonl").write_text(raw, encoding="utf-8")
    redactor = Redactor()
    items = list(iter_traces([tmp_path / "chats.jsonl"], redactor=redactor))
    assert [type(i).__name__ for i in items] == ["Trace", "Trace"], items
    cut, whole = items
    texts = [s.message for s in cut.steps]
    assert "Done \ufffd then stopped." in texts and cut.digest()
    assert "Done \U0001F600 fully." in [s.message for s in whole.steps]
    assert redactor.counts == {"lone-surrogate": 1}
