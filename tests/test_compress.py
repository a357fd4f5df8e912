"""Prompt compression: real tokenizer, budget respected, errors kept, deterministic."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from trace2skill.compress import compress_trace, count_tokens, elide
from trace2skill.ingest import load_traces
from trace2skill.types import Observation, SourceRef, Step, ToolCall, Trace

MINI_ZIP = Path(__file__).resolve().parent / "data" / "formats" / "mini_swe_agent" / "mini-swe-agent-500.zip"
ELIDED = re.compile(r"\[\.\.\. [\d,]+ chars elided \.\.\.\]")


@pytest.fixture(scope="module")
def real_trace(tmp_path_factory) -> Trace:
    folder = tmp_path_factory.mktemp("mini")
    with zipfile.ZipFile(MINI_ZIP) as archive:
        archive.extract("trajs/astropy__astropy-13033/astropy__astropy-13033.traj.json", folder)
        archive.extract("results_summary.json", folder)
    (trace,) = load_traces([folder]).traces
    return trace


def _error_steps(trace: Trace) -> list[int]:
    return [s.index for s in trace.steps if any(o.is_error for o in s.observations)]


def test_count_tokens_uses_cl100k():
    assert count_tokens("hello world") == 2
    assert count_tokens("tiktoken is great!") == 6
    assert count_tokens("<|endoftext|>") == 7
    assert count_tokens("") == 0


def test_counting_tokens_does_not_import_litellm():
    code = "import sys\nfrom trace2skill.compress import count_tokens\ncount_tokens('x')\nprint('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("budget", [50, 300, 800, 2000, 6000])
def test_budget_is_respected(real_trace, budget):
    assert count_tokens(compress_trace(real_trace, budget)) <= budget


@pytest.mark.parametrize("budget", [800, 2000, 6000])
def test_task_errors_neighbours_and_outcome_are_kept(real_trace, budget):
    text = compress_trace(real_trace, budget)
    assert text.startswith("[trace] astropy__astropy-13033")
    assert "[task] TimeSeries: misleading exception" in text
    assert text.endswith("[outcome] failure")
    errors = _error_steps(real_trace)
    assert errors == [19, 24, 25, 28, 30]
    for index in errors:
        assert f"[step {index}] " in text
    if budget >= 2000:
        for index in {i + d for i in errors for d in (-1, 1)}:
            assert f"[step {index}] " in text
        assert "[step 19] result (exit 1, ERROR): <returncode>1</returncode>" in text


def test_long_observations_are_elided_with_a_marker(real_trace):
    text = compress_trace(real_trace, 3000)
    assert ELIDED.search(text)
    assert re.search(r"\[steps? \d+(-\d+)?: \d+ steps? without errors omitted\]", text)
    assert count_tokens(text) > 2500, "the budget should be used, not wasted"


def test_small_traces_are_rendered_whole_and_output_is_deterministic(real_trace):
    full = compress_trace(real_trace, 1_000_000)
    assert not ELIDED.search(full)
    assert all(f"[step {s.index}] " in full for s in real_trace.steps)
    assert compress_trace(real_trace, 1500) == compress_trace(real_trace, 1500)
    assert compress_trace(real_trace, 0) == ""


def test_many_errors_under_a_tiny_budget_still_fit():
    steps = [Step(index=0, source="user", message="do it " * 500)]
    for i in range(1, 200):
        steps.append(
            Step(
                index=i,
                source="agent",
                message=f"attempt {i}",
                tool_calls=(ToolCall(id=f"c{i}", name="bash", arguments="make test " * 40),),
                observations=(Observation(call_id=f"c{i}", content="FAILED " * 300, is_error=True, exit_code=2),),
            )
        )
    trace = Trace(id="t", task="do it " * 500, steps=tuple(steps), outcome="failure", source=SourceRef(path="x"))
    for budget in (40, 500, 2000):
        text = compress_trace(trace, budget)
        assert count_tokens(text) <= budget
    assert "tokens cut to fit the budget" in compress_trace(trace, 500)


def test_elide_keeps_head_and_tail():
    text = "A" * 100 + "B" * 1000 + "C" * 50
    short = elide(text, 150)
    assert short.startswith("A" * 100) and short.endswith("C" * 50)
    assert "[... 1,000 chars elided ...]" in short
    assert elide("short", 150) == "short"


def test_counting_a_text_a_line_at_a_time_gives_the_whole_texts_count():
    """`compress` counts a rendering's tokens a part at a time (cut where a line starts with a
    non-space character) and stops past the budget; the sum must be the whole text's count,
    here the tokenizer's own on the whole text, for random texts of the characters that move
    cl100k_base's piece boundaries (newlines, spaces, tabs, punctuation, digits, letters, accents)."""
    import random

    from trace2skill.compress import _LINE_START, _tokens_upto

    alphabet = ["\n", "\n\n", " ", "  ", "\t", "\r\n", ".", ":", "'s", "[", "]", "1", "234", "a", "word", "É", "ß", "—", "{", "\"", "-"]
    rng = random.Random(13)
    cut = 0
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        assert _tokens_upto(text, 10**9, {}) == count_tokens(text), repr(text)
        cut += len(_LINE_START.split(text)) > 2
        whole = count_tokens(text)
        assert _tokens_upto(text, whole, {}) == whole and (whole == 0 or _tokens_upto(text, whole - 1, {}) is None)
    assert cut > 150, "most texts are counted in several parts"


def test_the_rendering_of_real_trajectories_is_counted_as_a_whole(real_trace):
    """The same on the texts a compression of a real trajectory tries: the memo of part counts
    shared between them changes no count."""
    import trace2skill.compress as compress

    seen: list[tuple[str, int | None]] = []
    original = compress._tokens_upto

    def recording(text: str, budget: int, memo: dict[str, int]) -> int | None:
        counted = original(text, budget, memo)
        seen.append((text, counted))
        return counted

    compress._tokens_upto = recording
    try:
        compress_trace(real_trace, 1500)
    finally:
        compress._tokens_upto = original
    assert seen
    for text, counted in seen:
        assert counted == (count_tokens(text) if count_tokens(text) <= 1500 else None)
