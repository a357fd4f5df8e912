"""Render one trajectory as analyst-prompt text that fits a token budget.

The rendering is line-oriented and cites steps the way lessons do (`[step 12] agent: ...`),
so an analyst can quote step indices as evidence. When the full text is over budget it is
compressed in fixed levels, tried in order until one fits: first long fields are elided to
their head and tail with an explicit `[... 4,210 chars elided ...]` marker, then ordinary
steps shrink to one-line summaries, then they are replaced by `[steps 3-9: 7 steps omitted]`.
Throughout, the task, every step with an error, the steps right before and after it, the
last step and the final outcome stay. A last resort cuts the body at a token boundary
(with a marker) so the result is never over budget. Same trace and budget, same text.

Tokens are counted with the real cl100k_base BPE. Its rank file ships inside the litellm
wheel; we locate it with `importlib.util.find_spec` (litellm itself is never imported) and
parse it ourselves, because `tiktoken.load` would copy it into a cache folder.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tiktoken

from .errors import Trace2SkillError
from .types import Observation, Step, Trace

CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
_UNLIMITED = 1 << 40
_SUMMARY_CHARS = 100
_CHARS_PER_TOKEN_CEILING = 12
ESTIMATE_CHARS_PER_TOKEN = 3
"""Characters per cl100k_base token `estimated_tokens` assumes; real trajectories measure 2.9-4.5."""
_FIRST_LINE_SCAN = 2000
"""Characters `_first_line` reads before splitting the whole text into lines."""
_BARE_TAG = re.compile(r"^\s*<(/?[\w-]+)>(?:-?\d+</[\w-]+>)?\s*$")


@functools.cache
def _encoding() -> tiktoken.Encoding:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        raise Trace2SkillError("litellm is not installed, and its bundled cl100k_base tokenizer file is needed")
    path = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers" / CL100K_FILE
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise Trace2SkillError(f"cannot read the cl100k_base tokenizer file {str(path)!r}: {exc}") from None
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}
    return tiktoken.Encoding(
        name="cl100k_base", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=_CL100K_SPECIAL
    )


def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in `text` (special-token strings count as plain text)."""
    return len(_encoding().encode_ordinary(text))


_LINE_START = re.compile(r"(?<=\n)(?=\S)")
"""Where a line starts with a non-space character: cl100k_base's pre-tokenizer always starts a
new piece there (no piece holds a newline followed by anything but whitespace), and BPE merges
only within a piece, so the tokens of a text are the sum of the tokens of its parts cut here."""


def _tokens_upto(text: str, budget: int, memo: dict[str, int]) -> int | None:
    """`count_tokens(text)` when it is at most `budget`, else None, counted a part at a time
    (`_LINE_START`): it stops at the first part past the budget, and `memo` keeps each part's
    count, so the renderings one compression tries tokenise the lines they share once."""
    total = 0
    encode = _encoding().encode_ordinary
    for part in _LINE_START.split(text):
        tokens = memo.get(part)
        if tokens is None:
            tokens = memo[part] = len(encode(part))
        total += tokens
        if total > budget:
            return None
    return total


@dataclass(frozen=True)
class _Mode:
    other: Literal["full", "summary", "drop"]
    """How ordinary steps render: `full` (elided at a third of the key limit), `summary`, `drop`."""
    key_summary: bool = False
    """Key steps as one-line summaries too."""
    neighbours: bool = True
    """Whether the steps around an error count as key steps."""
    min_limit: int = 0
    """Smallest per-field character limit for key steps worth trying in this mode."""


_MODES = (
    _Mode("full", min_limit=1200),
    _Mode("summary", min_limit=400),
    _Mode("drop", min_limit=120),
    _Mode("drop", key_summary=True),
    _Mode("drop", key_summary=True, neighbours=False),
)


def compress_trace(trace: Trace, budget: int) -> str:
    """The trace as prompt text of at most `budget` tokens (see the module docstring).

    Each mode is tried in turn. Within a mode the largest per-field character limit that
    fits is found by a search on an estimate (tokens per character, measured on the mode's
    smallest rendering), then confirmed with the real tokenizer, stepping down until it
    fits; so the budget is used rather than wasted, with only a few tokenizer passes.

    Args:
        trace: the trajectory to render.
        budget: maximum number of cl100k_base tokens in the returned text.

    Returns:
        Deterministic text; the empty string when `budget` is not positive.
    """
    if budget <= 0:
        return ""
    errors = {i for i, step in enumerate(trace.steps) if any(o.is_error for o in step.observations)}
    summaries: dict[int, list[str]] = {}
    memo: dict[str, int] = {}
    text = _render(trace, _MODES[0], _UNLIMITED, _kept_steps(trace, errors, True), summaries)
    if _tokens_within(text, budget, memo) is not None:
        return text
    for mode in _MODES:
        keep = _kept_steps(trace, errors, mode.neighbours)
        text = _render(trace, mode, mode.min_limit, keep, summaries)
        tokens = _tokens_within(text, budget, memo)
        if tokens is None:
            continue
        limit = _estimated_limit(trace, mode, keep, budget, tokens / max(len(text), 1), summaries)
        while limit > mode.min_limit:
            candidate = _render(trace, mode, limit, keep, summaries)
            if _tokens_within(candidate, budget, memo) is not None:
                return candidate
            limit = max(mode.min_limit, limit * 9 // 10)
        return text
    return _hard_cut(trace, text, budget)


def estimated_tokens(trace: Trace, budget: int) -> int:
    """An upper-leaning estimate of `count_tokens(compress_trace(trace, budget))` that never
    tokenises: the full rendering's length at `ESTIMATE_CHARS_PER_TOKEN`, capped at `budget`.

    The cost quote uses it, so that each trajectory is compressed once per run (by its analyst),
    not once more for the quote. A trajectory over budget is estimated at the whole budget
    (compression fills 85-95 % of it); one under budget at most a few percent low.
    """
    if budget <= 0:
        return 0
    errors = {i for i, step in enumerate(trace.steps) if any(o.is_error for o in step.observations)}
    text = _render(trace, _MODES[0], _UNLIMITED, _kept_steps(trace, errors, True), {})
    return min(budget, -(-len(text) // ESTIMATE_CHARS_PER_TOKEN))


def _estimated_limit(trace: Trace, mode: _Mode, keep: set[int], budget: int, tokens_per_char: float,
                     summaries: dict[int, list[str]]) -> int:
    def fits(limit: int) -> bool:
        return len(_render(trace, mode, limit, keep, summaries)) * tokens_per_char <= budget

    return _largest(mode.min_limit, _longest_field(trace), fits)


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), assuming ok is monotone and ok(low) holds."""
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _tokens_within(text: str, budget: int, memo: dict[str, int]) -> int | None:
    """The token count of `text` when it is at most `budget`, else None (a text over
    `_CHARS_PER_TOKEN_CEILING` characters a token of budget is not tokenised at all)."""
    if len(text) > budget * _CHARS_PER_TOKEN_CEILING:
        return None
    return _tokens_upto(text, budget, memo)


def _longest_field(trace: Trace) -> int:
    sizes = [len(trace.task)]
    for step in trace.steps:
        sizes += [len(step.message), len(step.reasoning or "") // 2]
        sizes += [len(c.arguments) for c in step.tool_calls] + [len(o.content) for o in step.observations]
    return max(sizes)


def _kept_steps(trace: Trace, errors: set[int], neighbours: bool) -> set[int]:
    keep = set(errors)
    if neighbours:
        keep |= {j for i in errors for j in (i - 1, i + 1) if 0 <= j < len(trace.steps)}
    if trace.steps:
        keep.add(len(trace.steps) - 1)
    return keep


def _render(trace: Trace, mode: _Mode, limit: int, keep: set[int], summaries: dict[int, list[str]]) -> str:
    """The trace at one mode and per-field limit; `summaries` keeps each step's one-line
    summary (it does not depend on the limit) across the renderings of one compression."""
    lines = _header(trace, max(2 * limit, 400))
    omitted: list[int] = []
    for i, step in enumerate(trace.steps):
        if i not in keep and mode.other == "drop":
            omitted.append(step.index)
            continue
        if omitted:
            lines.append(_omitted_line(omitted))
            omitted = []
        if (i in keep and mode.key_summary) or (i not in keep and mode.other == "summary"):
            if i not in summaries:
                summaries[i] = _summary(step)
            lines.extend(summaries[i])
        else:
            lines.extend(_step_lines(step, limit if i in keep else limit // 3, trace.task))
    if omitted:
        lines.append(_omitted_line(omitted))
    lines.append(_outcome_line(trace))
    return "\n".join(lines)


def _header(trace: Trace, task_limit: int) -> list[str]:
    facts = [trace.id] + [f"{k} {v}" for k, v in (("agent", trace.agent), ("model", trace.model)) if v]
    facts.append(f"{len(trace.steps)} steps")
    return [f"[trace] {' | '.join(facts)}", f"[task] {elide(trace.task, task_limit) or '(none recorded)'}"]


def _outcome_line(trace: Trace) -> str:
    reward = f" (reward {trace.reward:g})" if trace.reward is not None else ""
    return f"[outcome] {trace.outcome}{reward}"


def _omitted_line(indices: list[int]) -> str:
    span = f"step {indices[0]}" if len(indices) == 1 else f"steps {indices[0]}-{indices[-1]}"
    return f"[{span}: {len(indices)} step{'s' if len(indices) > 1 else ''} without errors omitted]"


def _step_lines(step: Step, limit: int, task: str) -> list[str]:
    tag = f"[step {step.index}]"
    message = step.message
    if task and len(task) > 200 and task in message:
        message = message.replace(task, "[... task text, shown above ...]")
    lines = [f"{tag} {step.source}: {elide(message, limit)}"] if message or not step.tool_calls else []
    if step.reasoning:
        lines.append(f"{tag} {step.source} (reasoning): {elide(step.reasoning, limit // 2)}")
    for call in step.tool_calls:
        lines.append(f"{tag} {step.source} -> {call.name}: {elide(call.arguments, limit)}")
    for observation in step.observations:
        lines.append(f"{tag} result{_status(observation)}: {elide(observation.content, limit)}")
    return lines


def _summary(step: Step) -> list[str]:
    parts = [f"[step {step.index}] {step.source}"]
    if step.tool_calls:
        call = step.tool_calls[0]
        parts.append(f" -> {call.name}: {_first_line(call.arguments)}")
    elif step.message:
        parts.append(f": {_first_line(step.message)}")
    for observation in step.observations[:1]:
        parts.append(f" => result{_status(observation)}: {_first_line(observation.content)}")
    return ["".join(parts)]


def _status(observation: Observation) -> str:
    facts = [f"exit {observation.exit_code}"] if observation.exit_code is not None else []
    if observation.is_error:
        facts.append("ERROR")
    return f" ({', '.join(facts)})" if facts else ""


def _first_line(text: str) -> str:
    stripped = text.strip()
    head = stripped[:_FIRST_LINE_SCAN]
    lines = head.splitlines()
    if len(head) < len(stripped):
        lines = lines[:-1]  # may be cut short; if nothing before it qualifies, look at the whole text
    first = next((line.strip() for line in lines if line.strip() and not _BARE_TAG.match(line)), None)
    if first is None:
        first = next((line.strip() for line in stripped.splitlines() if line.strip() and not _BARE_TAG.match(line)), "")
    more = len(text) - len(first)
    if len(first) > _SUMMARY_CHARS:
        more += len(first) - _SUMMARY_CHARS
        first = first[:_SUMMARY_CHARS]
    return f"{first} [+{more:,} chars]" if more > 0 else first


def elide(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, keeping its head and tail around a marker."""
    if len(text) <= limit:
        return text
    head = max(limit * 2 // 3, 0)
    tail = max(limit - head, 0)
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut:,} chars elided ...]\n{text[len(text) - tail:] if tail else ''}"


def _hard_cut(trace: Trace, text: str, budget: int) -> str:
    """Last resort: keep the header and outcome, cut the middle at a token boundary."""
    encoding = _encoding()
    lines = text.split("\n")
    footer = "\n" + lines[-1]
    tokens = encoding.encode_ordinary(text[: len(text) - len(footer)])
    marker = "\n[... {n:,} tokens cut to fit the budget ...]"
    keep = budget - count_tokens(footer) - count_tokens(marker.format(n=len(tokens)))
    while keep > 0:
        candidate = encoding.decode(tokens[:keep]) + marker.format(n=len(tokens) - keep) + footer
        if count_tokens(candidate) <= budget:
            return candidate
        keep -= max(1, count_tokens(candidate) - budget)
    return _fit(_outcome_line(trace), budget)


def _fit(text: str, budget: int) -> str:
    """The longest token prefix of `text` whose decoded form still counts within `budget`."""
    encoding = _encoding()
    tokens = encoding.encode_ordinary(text)
    for keep in range(min(budget, len(tokens)), 0, -1):
        candidate = encoding.decode(tokens[:keep])
        if count_tokens(candidate) <= budget:
            return candidate
    return ""
