"""The shortcuts that make ingest fast give the answers of the slow paths they replace.

Each test compares a fast path with a plain, independent computation: digests with
`hashlib.sha256(json.dumps(...))` written out here, the trace-level redaction gate with the
field-level `redact_text`, the keyword scan with substring tests, the error gate with the bare
regular expression.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace2skill.ingest import load_traces
from trace2skill.ingest._steps import looks_like_error
from trace2skill.redact import _ASSIGNMENTS, Redactor, _Keywords
from trace2skill.types import Observation, SourceRef, Step, ToolCall, Trace, _canonical_json, _fast_canonical_json, _floats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secret_corpus import BENIGN, CORPUS  # noqa: E402

FORMATS = Path(__file__).resolve().parent / "data" / "formats"


def plain_digest(trace: Trace) -> str:
    """What `Trace.digest` is documented to be, computed the slow, obvious way."""
    payload = trace.model_dump(mode="json", exclude={"source"})
    payload["extra"] = {k: v for k, v in payload["extra"].items() if k != "label_source"}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def trace(message: str = "", **fields) -> Trace:
    steps = (Step(index=0, source="agent", message=message, tool_calls=(ToolCall(id="c1", name="bash", arguments=message),),
                  observations=(Observation(call_id="c1", content=message, exit_code=1, is_error=True),)),)
    return Trace(id=fields.pop("id", "t"), steps=steps, source=SourceRef(path="x.json"), **fields)


def test_digests_of_every_test_format_are_the_plain_hash():
    result = load_traces([FORMATS])
    assert len(result.traces) > 40
    for item in result.traces:
        assert item.digest() == plain_digest(item), item.id


@pytest.mark.parametrize("value", [1e-07, 1e-05, 2.5e-05, 0.0001, 1e16, 1e22, 123456.789, -0.0, 0.1, float("nan"), float("inf"), 2**70, 2**63])
def test_digest_of_awkward_numbers_is_the_plain_hash(value):
    """orjson writes some floats differently from `json.dumps` (`1e-7`, `0.00001`, `1e16`),
    and NaN as null, and refuses integers beyond 64 bits: those must fall back."""
    reward = float(value) if isinstance(value, float) else None
    item = trace("x", reward=reward, extra={"n": value, "nested": [{"n": value}]})
    assert item.digest() == plain_digest(item)


def test_a_copy_with_changed_fields_does_not_keep_the_cached_digest():
    item = trace("hello")
    first = item.digest()
    changed = item.model_copy(update={"id": "other"})
    assert changed.digest() == plain_digest(changed) != first
    assert item.model_copy().digest() == first and item == trace("hello")


def test_only_reward_holds_a_float():
    """`Trace.digest` looks for floats only in `reward` and the `extra` dicts; a new float field
    anywhere else must be added there (this test then fails as a reminder)."""
    found = []
    for model in (Trace, Step, ToolCall, Observation, SourceRef):
        for name, info in model.model_fields.items():
            if name != "extra" and ("float" in str(info.annotation) or typing.Any in typing.get_args(info.annotation)):
                found.append(f"{model.__name__}.{name}")
    assert found == ["Trace.reward"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_canonical_json_is_json_dumps(value):
    assert _fast_canonical_json(value, _floats(value)) == _canonical_json(value)


def test_a_lone_surrogate_fails_the_same_way():
    with pytest.raises(UnicodeEncodeError):
        _fast_canonical_json({"a": "\ud800"}, [])


ODD_CASES = [
    "export PaSsWoRd=hunter2hunter2",
    "ApI_KeY: 9f8e7d6c5b4a39281706",
    '{"Secret_Access_Key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
    "TO\u212aEN=abcdef123456",  # the Kelvin sign lower-cases to an ASCII k
    "\u0130 DB_PASSWORD=s3cr3t-value",  # a dotted capital I lower-cases to two characters
    "curl -u admin:Pa55w0rd https://example.com",
    "mysql -uroot -pS3cretPass db",
    "résumé token=\u00e9t\u00e92024secret",
    "Authorization: Bearer\nabcdef0123456789abcdef0123",  # JSON escapes the line break: the gate once missed it
    'headers = {"X-Api-Key":\n  "9f8e7d6c5b4a39281706aa"}',
]


@pytest.mark.parametrize("line", [line for line, _ in CORPUS.values()] + BENIGN + ODD_CASES)
def test_the_trace_gate_never_skips_what_field_redaction_replaces(line):
    """`redact_trace` decides from one scan of the trace's JSON whether to walk its fields; the
    walk must give what redacting each field on its own gives."""
    redacted = Redactor().redact_trace(trace(line))
    expected = Redactor().redact_text(line)
    assert (redacted.steps[0].message, redacted.steps[0].observations[0].content) == (expected, expected)


@pytest.mark.parametrize("entry", [{"password": "ab1x9"}, {"DB_PASSWORD": "hunter"}, {"nested": [{"apiKey": "k3y-0123456789"}]}])
def test_the_trace_gate_never_skips_a_secret_under_a_secret_looking_key(entry):
    """A short value under a secret-looking key holds no pattern's keyword in the value itself:
    the walk replaces it by its key, so the gate must send such a trace to the walk."""
    import json

    item = trace("nothing to see here", extra={"settings": entry})
    def values(node):
        return [v for item in node.values() for v in values(item)] if isinstance(node, dict) else \
            [v for item in node for v in values(item)] if isinstance(node, list) else [node]

    leaves = values(entry)
    assert leaves and all(isinstance(v, str) for v in leaves)
    redacted = json.dumps(Redactor().redact_trace(item).extra)
    assert not any(value in redacted for value in leaves), redacted


SCAN_CASES = ["sk-ant-sk-SKSK://mysqlcurl", "PASSpassPwDpwd", "crede credentia CREDENTIALS privat PrivateKey private_ke accessory",
              "ACCESS_KEY acces_key api_k api-Key apikeys secre SECRET_ token tok\u00e9n",
              "\u00e9\u00e9 pass \u4e2d\u6587 token=1 \U0001f600 Bearer x \ud800 sk-ant- \u00e9secret",
              "\ud83d\ude00Credential\u00e9\u00e9\u00e9CREDENTIAL\u20ac://a:b@c"]
"""Longer words cut short or misspelt where their first five characters match, keywords after
characters of two, three and four UTF-8 bytes and a lone surrogate."""


@pytest.mark.parametrize("text", [line for line, _ in CORPUS.values()] + BENIGN + ODD_CASES + SCAN_CASES)
def test_keyword_scan_agrees_with_substring_search(text):
    words = tuple(_ASSIGNMENTS)
    tokens = sorted({k for rule in Redactor()._rules for k in rule.keywords})
    found, spots = _Keywords(tokens, words).scan(text)
    lower = text.replace("\u0130", "I").lower()
    assert found == {t: [i for i in range(len(text)) if text.startswith(t, i)] for t in tokens if t in text}
    assert spots == {w: [i for i in range(len(lower)) if lower.startswith(w, i)] for w in words if w in lower}


CLEAN_TEXT = ("SKIP the TASK: curl https://example.com/x and mysql --help; Basic usage, Bearer of news, "
              "Authorization required, EAAAA and sq0 notes")
"""Keywords of every anchored rule, none of them followed by a secret."""


@pytest.mark.parametrize("text", [line for line, _ in CORPUS.values()] + ODD_CASES + [CLEAN_TEXT])
def test_an_anchored_rule_matches_only_where_a_keyword_starts(text):
    """The gate tries an anchored rule only where one of its keywords starts: every match a scan
    of the whole text finds must start there, or the gate could pass a secret by."""
    for rule in Redactor()._rules:
        if rule.anchored:
            for match in rule.pattern.finditer(text):
                assert any(text.startswith(k, match.start()) for k in rule.keywords), (rule.kind, match.group(0))


@pytest.mark.parametrize("line", [line for line, _ in CORPUS.values()] + ODD_CASES)
def test_the_gate_finds_a_secret_after_keywords_that_lead_nowhere(line):
    """With the anchored rules' keywords earlier in the same text, not followed by a secret,
    the gate still sends the trace to the field walk, which replaces what `redact_text` does."""
    anchored = {rule.kind for rule in Redactor()._rules if rule.anchored}
    assert anchored == {"twilio-api-key", "square-token", "basic-auth", "bearer-token", "authorization", "url-password",
                        "mysql-password", "curl-password"}
    message = CLEAN_TEXT + "\n" + line
    assert Redactor().redact_text(CLEAN_TEXT) == CLEAN_TEXT
    assert Redactor().redact_trace(trace(message)).steps[0].message == Redactor().redact_text(message)


BARE_ERROR_WORDS = re.compile(
    r"Traceback \(most recent call last\)"
    r"|^[\s>*\[]*(?:[A-Za-z_][\w.]*(?:Error|Exception)|error|fatal)\]?(?:\[[^\]\n]*\])?:\s"
    r"|command not found|No such file or directory|Permission denied"
    r"|[\"']?is_error[\"']?\s*[:=]\s*true\b"
    r"|[\"']?status[\"']?\s*[:=]\s*[\"']?(?:error|failed|failure)\b",
    re.MULTILINE | re.IGNORECASE,
)
"""`looks_like_error`'s rule as one plain expression, written out here."""


@pytest.mark.parametrize("text", ["x\nValueError: bad", "  [ERROR]: disk", "TRACEBACK (MOST RECENT CALL LAST)", '{"Status": "FAILED"}',
                                  "is_error = true", "bash: foo: command NOT found", "all good", "error-free run", "status: ok",
                                  "r\u00e9sum\u00e9\nfatal: not a git repository", "\u212aeyError: 'x'"])
def test_error_gate_agrees_with_the_bare_expression_on_each_alternative(text):
    assert looks_like_error(text) == bool(BARE_ERROR_WORDS.search(text)), text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("eErRoOfFaAlLtTxXcCpPiInNsS :\n>*[]_.-\u212a\u0130"), max_size=40))
def test_error_gate_agrees_with_the_bare_expression(text):
    from trace2skill.ingest._steps import exit_code_in, reports_json_error

    code = exit_code_in(text)
    plain = reports_json_error(text) or (code is not None and code != 0) or bool(BARE_ERROR_WORDS.search(text))
    assert looks_like_error(text) == (bool(text) and plain)


def test_nan_reward_digest_matches():
    item = trace("x", reward=math.nan)
    assert item.digest() == plain_digest(item)


def every_string(value: object) -> list[str]:
    """Every string in a JSON-like value, dict keys included, in order: what the gate must see."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in ([key] if isinstance(key, str) else []) + every_string(item)]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in every_string(item)]
    return []


def test_the_gate_reads_every_string_the_field_walk_redacts():
    """The gate reads a trace's strings from its objects, not from a dump: it must see the same
    strings, in the same order, as walking the dump does (a field it misses is a secret let through)."""
    from trace2skill.redact import _trace_strings

    items = load_traces([FORMATS]).traces + [trace(line, extra={"k": [line, {"password": "x"}], "n": 1.5}, agent="a")
                                             for line in ODD_CASES]
    assert len(items) > 40
    for item in items:
        seen: list[str] = []
        keyed = _trace_strings(item, seen)
        assert seen == every_string(item.model_dump(exclude={"source"})), item.id
        assert keyed == ("password" in seen), item.id


def test_the_gate_knows_every_field():
    """`_trace_strings` follows the models' fields by name: a new field must be added there
    (this test then fails as a reminder)."""
    from trace2skill.redact import _DUMP_FIELDS

    assert {m.__name__: tuple(m.model_fields) for m in (Trace, Step, ToolCall, Observation)} == _DUMP_FIELDS


@pytest.mark.parametrize("extra", [{"when": __import__("datetime").datetime(2024, 1, 2, 3, 4, 5)}, {"pair": (1, "a")},
                                   {"n": [{1: "int key"}]}, {"b": b"bytes"}])
def test_digest_of_values_json_would_not_hold_is_the_plain_hash(extra):
    """Digests are taken from the Python-mode dump when it holds only JSON values; anything
    else (a date, a tuple, a non-string key, bytes) must give the JSON-mode dump's hash."""
    item = trace("x", extra=extra)
    assert item.digest() == plain_digest(item)


def test_records_of_some_lines_are_those_of_all_lines(tmp_path):
    """A second pass that asks for some line numbers gets exactly those records (blank and
    broken lines counted as in a full pass), whether the document can skip parsing or not."""
    from dataclasses import replace

    from trace2skill.ingest.documents import iter_documents

    lines = ['{"a": 1}', "", "   ", '{"b": [2, 3]}', "{broken", '"text"', '{"c": {"d": null}}', "", '{"e": 5}']
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = next(iter_documents([tmp_path / "x.jsonl"]))
    every = [entry for entry in doc.records() if isinstance(entry, tuple)]
    assert [n for n, _ in every] == [1, 4, 6, 7, 9]  # counted by hand from `lines`
    for only in ({4}, {1, 7}, {5, 6, 9}, set(), {2, 100}):
        expected = [entry for entry in every if entry[0] in only]
        assert [e for e in doc.records(only) if isinstance(e, tuple)] == expected
        assert [e for e in replace(doc, _some_records=None).records(only) if isinstance(e, tuple)] == expected


def test_reading_at_most_a_limit_reads_what_read_would(tmp_path):
    """The whole-file read sizes its buffer from the file, not from the 64 MiB cap: same bytes as
    `read(limit)` on plain files (smaller or larger than the limit) and on gzip streams."""
    import gzip as gz

    from trace2skill.ingest.documents import _read_at_most, open_regular

    data = bytes(range(256)) * 40
    (tmp_path / "x.json").write_bytes(data)
    (tmp_path / "x.json.gz").write_bytes(gz.compress(data))
    for limit in (1, 100, len(data) - 1, len(data), len(data) + 1, 1 << 26):
        for head in (0, 7):
            with open_regular(tmp_path / "x.json") as stream:
                stream.read(head)
                assert _read_at_most(stream, limit) == data[head:head + limit]
        with gz.open(open_regular(tmp_path / "x.json.gz")) as stream:
            assert _read_at_most(stream, limit) == data[:limit]


QUICK_LOADS_CASES = [
    "12345678901234567890", "-9223372036854775809", "18446744073709551616", "9223372036854775807", "[1.12345678901234567890123]",
    "0.30000000000000004", "1e400", "-1e400", "1e-400", "-0", "-0.0", "NaN", "Infinity", '"\\ud800"', '"\\ud83d\\ude00"',
    '{"a": 1, "b": 2, "a": 3}', "\ufeff[1]", "[1,]", "01", "1.", '"\x01"', "[" * 1100 + "]" * 1100, '{"id": "1234567890123456789012"}',
    '{"n": 123456789012345678901234, "s": "x"}', "[.12345678901234567890]", "1.5e12345678901234567890",
]


@pytest.mark.parametrize("text", QUICK_LOADS_CASES)
def test_quick_loads_gives_what_json_loads_gives_or_defers(text):
    """orjson parses a document only where it gives `json.loads`'s value (same types too: an
    integer beyond 64 bits stays an integer); anything else goes the `json.loads` way."""
    from trace2skill.ingest.documents import _SLOW, _quick_loads

    data = text.encode("utf-8", "surrogatepass")
    quick = _quick_loads(data)
    if quick is _SLOW:
        return
    expected = json.loads(data.decode("utf-8"))
    assert repr(quick) == repr(expected) and json.dumps(quick) == json.dumps(expected)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12))
def test_quick_loads_agrees_with_json_loads_on_any_value(value):
    from trace2skill.ingest.documents import _SLOW, _quick_loads

    data = json.dumps(value).encode()
    quick = _quick_loads(data)
    assert quick is _SLOW or repr(quick) == repr(json.loads(data))
    if not re.search(rb"\d{19}", data):  # nothing orjson could misread: it is used
        assert quick is not _SLOW


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", " ", "xyz"]), max_size=60).map("".join),
       st.sampled_from([4, 6, 8, 11]))
def test_head_and_tail_gives_the_lines_splitting_the_whole_text_gives(text, chunk):
    from trace2skill.ingest._steps import head_and_tail

    lines = text.splitlines()
    assert head_and_tail(text, chunk) == (lines[:3] + lines[-3:] if len(lines) > 6 else lines)


FENCES = {("bash",): r"```bash\s*\n(.*?)\n```", ("mswea_bash_command", "bash"): r"```(?:mswea_bash_command|bash)\s*\n(.*?)\n```",
          ("ba", "bash"): r"```(?:ba|bash)\s*\n(.*?)\n```"}
"""mini-swe-agent's command blocks as the plain (lazy) expressions `fence_of` stands for (the
last one with a tag that is a prefix of the other, which makes the expression backtrack into it)."""


@pytest.mark.parametrize("text", ["```bash\nls\n```", "```bash\n\n```", "```bash \n \n```", "```bash\n```", "```bash ls\n```",
                                  "```bash\n\n\n```x\n```", "````bash\nls\n```\n```bash\x1c\x85\npwd\n````", "```bash\u2028\nx\n```",
                                  "THOUGHT\n```bash\ncat <<'EOF'\n```\nEOF\n```\ndone", "```mswea_bash_command\nls\n```", "```bash\nno end"])
def test_fenced_blocks_are_what_the_expression_finds(text):
    from trace2skill.ingest.mini_swe_agent import fence_of, fenced_blocks

    for tags, pattern in FENCES.items():
        expected = [(m.start(), m.end(), m.group(1)) for m in re.finditer(pattern, text, re.DOTALL)]
        assert fenced_blocks(text, fence_of(*tags)) == expected, (tags, text)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["```", "`", "bash", "ba", "sh", "mswea_bash_command", "\n", " ", "\t", "\x1c", "\x85", "\xa0",
                                 "\u2028", "\r", "ls"]), max_size=16).map("".join))
def test_fenced_blocks_agree_with_the_expression(text):
    from trace2skill.ingest.mini_swe_agent import fence_of, fenced_blocks

    for tags, pattern in FENCES.items():
        expected = [(m.start(), m.end(), m.group(1)) for m in re.finditer(pattern, text, re.DOTALL)]
        assert fenced_blocks(text, fence_of(*tags)) == expected, (tags, text)


LONG_NUMBER = re.compile(rb"(?:^|[^0-9.])[0-9]{19}")
"""19 digits in a row at the start or after a byte that is neither a digit nor a `.`."""


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"0", b"7", b"12345", b"1234567890123", b".", b" ", b"x", b"\n", b"ab" * 40]), max_size=400).map(b"".join))
def test_the_long_number_check_is_the_plain_expression(data):
    """`_has_long_number` translates every fourth byte and the bytes around the places that
    can hold a long number; it answers what one expression over all the bytes answers."""
    from trace2skill.ingest.documents import _has_long_number

    assert _has_long_number(data) == bool(LONG_NUMBER.search(data)), data


@pytest.mark.parametrize("data", [b"1" * 19, b"1" * 18, b"." + b"1" * 30, b"x" * 1000 + b"1" * 19, b"x" * 999 + b".1" + b"1" * 19,
                                  (b"0.1234567890123456, " * 400) + b"12345678901234567890", b"0.1234567890123456, " * 400])
def test_the_long_number_check_on_long_texts(data):
    from trace2skill.ingest.documents import _has_long_number

    assert _has_long_number(data) == bool(LONG_NUMBER.search(data))
