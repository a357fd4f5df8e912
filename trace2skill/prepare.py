"""The model analyst's input, prepared where the trajectory is read: its prompt and the texts
its reply is checked against (`Prepared`).

On the model path this runs in worker processes (`prefetch`), so the driver holds text, not
traces. Trajectory text is untrusted: it goes into the prompt as quoted data inside
`<trajectory>` tags (`quoted`), which the system prompt tells the model never to obey.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import Config
from .prompts import render
from .rules import RuleRecord
from .types import Outcome, Trace

MAX_LESSONS = 3
"""Lessons one analyst may return (the prompt says so; `analyse.AnalystReport` holds it)."""
VERDICT_KEYS = re.compile(r"test|verdict|reward|score|eval|status|resolved|error", re.I)


StepTexts = tuple[tuple[int, tuple[str, ...]], ...]
"""Per step of a trajectory, its index and the texts a quote may come from (message, tool-call
arguments, observations), whitespace-normalised, empty ones left out (`step_texts`)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One trajectory as the model analyst needs it: its prompt and what checks the reply.

    Built where the trajectory is read (`prepare`; a worker process on the model path, see
    `prefetch`), so the driver holds text, not traces, and spends its time on requests.
    """

    id: str
    digest: str
    outcome: Outcome
    messages: list[dict[str, str]] | None
    """The analyst's messages; None when the run's journal already holds this analysis."""
    steps: StepTexts = ()
    budget: int = 0
    """The token budget the trajectory was compressed to."""
    redo: Callable[[int], "Prepared"] | None = field(default=None, compare=False)
    """Prepares the trajectory again at a smaller token budget (a context-length refusal);
    set on the driver, never sent between processes. None: it cannot be redone."""


def prepare(trace: Trace, config: Config, existing: Sequence[RuleRecord] = (), token_budget: int | None = None,
            *, redo: bool = True) -> Prepared:
    """`trace` as the model analyst needs it: its prompt (compressed to `token_budget`, default
    `analyse.token_budget`) and the texts its reply is checked against; with `redo`, it keeps
    `trace` to prepare it again at a smaller budget (False where it is sent to another process)."""
    budget = token_budget or config.analyse.token_budget
    again = functools.partial(prepare, trace, config, existing) if redo else None
    return Prepared(trace.id, trace.digest(), trace.outcome, analyst_messages(trace, config, existing, budget),
                    step_texts(trace), budget, again)


def step_texts(trace: Trace) -> StepTexts:
    """Each step's index and its non-empty texts, whitespace-normalised (what `verified_quote` searches)."""
    return tuple((step.index, tuple(text for part in (step.message, *(c.arguments for c in step.tool_calls),
                                                      *(o.content for o in step.observations))
                                    if (text := " ".join(part.split()))))
                 for step in trace.steps)


def analyst_messages(trace: Trace, config: Config, existing: Sequence[RuleRecord] = (),
                     token_budget: int | None = None) -> list[dict[str, str]]:
    from .compress import compress_trace

    template = "analyse_failure.md" if trace.outcome == "failure" else "analyse_success.md"
    user = render(
        template,
        task=quoted(trace.task[:4000]),
        trajectory=quoted(compress_trace(trace, token_budget or config.analyse.token_budget)),
        verdict=verdict(trace),
        rules=[{"id": r.id, "title": one_line(r.title, 100), "rule": one_line(r.rule, 200)} for r in existing],
        max_lessons=MAX_LESSONS,
    )
    return [{"role": "system", "content": render("system.md")}, {"role": "user", "content": user}]


def quoted(text: str) -> str:
    """Trajectory text made safe to place between data tags: it cannot close them."""
    return re.sub(r"</?\s*(trajectory|task|data)\b", lambda m: m.group(0).replace("<", "&lt;"), text, flags=re.I)


def verdict(trace: Trace) -> str:
    """The evaluator's verdict the trace carries: outcome, reward, and test or status fields."""
    parts = [f"outcome: {trace.outcome}"]
    if trace.reward is not None:
        parts.append(f"reward: {trace.reward:g}")
    for key, value in sorted(trace.extra.items()):
        if VERDICT_KEYS.search(key) and key != "label_source" and value not in (None, "", [], {}):
            parts.append(f"{key}: {one_line(str(value), 300)}")
    return quoted("; ".join(parts))


def one_line(text: str, limit: int) -> str:
    """`text` on one line (whitespace runs made one space), cut at `limit` characters."""
    return " ".join(text.split())[:limit]
