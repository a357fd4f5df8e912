"""Stage 2: one analyst per trajectory.

Failures go to the error analyst, successes to the success analyst, as in Trace2Skill. Without
a model, the offline analyst mines the trajectory instead. Either way the analyst returns a
`LessonSet` whose evidence names this trajectory, its outcome and the cited steps; support
counts are derived from that evidence later, never taken from the model's word.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import Config
from .llm import LLMClient
from .prompts import render
from .types import Evidence, Lesson, LessonKind, LessonSet, Trace

MAX_LESSONS = 3
QUOTE_CHARS = 200


class LessonDraft(BaseModel):
    """One lesson as an analyst model writes it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    title: str = Field(min_length=3, max_length=120)
    """Short, specific name of the rule."""
    rule: str = Field(min_length=3)
    """One imperative sentence an agent can follow."""
    when: str
    """The situation in which the rule applies."""
    kind: LessonKind
    """pitfall, procedure, fact or heuristic."""
    subject: str
    """Tool, command or concept the rule is about, lower case."""
    polarity: Literal["do", "avoid"]
    """Whether the rule recommends or forbids its subject."""
    steps: list[int] = Field(max_length=12)
    """Step indices the lesson is grounded in."""
    quote: str = Field(max_length=400)
    """Short verbatim excerpt from those steps."""


class AnalystReport(BaseModel):
    """What one analyst returns for one trajectory."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    lessons: list[LessonDraft] = Field(max_length=MAX_LESSONS)
    """Transferable lessons, at most three."""


async def analyse_trace(trace: Trace, llm: LLMClient | None, config: Config) -> LessonSet:
    """Extract trajectory-local lessons from one trace.

    Raises:
        LLMError: the model failed or answered unusably after retries.
    """
    if llm is None:
        from .offline import analyse_offline

        lessons = analyse_offline(trace)
    else:
        report = await llm.complete(analyst_messages(trace, config), output=AnalystReport, purpose=analyst_purpose(trace))
        lessons = [_to_lesson(draft, trace) for draft in report.lessons[:MAX_LESSONS]]
    return LessonSet(lessons=tuple(sorted(lessons, key=lambda l: l.id)), sources=(trace.id,), level=0)


def analyst_purpose(trace: Trace) -> str:
    return "analyse-failure" if trace.outcome == "failure" else "analyse-success"


def analyst_messages(trace: Trace, config: Config) -> list[dict[str, str]]:
    from .compress import compress_trace

    template = "analyse_failure.md" if trace.outcome == "failure" else "analyse_success.md"
    user = render(
        template,
        task=trace.task[:4000],
        trajectory=compress_trace(trace, config.analyse.token_budget),
        max_lessons=MAX_LESSONS,
    )
    return [{"role": "system", "content": render("system.md")}, {"role": "user", "content": user}]


def _to_lesson(draft: LessonDraft, trace: Trace) -> Lesson:
    valid_steps = {step.index for step in trace.steps}
    steps = tuple(sorted({s for s in draft.steps if s in valid_steps}))
    subject = normalise_subject(draft.subject)
    quote = verified_quote(trace, steps, draft.quote)
    return Lesson.create(
        title=draft.title.strip(),
        rule=draft.rule.strip(),
        when=draft.when.strip(),
        kind=draft.kind,
        signature=f"llm:{draft.kind}:{subject}:{slug(draft.title)}",
        polarity=draft.polarity,
        subject=subject,
        evidence=(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=steps, quote=quote),),
    )


def verified_quote(trace: Trace, steps: tuple[int, ...], quote: str) -> str:
    """The model's quote if it really occurs in the cited steps, else a verbatim excerpt of them.

    Evidence must be checkable: a quote the model paraphrased or invented is never recorded.
    """
    cited = [step for step in trace.steps if step.index in steps] or list(trace.steps)
    texts = [part for step in cited for part in (step.message, *(c.arguments for c in step.tool_calls), *(o.content for o in step.observations))]
    wanted = " ".join(quote.split())
    if wanted and any(wanted in " ".join(text.split()) for text in texts):
        return wanted[:QUOTE_CHARS]
    if not steps:
        return ""
    excerpt = next((" ".join(t.split()) for t in texts if t.strip()), "")
    return excerpt[:QUOTE_CHARS]


def normalise_subject(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9_.\-]+", text.lower()))[:60]


def slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:60]
