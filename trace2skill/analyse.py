"""Stage 2: one analyst per trajectory, and the `Analyst` that also merges and selects.

An `Analyst` is chosen once, at the edge (`analyst_for`): `OfflineAnalyst` mines trajectories
without a model; `ModelAnalyst` sends failures to the error analyst and successes to the
success analyst, as in Trace2Skill. Nothing downstream asks which one it has.

The model analyst sees the current skill's rules (id, title, one line each) so it can propose a
new lesson or amend, qualify or contradict an existing rule by id: an amendment or
qualification takes the rule's signature (so the rule's provenance keeps the old evidence and
adds the new), a contradiction becomes a needs-review conflict with the rule. It also sees the
evaluator's verdict (outcome, reward, failing tests) when the trace carries one, and a failure
lesson records its `cause`.

Trajectory text is untrusted: it goes into the prompt as quoted data inside
`<trajectory>` tags, which the system prompt tells the model never to obey. Either way the
analyst returns a `LessonSet` whose evidence names this trajectory, its outcome and the cited
steps; support counts are derived from that evidence later, never taken from the model's word.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .config import Config
from .budget import with_budget
from .consolidate import anchor_to_existing, hold_risky, merge_sets, merge_sets_llm
from .errors import ContextTooLong
from .llm import BoundedClient, LLMClient, check_model
from .prepare import MAX_LESSONS, Prepared, StepTexts, analyst_messages, one_line, prepare
from .rules import RuleRecord, record_lesson, rule_id
from .types import Conflict, Evidence, Lesson, LessonKind, LessonSet, Trace, Usage, content_hash

if TYPE_CHECKING:
    from .stream import IndexEntry

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
    relation: Literal["new", "amends", "qualifies", "contradicts"] = "new"
    """How the lesson relates to an existing rule of the skill."""
    rule_id: str | None = None
    """The existing rule's id (r-...) when `relation` is not `new`."""
    cause: str = ""
    """For a failed trajectory: why it failed (the root cause, in one sentence)."""


class AnalystReport(BaseModel):
    """What one analyst returns for one trajectory."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    lessons: list[LessonDraft] = Field(max_length=MAX_LESSONS)
    """Transferable lessons, at most three."""


class Analyst(Protocol):
    """Reads trajectories into lessons and merges lesson sets; offline or with a model."""

    mode: Literal["offline", "llm"]
    model: str

    @property
    def usage(self) -> Usage: ...

    async def check(self) -> None:
        """Prove the analyst can work before any analysis (the model preflight)."""

    async def analyse(self, trace: Trace) -> LessonSet:
        """Trajectory-local lessons of one trace."""

    async def analyse_prepared(self, prepared: Prepared) -> LessonSet:
        """Trajectory-local lessons of a trace prepared ahead (`prepare`; model analyst only)."""

    async def merge(self, sets: list[LessonSet], level: int) -> LessonSet:
        """One lesson set from several."""

    def finish(self, final: LessonSet, runs: Sequence[IndexEntry], outcomes: dict[str, int]) -> LessonSet:
        """The consolidated set as it goes to the author (selection, safety holds), from the
        run's index (the trajectories are not held)."""

    def nothing_learned(self, runs: Sequence[IndexEntry]) -> str:
        """Why no lesson came out of `traces` (the run then writes nothing and exits 3)."""

    def author_config(self, config: Config) -> Config:
        """The configuration the author applies to this analyst's lessons."""


class OfflineAnalyst:
    """The LLM-free analyst (`trace2skill.offline`), wrapped as an `Analyst`."""

    mode: Literal["offline", "llm"] = "offline"
    model = "offline"
    usage = Usage()

    async def check(self) -> None:
        return None

    async def analyse(self, trace: Trace) -> LessonSet:
        from .offline import analyse_offline

        lessons = analyse_offline(trace)
        return LessonSet(lessons=tuple(sorted(lessons, key=lambda l: l.id)), sources=(trace.id,), level=0)

    async def analyse_prepared(self, prepared: Prepared) -> LessonSet:
        raise TypeError("the offline analyst reads whole traces, in the map stage")

    async def merge(self, sets: list[LessonSet], level: int) -> LessonSet:
        return merge_sets(sets, level)

    def finish(self, final: LessonSet, runs: Sequence[IndexEntry], outcomes: dict[str, int]) -> LessonSet:
        from .offline import select_offline

        return final.model_copy(update={"lessons": tuple(select_offline(list(final.lessons), runs))})

    def nothing_learned(self, runs: Sequence[IndexEntry]) -> str:
        from .offline import nothing_learned

        return nothing_learned(runs)

    def author_config(self, config: Config) -> Config:
        return config


class ModelAnalyst:
    """The Trace2Skill analysts and merger over an `LLMClient` (already under the run's budget).

    At most `analyse.concurrency` requests are in flight (`llm.BoundedClient`); building a
    prompt (compressing the trajectory, counting tokens) runs in a worker thread, so the event
    loop keeps every request slot busy while prompts are prepared.
    """

    mode: Literal["offline", "llm"] = "llm"

    def __init__(self, llm: LLMClient, config: Config, existing: Sequence[RuleRecord] = ()):
        self.llm = BoundedClient(llm, config.analyse.concurrency)
        self.model = llm.model
        self.config = config
        self.existing = sorted(existing, key=lambda r: r.id)

    @property
    def usage(self) -> Usage:
        return self.llm.usage

    async def check(self) -> None:
        await check_model(self.llm)

    async def analyse(self, trace: Trace) -> LessonSet:
        """Raises LLMError when the model failed or answered unusably after retries."""
        return await self.analyse_prepared(await asyncio.to_thread(prepare, trace, self.config, self.existing))

    async def analyse_prepared(self, prepared: Prepared) -> LessonSet:
        """The lessons of a trajectory prepared ahead; a context-length refusal is retried once
        with a third of the token budget (at least 500).

        Raises:
            LLMError: the model failed or answered unusably after retries.
        """
        try:
            report = await self._ask(prepared)
        except ContextTooLong:
            if prepared.redo is None:
                raise
            report = await self._ask(await asyncio.to_thread(prepared.redo, max(500, prepared.budget // 3)))
        by_id = {r.id: r for r in self.existing}
        lessons, conflicts = [], []
        for draft in report.lessons[:MAX_LESSONS]:
            lesson = _to_lesson(draft, prepared, by_id)
            lessons.append(lesson)
            target = by_id.get(draft.rule_id or "")
            if draft.relation == "contradicts" and target is not None:
                conflicts.append(_contradiction(target, lesson))
        lessons = anchor_to_existing(lessons, self.existing)
        return LessonSet(lessons=tuple(sorted(lessons, key=lambda l: l.id)), conflicts=tuple(conflicts),
                         sources=(prepared.id,), level=0)

    async def _ask(self, prepared: Prepared) -> AnalystReport:
        if prepared.messages is None:
            raise ValueError(f"no prompt was prepared for {prepared.id!r} (its analysis is journaled)")
        return await self.llm.complete(prepared.messages, output=AnalystReport, purpose=analyst_purpose(prepared))

    async def merge(self, sets: list[LessonSet], level: int) -> LessonSet:
        return await merge_sets_llm(sets, level, self.llm)

    def finish(self, final: LessonSet, runs: Sequence[IndexEntry], outcomes: dict[str, int]) -> LessonSet:
        return hold_risky(final, {r.id: r.task_hash for r in runs})

    def nothing_learned(self, runs: Sequence[IndexEntry]) -> str:
        return f"the model proposed no lesson from {len(runs)} trajectories; nothing was written"

    def author_config(self, config: Config) -> Config:
        """A model lesson needs `llm.min_support` distinct tasks (default 2) to enter SKILL.md; the
        author counts tasks, not trajectories, for model runs (`RunInfo.trace_tasks`)."""
        support = max(config.consolidate.min_support, config.llm.min_support)
        return config.model_copy(update={"consolidate": config.consolidate.model_copy(update={"min_support": support})})


def is_offline(llm: LLMClient | None) -> bool:
    """Whether a run with this client uses the offline analyst (no model configured): the one
    place that answers it, for stages that run before the analyst is built (the map stage reads
    and analyses offline in one pass) or beside it (the held-out judge)."""
    return llm is None


def analyst_for(config: Config, llm: LLMClient | None, existing: Sequence[RuleRecord] = ()) -> Analyst:
    """The run's analyst, chosen once: offline when there is no model, else the model analyst
    with `llm` under the run's caps (`budget.with_budget`)."""
    if is_offline(llm):
        return OfflineAnalyst()
    return ModelAnalyst(with_budget(llm, config), config, existing)


def analyst_purpose(trace: Trace | Prepared) -> str:
    return "analyse-failure" if trace.outcome == "failure" else "analyse-success"


__all__ = ["Analyst", "AnalystReport", "ModelAnalyst", "OfflineAnalyst", "Prepared", "analyst_for", "analyst_messages",
           "is_offline", "prepare", "verified_quote"]


def _to_lesson(draft: LessonDraft, trace: Prepared, existing: dict[str, RuleRecord]) -> Lesson:
    valid_steps = {index for index, _ in trace.steps}
    steps = tuple(sorted({s for s in draft.steps if s in valid_steps}))
    subject = normalise_subject(draft.subject)
    quote = verified_quote(trace.steps, steps, draft.quote)
    target = existing.get(draft.rule_id or "")
    refines = draft.relation in ("amends", "qualifies") and target is not None
    return Lesson.create(
        title=draft.title.strip(),
        rule=draft.rule.strip(),
        when=draft.when.strip(),
        kind=target.kind if refines else draft.kind,
        signature=target.signature if refines else f"llm:{draft.kind}:{subject}:{slug(draft.title)}",
        polarity=draft.polarity,
        subject=subject,
        cause=one_line(draft.cause, 300) if trace.outcome == "failure" else "",
        evidence=(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=steps, quote=quote),),
    )


def _contradiction(rule: RuleRecord, lesson: Lesson) -> Conflict:
    return Conflict(id="C-" + content_hash(sorted([rule.signature, lesson.signature]))[:10], a=record_lesson(rule), b=lesson,
                    reason=f"the analyst says this contradicts rule {rule_id(rule.signature)} of the skill",
                    detected_by="existing-skill", status="needs-review")


def verified_quote(texts: StepTexts, steps: tuple[int, ...], quote: str) -> str:
    """The model's quote if it really occurs in the cited steps (all steps when none is
    cited), else the start of their first text (none when no step is cited); `texts` is
    `step_texts` of the trajectory.

    Evidence must be checkable: a quote the model paraphrased or invented is never recorded.
    """
    cited = [parts for index, parts in texts if index in steps] or [parts for _, parts in texts]
    wanted = " ".join(quote.split())
    if wanted and any(wanted in text for parts in cited for text in parts):
        return wanted[:QUOTE_CHARS]
    if not steps:
        return ""
    return next((text for parts in cited for text in parts), "")[:QUOTE_CHARS]


def normalise_subject(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9_.\-]+", text.lower()))[:60]


def slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:60]
