"""Held-out evaluation: would the skill's rules have addressed failures in runs it never saw?

    index the corpus (task ids kept) -> split by task into K folds -> for each fold: distil shares
    of the other folds in memory (write=False) -> read the held-out fold again and score it with
    every share's rules -> pool the folds -> learning curve over shares of the training folds

A trajectory's *task* is its SWE-bench instance id, tau-bench task id, else its own id, so two
attempts at one task never sit on both sides of a split. Folds are dealt from the tasks sorted by
a hash of their id: deterministic, balanced, independent of input order.

Scoring asks, for each held-out trajectory, which rules *flag* it:

* offline, the analyst reads the run as its error analyst would (the run relabelled as failed)
  and lists the behaviours it showed; a pitfall rule flags the run when one of its failure
  signatures matches the rule's (`addresses`), a behaviour rule when the run showed what an
  `avoid` rule warns against or skipped what a `do` rule asks for. Only the rule's signature,
  kind and polarity are used;
* with a model, a judge call per held-out trajectory sees the rule list and the run's steps and
  must cite rule ids (`JudgeVerdict`); ids not in the list are dropped. Calls go through the
  run's `LLMClient`, so they are capped and budgeted like any other. The journal keeps what was
  paid for: each fold's distil is a run with its own run id (its analyses and merges are
  journaled), and each verdict is kept by `verdict_key`, so a rerun pays for nothing twice.

`heldout_failure_coverage` is the share of held-out failed runs flagged by at least one rule;
`false_alarm_rate` the share of held-out successful runs flagged by at least one rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .analyse import is_offline
from .author import SkillBuild
from .config import Config
from .errors import NothingLearned
from .journal import AnalysisJournal
from .llm import LLMClient
from .provenance import load_provenance
from .rules import RuleRecord
from .stream import reread, task_id
from .types import JSONObject, JSONValue, RunResult, Trace

if TYPE_CHECKING:
    from .stream import Corpus, IndexEntry

CURVE = (0.25, 0.5, 0.75, 1.0)
"""Shares of the training folds' tasks the learning curve distils from."""
SCRATCH = "eval-no-skill"
"""A folder name under the state folder that is never created: eval distils start from no skill."""


# --------------------------------------------------------------------------------------------
# Splitting by task


Item = TypeVar("Item", Trace, "IndexEntry")


def split_folds(items: Sequence[Item], k: int, task: Callable[[Item], str] = task_id) -> list[list[Item]]:
    """`k` folds (fewer when there are fewer tasks), no task in two folds, deterministic.

    Tasks are ordered by the SHA-256 of their id and dealt round-robin, so folds differ in size
    by at most one task and the split does not depend on the order the traces were read in.
    `items` are traces, or index entries with `task=lambda e: e.task` (the held-out gate).
    """
    tasks = sorted({task(t) for t in items}, key=lambda name: (hashlib.sha256(name.encode()).hexdigest(), name))
    k = max(1, min(k, len(tasks)))
    fold_of = {name: i % k for i, name in enumerate(tasks)}
    folds: list[list[Item]] = [[] for _ in range(k)]
    for item in sorted(items, key=lambda t: t.id):
        folds[fold_of[task(item)]].append(item)
    return folds


def task_share(items: Sequence[Item], share: float, task: Callable[[Item], str] = task_id) -> list[Item]:
    """The items of the first `ceil(share * tasks)` tasks in hash order (a learning-curve point)."""
    tasks = sorted({task(t) for t in items}, key=lambda name: (hashlib.sha256(name.encode()).hexdigest(), name))
    keep = set(tasks[: math.ceil(share * len(tasks))])
    return [t for t in items if task(t) in keep]


# --------------------------------------------------------------------------------------------
# Which rules flag a run


def addresses(rule_signature: str, finding_signature: str) -> bool:
    """Whether a rule with `rule_signature` addresses a finding with `finding_signature`.

    Signatures are `:`-separated keys from general to specific (`timeout:pytest`,
    `python:TypeError:<template>`); a rule addresses a finding with the same key or a more
    specific one under it. Case and whitespace are ignored.
    """
    rule, found = _norm(rule_signature), _norm(finding_signature)
    return bool(rule) and (found == rule or found.startswith(rule + ":"))


def _norm(signature: str) -> str:
    return "-".join(signature.casefold().split())


@dataclass(frozen=True)
class Findings:
    """What the offline analyst sees in one run, whatever its outcome."""

    failures: frozenset[str]
    """Signatures of the failures (pitfalls) it hit."""
    shown: frozenset[str]
    """Signatures of the behaviours it showed."""
    judged_by: frozenset[str]
    """Behaviour sources (`generic`, pack names) that judged it."""


def offline_findings(trace: Trace) -> Findings:
    """The run's failures (read as if it had failed, so a successful run meets the same
    detector as a failed one) and the behaviours it showed."""
    from .offline import analyse_offline
    from .offline.select import observe

    as_failure = trace.model_copy(update={"outcome": "failure"})
    shown, sources = observe(trace)
    return Findings(frozenset(lesson.signature for lesson in analyse_offline(as_failure)),
                    frozenset(item.signature for item in shown), frozenset(sources))


def offline_flags(rules: Iterable[RuleRecord], findings: Findings) -> set[str]:
    """Rules the run breaks: a pitfall it hit; a behaviour an `avoid` rule warns against that it
    showed; a behaviour a `do` rule asks for that it did not show (when that behaviour's source
    judged the run)."""
    flagged = set()
    for rule in rules:
        if any(addresses(rule.signature, found) for found in findings.failures):
            flagged.add(rule.id)
            continue
        source = _behaviour_source(rule)
        if source is None:
            continue
        showed = any(addresses(rule.signature, found) for found in findings.shown)
        if showed if rule.polarity == "avoid" else (not showed and source in findings.judged_by):
            flagged.add(rule.id)
    return flagged


def _behaviour_source(rule: RuleRecord) -> str | None:
    """The source of a behaviour rule (`generic` or a pack), None for any other rule."""
    from .offline import packs
    from .offline.behaviours import source_of

    if rule.kind == "pitfall":
        return None
    source = source_of(rule.signature)
    return source if source == "generic" or packs.wording(rule.signature) is not None else None


class JudgeVerdict(BaseModel):
    """The judge's answer for one held-out trajectory."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    rule_ids: list[str] = Field(max_length=50)
    """Ids of the listed rules that address a failure in this run (failed run) or would have
    flagged or changed what it did (successful run); empty when none does."""
    reason: str = Field(default="", max_length=1000)
    """One or two sentences naming the steps behind each cited rule."""


def judge_purpose(trace: Trace) -> str:
    return "judge-failure" if trace.outcome == "failure" else "judge-success"


def judge_messages(trace: Trace, rules: Sequence[RuleRecord], config: Config) -> list[dict[str, str]]:
    from .compress import compress_trace
    from .prompts import render

    listed = [{"id": r.id, "title": r.title, "rule": r.rule, "when": r.when} for r in rules]
    user = render("judge.md", failed=trace.outcome == "failure", rules=listed, task=trace.task[:2000],
                  trajectory=compress_trace(trace, config.analyse.token_budget))
    return [{"role": "user", "content": user}]


async def model_flags(trace: Trace, rules: Sequence[RuleRecord], llm: LLMClient, config: Config,
                      journal: AnalysisJournal | None = None) -> set[str]:
    """Rule ids the judge cites for this run; ids that are not in the list are dropped. A verdict
    in `journal` (an `AnalysisJournal`) is not asked again; a new one is recorded there."""
    if not rules:
        return set()
    key = verdict_key(trace, rules, config)
    kept = journal.get_verdict(key) if journal is not None else None
    if kept is not None:
        return set(kept)
    verdict = await llm.complete(judge_messages(trace, rules, config), output=JudgeVerdict, purpose=judge_purpose(trace))
    known = {r.id for r in rules}
    flagged = {rid.strip() for rid in verdict.rule_ids if rid.strip() in known}
    if journal is not None:
        journal.put_verdict(key, sorted(flagged))
    return flagged


def verdict_key(trace: Trace, rules: Sequence[RuleRecord], config: Config) -> str:
    """Everything a judge's answer depends on: the trajectory, the rules as listed, the model,
    the settings sent, the prompt's and the tool's versions."""
    from .llm import sent_sampling
    from .prompts import version as prompt_version
    from .types import content_hash
    from .version import __version__

    listed = [[r.id, r.title, r.rule, r.when] for r in rules]
    return content_hash([trace.digest(), listed, config.llm.model, config.llm.api_base, config.llm.structured,
                         sent_sampling(config.llm), config.analyse.token_budget, prompt_version("judge.md"), __version__])


def judge_journal(config: Config, llm: LLMClient | None) -> AnalysisJournal | None:
    """The journal judge verdicts are kept in (None offline, or with `llm.cache = false`)."""
    if is_offline(llm) or not config.llm.cache:
        return None
    from .journal import checkpoint_path, journal_path

    return AnalysisJournal(journal_path(checkpoint_path(config.state_dir)), "judge")


# --------------------------------------------------------------------------------------------
# Scores


@dataclass(frozen=True)
class Scores:
    """Held-out counts for one skill on one set of trajectories."""

    failures: int = 0
    successes: int = 0
    covered: int = 0
    """Failed runs flagged by at least one rule."""
    alarmed: int = 0
    """Successful runs flagged by at least one rule."""
    hits: dict[str, int] = field(default_factory=dict)
    """Rule id -> held-out failed runs it flags."""
    alarms: dict[str, int] = field(default_factory=dict)
    """Rule id -> held-out successful runs it flags."""
    rules: int = 0
    training: int = 0
    """Trajectories the skill was distilled from (0 when not known)."""
    by_kind: dict[str, int] = field(default_factory=dict)
    """`failure:<kind>` / `success:<kind>` -> held-out runs flagged by at least one rule of that kind."""

    @property
    def coverage(self) -> float | None:
        return round(self.covered / self.failures, 4) if self.failures else None

    @property
    def false_alarm_rate(self) -> float | None:
        return round(self.alarmed / self.successes, 4) if self.successes else None

    def __add__(self, other: "Scores") -> "Scores":
        return Scores(self.failures + other.failures, self.successes + other.successes,
                      self.covered + other.covered, self.alarmed + other.alarmed,
                      dict(Counter(self.hits) + Counter(other.hits)), dict(Counter(self.alarms) + Counter(other.alarms)),
                      self.rules + other.rules, self.training + other.training,
                      dict(Counter(self.by_kind) + Counter(other.by_kind)))

    def figures(self) -> JSONObject:
        return {"heldout_failure_coverage": self.coverage, "false_alarm_rate": self.false_alarm_rate,
                "heldout_failures": self.failures, "heldout_successes": self.successes,
                "covered_failures": self.covered, "flagged_successes": self.alarmed,
                "rules": self.rules, "training_trajectories": self.training}


class Scorer:
    """Scores rule sets on trajectories; offline findings are computed once per trajectory."""

    def __init__(self, config: Config, llm: LLMClient | None):
        self.config, self.llm = config, llm
        self._findings: dict[str, Findings] = {}
        self._journal = judge_journal(config, llm)

    def flags(self, traces: list[Trace], rules: Sequence[RuleRecord]) -> list[set[str]]:
        """The rule ids flagging each trace: offline findings (cached per trace), or judge calls
        made `analyse.concurrency` at a time."""
        if is_offline(self.llm):
            for trace in traces:
                if trace.id not in self._findings:
                    self._findings[trace.id] = offline_findings(trace)
            return [offline_flags(rules, self._findings[t.id]) for t in traces]
        return asyncio.run(self._judge_all(traces, rules))

    async def _judge_all(self, traces: list[Trace], rules: Sequence[RuleRecord]) -> list[set[str]]:
        limit = asyncio.Semaphore(self.config.analyse.concurrency)

        async def one(trace: Trace) -> set[str]:
            async with limit:
                return await model_flags(trace, rules, self.llm, self.config, self._journal)  # type: ignore[arg-type]

        from .llm import close_clients

        try:
            return list(await asyncio.gather(*(one(t) for t in traces)))
        finally:
            await close_clients()  # litellm's clients are bound to this event loop

    def score(self, rules: Sequence[RuleRecord], traces: Iterable[Trace], training: int = 0) -> Scores:
        """Counts over the labelled traces (runs with an unknown outcome are not scored)."""
        labelled = [t for t in traces if t.outcome in ("failure", "success")]
        return _tally(Scores(rules=len(rules), training=training), rules, labelled, self.flags(labelled, rules))

    def scores(self, rule_sets: Sequence[Sequence[RuleRecord]], traces: Iterable[Trace]) -> list[Scores]:
        """`score` of each rule set on `traces`, which are consumed a batch at a time and not kept
        (the held-out gate streams its folds from disk; offline findings are dropped with their batch)."""
        totals = [Scores(rules=len(rules)) for rules in rule_sets]
        labelled = (t for t in traces if t.outcome in ("failure", "success"))
        size = max(SCORE_BATCH, 2 * self.config.analyse.concurrency)
        while batch := list(islice(labelled, size)):
            totals = [_tally(total, rules, batch, self.flags(batch, rules)) for total, rules in zip(totals, rule_sets)]
            for trace in batch:
                self._findings.pop(trace.id, None)
        return totals


SCORE_BATCH = 64
"""Traces `Scorer.scores` holds at once (at least twice the concurrency, so judge calls fill it)."""


def _tally(into: Scores, rules: Sequence[RuleRecord], labelled: list[Trace], flags: list[set[str]]) -> Scores:
    """`into` plus the counts of `labelled` traces flagged as `flags` says."""
    hits, alarms, by_kind = Counter(into.hits), Counter(into.alarms), Counter(into.by_kind)
    failures, successes, covered, alarmed = into.failures, into.successes, into.covered, into.alarmed
    kind_of = {rule.id: rule.kind for rule in rules}
    for trace, flagged in zip(labelled, flags):
        by_kind.update(f"{trace.outcome}:{kind}" for kind in {kind_of[rid] for rid in flagged})
        if trace.outcome == "failure":
            failures += 1
            covered += bool(flagged)
            hits.update(flagged)
        else:
            successes += 1
            alarmed += bool(flagged)
            alarms.update(flagged)
    return replace(into, failures=failures, successes=successes, covered=covered, alarmed=alarmed,
                   hits=dict(hits), alarms=dict(alarms), by_kind=dict(by_kind))


def written_rules(provenance_text: str | None) -> list[RuleRecord]:
    """The rules a skill writes (SKILL.md and references), from its provenance.json text."""
    if not provenance_text:
        return []
    return sorted(load_provenance(provenance_text).rules.values(), key=lambda r: r.id)


Distil = Callable[..., tuple[RunResult, SkillBuild]]
"""`pipeline.distill`, passed in by the caller: the pipeline runs the gate, which scores with this
module, so importing the pipeline here would make an import cycle."""


def distil_rules(distil: Distil, config: Config, llm: LLMClient | None, fold: Corpus,
                 from_scratch: bool = True) -> tuple[list[RuleRecord], dict[str, str]]:
    """Distil `fold` (a `Corpus.subset` of a run's index: its traces stream from disk, as any
    run's do) in memory, nothing written, with `distil` and return the written rules and their files.

    `from_scratch` points the run at a folder that does not exist, so no existing skill (which
    may have been learned from the held-out runs) leaks into the result; otherwise the run
    deepens the configured skill, as a real distil or refresh would.
    """
    if not fold.entries:
        return [], {}
    if from_scratch:
        scratch = config.state_dir / SCRATCH
        if scratch.exists():
            from .errors import ConfigError

            raise ConfigError(f"{str(scratch)!r} must not exist: held-out evaluation distils from no skill there")
        config = config.model_copy(update={"skill": config.skill.model_copy(update={"out": scratch})})
    checkpoint = None
    if llm is not None:  # each fold is a run of its own: its analyses and merges are journaled, never paid twice
        from .journal import checkpoint_path

        checkpoint = checkpoint_path(config.state_dir)
    try:
        _, build = distil(config, llm, corpus=fold, write=False, checkpoint=checkpoint)
    except NothingLearned:
        return [], {}  # a skill with no rules: it flags nothing
    return written_rules(build.files.get("provenance.json")), build.files


# --------------------------------------------------------------------------------------------
# The evaluation


@dataclass(frozen=True)
class Evaluation:
    folds: list[Scores]
    curve: list[tuple[float, Scores]]
    titles: dict[str, str]
    kinds: dict[str, str]
    tasks: int
    trajectories: int
    fold_tasks: list[list[str]]

    @property
    def pooled(self) -> Scores:
        return sum(self.folds, Scores())

    def as_dict(self) -> JSONObject:
        """The `--json` document; key names are part of the interface (see README)."""
        pooled = self.pooled
        rule_ids = sorted(set(pooled.hits) | set(pooled.alarms) | set(self.titles))
        return {
            **pooled.figures(),
            "rules": len(rule_ids), "training_trajectories": round(pooled.training / len(self.folds), 1),
            "trajectories": self.trajectories, "tasks": self.tasks, "k": len(self.folds),
            "folds": [{"fold": i, "tasks": len(self.fold_tasks[i]), "task_ids": self.fold_tasks[i], **s.figures()}
                      for i, s in enumerate(self.folds)],
            "by_kind": {kind: {"rules": sum(k == kind for k in self.kinds.values()),
                               "heldout_failure_coverage": _rate(pooled.by_kind.get(f"failure:{kind}", 0), pooled.failures),
                               "false_alarm_rate": _rate(pooled.by_kind.get(f"success:{kind}", 0), pooled.successes)}
                        for kind in sorted(set(self.kinds.values()))},
            "rule_hits": {rid: {"title": self.titles.get(rid, ""), "kind": self.kinds.get(rid, ""), "heldout_hits": pooled.hits.get(rid, 0),
                                "false_alarms": pooled.alarms.get(rid, 0),
                                "hit_rate": round(pooled.hits.get(rid, 0) / pooled.failures, 4) if pooled.failures else None,
                                "alarm_rate": round(pooled.alarms.get(rid, 0) / pooled.successes, 4) if pooled.successes else None}
                          for rid in rule_ids},
            "learning_curve": [{"share": share, "training_trajectories": round(s.training / max(1, len(self.folds)), 1),
                                **{k: v for k, v in s.figures().items() if k in ("heldout_failure_coverage", "false_alarm_rate")}}
                               for share, s in self.curve],
        }


def evaluate(distil: Distil, config: Config, llm: LLMClient | None, corpus: Corpus, k: int = 4,
             curve: Sequence[float] = CURVE, progress: Callable[..., None] | None = None) -> Evaluation:
    """K-fold held-out evaluation of distilling `corpus` (read with `task_ids`) with `distil`
    (`pipeline.distill`; see the module docstring). Each training subset is distilled from the
    corpus's index as any run is; each held-out fold is then read again from disk once and scored,
    a batch at a time, with the rules of every point of the curve: the corpus is never held.

    Raises:
        NoInputError: fewer than two tasks, so nothing can be held out.
    """
    from .errors import NoInputError

    folds = split_folds(corpus.entries, k, task=_task)
    if len(folds) < 2:
        raise NoInputError(f"held-out evaluation needs trajectories of at least 2 tasks; found {len(folds)}")
    scorer = Scorer(config, llm)
    per_fold: list[Scores] = []
    points: dict[float, Scores] = {share: Scores() for share in curve}
    titles: dict[str, str] = {}
    kinds: dict[str, str] = {}
    shares = sorted(set(curve) | {1.0})
    for i, heldout in enumerate(folds):
        training = [e for j, fold in enumerate(folds) if j != i for e in fold]
        rule_sets, sizes = [], []
        for n, share in enumerate(shares):
            subset = {e.id for e in task_share(training, share, task=_task)}
            rule_sets.append(distil_rules(distil, config, llm, corpus.subset(lambda e: e.id in subset))[0])
            sizes.append(len(subset))
            if progress is not None:
                progress("eval", i * len(shares) + n + 1, len(folds) * len(shares))
        held = {e.id for e in heldout}
        scored = scorer.scores(rule_sets, reread(corpus.subset(lambda e: e.id in held), config))
        for share, rules, scores, size in zip(shares, rule_sets, scored, sizes):
            scores = replace(scores, training=size)
            if share == 1.0:
                per_fold.append(scores)
                titles.update({r.id: r.title for r in rules})
                kinds.update({r.id: r.kind for r in rules})
            if share in points:
                points[share] = points[share] + scores
    return Evaluation(per_fold, sorted(points.items()), titles, kinds, len({e.task_id for e in corpus.entries}),
                      len(corpus.entries), [sorted({e.task_id for e in fold}) for fold in folds])


def _task(entry: IndexEntry) -> str:
    return entry.task_id


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


# --------------------------------------------------------------------------------------------
# The learning-curve plot


def curve_svg(curve: Sequence[Mapping[str, JSONValue]], title: str = "held-out learning curve") -> str:
    """A self-contained SVG line chart of coverage and false-alarm rate against the number of
    training trajectories (points of `Evaluation.as_dict()["learning_curve"]`)."""
    width, height, left, right, top, bottom = 520, 320, 56, 150, 34, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [float(p["training_trajectories"]) for p in curve] or [0.0]
    x_max = max(xs) or 1.0

    def x(v: float) -> float:
        return round(left + plot_w * v / x_max, 1)

    def y(v: float) -> float:
        return round(top + plot_h * (1 - v), 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="20" font-size="13">{_xml(title)}</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(tick)}" x2="{left + plot_w}" y2="{y(tick)}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4}" text-anchor="end">{tick:.0%}</text>')
    for value in xs:
        parts.append(f'<text x="{x(value)}" y="{top + plot_h + 16}" text-anchor="middle">{value:g}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">training trajectories per fold</text>')
    series = (("heldout_failure_coverage", "held-out failure coverage", "#1f77b4", ""),
              ("false_alarm_rate", "false-alarm rate", "#d62728", ' stroke-dasharray="5,3"'))
    for n, (key, label, colour, dash) in enumerate(series):
        points = [(x(float(p["training_trajectories"])), y(p[key])) for p in curve if p.get(key) is not None]
        if points:
            path = " ".join(f"{px},{py}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            parts += [f'<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>' for px, py in points]
        ly = top + 14 + 18 * n
        parts.append(f'<line x1="{left + plot_w + 12}" y1="{ly}" x2="{left + plot_w + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + plot_w + 36}" y="{ly + 4}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
