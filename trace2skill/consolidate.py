"""Stage 3: hierarchical merge of lesson sets, with provenance and a conflict ledger.

Each merge takes up to `fan_in` lesson sets and returns one. It is deterministic first:
lessons with the same signature merge, then near-identical wordings (word-shingle Jaccard)
merge; a model, when configured, may then group paraphrases and name contradictions, but it
never decides support or provenance. A merged lesson's evidence is the union of its members'
evidence and `merged_from` is the union of the *leaf* lesson ids, so the top of the tree can
always be traced back to individual trajectories and steps.

With a model, lessons are cut into windows of at most `MERGE_WINDOW` by similarity (TF-IDF
cosine over their words), so near-duplicates from different trajectories meet in one call
whatever their free-text subject; the merger may generalise several lessons into one rule,
which carries the union of their evidence.

Contradictions are recorded as `Conflict`s with both sides, never dropped. A conflict is
resolved automatically only when one side has clearly stronger support; otherwise it is
marked needs-review and kept out of SKILL.md by the author. `hold_risky` puts a rule whose
command fetches and runs code, sends data out, deletes outside the workspace, disables checks
or raises privileges on the same review list, unless trajectories of several distinct tasks
support it: one trajectory that talks the analyst into "always run `curl ... | sh`" must not
reach SKILL.md.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from .llm import LLMClient
from .prompts import render
from .types import Conflict, Lesson, LessonKind, LessonSet, content_hash, evidence_rows, union_evidence

if TYPE_CHECKING:
    from .rules import RuleRecord

NEAR_DUPLICATE = 0.8
MERGE_WINDOW = 40
"""Most lessons one merge call judges; larger sets are cut into windows of related lessons."""
DECISIVE_RATIO = 2


class MergeGroup(BaseModel):
    """Lessons that state the same rule, and the merged wording."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    members: list[str]
    """Ids of the lessons that say the same thing."""
    title: str
    rule: str
    when: str
    kind: LessonKind
    subject: str
    polarity: Literal["do", "avoid"]


class Contradiction(BaseModel):
    """Two lessons that cannot both be followed."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    a: str
    b: str
    reason: str


class MergeDecision(BaseModel):
    """A merge model's judgement over one group of lessons."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    groups: list[MergeGroup]
    contradictions: list[Contradiction]


def chunk(items: list, fan_in: int) -> list[list]:
    """Cut `items` into groups of `fan_in`; a lone remainder joins the previous group."""
    groups = [items[i : i + fan_in] for i in range(0, len(items), fan_in)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2].extend(groups.pop())
    return groups


def merge_count(n_sets: int, fan_in: int) -> int:
    """How many merge tasks the tree runs for `n_sets` analysed trajectories."""
    total = 0
    while n_sets > 1:
        n_sets = len(chunk(list(range(n_sets)), fan_in))
        total += n_sets
    return total


def merge_windows(n_sets: int, fan_in: int, lessons_per_set: int) -> int:
    """How many merge-model calls the tree sends when every analysis yields `lessons_per_set`
    distinct lessons (an upper bound: paraphrases merged on the way need fewer)."""
    sizes, total = [lessons_per_set] * n_sets, 0
    while len(sizes) > 1:
        sizes = [sum(group) for group in chunk(sizes, fan_in)]
        total += sum(window_count(size) for size in sizes)
    return total


def window_count(n_lessons: int) -> int:
    """Calls for one merge of `n_lessons`: full windows, plus the remainder when it has two or more."""
    return n_lessons // MERGE_WINDOW + (1 if n_lessons % MERGE_WINDOW >= 2 else 0)


def similarity_windows(lessons: list[Lesson], size: int = MERGE_WINDOW) -> Iterator[list[Lesson]]:
    """Cut `lessons` into windows of at most `size`, each a seed and the lessons most like it,
    one window at a time (a merge sends each window's call as soon as it is cut).

    Deterministic: seeds are taken in id order, ties broken by id. Windows are full except the
    last, so the number of calls is `window_count(len(lessons))`.
    """
    remaining = sorted(lessons, key=lambda l: l.id)
    if len(remaining) <= size:
        if remaining:
            yield remaining
        return
    vectors = _tfidf({l.id: _lesson_words(l) for l in remaining})
    while remaining:
        seed, rest = remaining[0], remaining[1:]
        ranked = sorted(rest, key=lambda l: (-_cosine(vectors[seed.id], vectors[l.id]), l.id))
        window = [seed, *ranked[: size - 1]]
        chosen = {l.id for l in window}
        remaining = [l for l in remaining if l.id not in chosen]
        yield window


def merge_sets(sets: Iterable[LessonSet], level: int) -> LessonSet:
    """Merge lesson sets without a model: same signature, then near-identical wording."""
    sets = list(sets)
    lessons = [lesson for s in sets for lesson in s.lessons]
    merged = _merge_near_duplicates(_merge_by_signature(lessons))
    conflicts = [c for s in sets for c in s.conflicts]
    return _finish(merged, conflicts, sets, level)


async def merge_sets_llm(sets: Iterable[LessonSet], level: int, llm: LLMClient) -> LessonSet:
    """Merge deterministically, then let the model group paraphrases and flag contradictions.

    The windows are disjoint, so each window's call goes out as soon as the window is cut (the
    client bounds how many are in flight), while the next is cut, and the decisions are applied
    in window order, whatever order the answers arrive in: the result is the one a call-by-call
    merge would give. The deterministic merge, the windows and their prompts are computed in
    worker threads, off the event loop. When one call fails the calls not yet answered are
    cancelled and the error is raised, as a call-by-call merge would.
    """
    base = await asyncio.to_thread(merge_sets, list(sets), level)
    cut = _windows_to_send(base)
    windows: list[list[Lesson]] = []
    tasks: list[asyncio.Future[MergeDecision]] = []
    try:
        while (item := await asyncio.to_thread(next, cut, None)) is not None:
            windows.append(item[0])
            tasks.append(asyncio.ensure_future(llm.complete(item[1], output=MergeDecision, purpose="merge")))
        decisions = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return await asyncio.to_thread(_apply_decisions, base, windows, decisions, level)


def _windows_to_send(base: LessonSet) -> Iterator[tuple[list[Lesson], list[dict[str, str]]]]:
    """The windows of two or more lessons of `base`'s lessons, each with its prompt, one at a time."""
    for window in similarity_windows(list(base.lessons)):
        if len(window) >= 2:
            yield window, merge_messages(window)


def _apply_decisions(base: LessonSet, windows: list[list[Lesson]], decisions: list[MergeDecision], level: int) -> LessonSet:
    lessons, conflicts = list(base.lessons), list(base.conflicts)
    for window, decision in zip(windows, decisions):
        merged, found = apply_decision(tuple(window), decision)
        window_ids = {l.id for l in window}
        lessons = [l for l in lessons if l.id not in window_ids] + merged
        conflicts += found
    return _finish(lessons, conflicts, [base], level)


def merge_messages(lessons: Iterable[Lesson]) -> list[dict[str, str]]:
    view = [
        dict(l.model_dump(include={"id", "title", "rule", "when", "kind", "subject", "polarity", "cause"}),
             failing_support=l.failing_support, succeeding_support=l.succeeding_support)
        for l in lessons
    ]
    return [{"role": "system", "content": render("system.md")}, {"role": "user", "content": render("merge.md", lessons=view)}]


def apply_decision(lessons: tuple[Lesson, ...], decision: MergeDecision) -> tuple[list[Lesson], list[Conflict]]:
    """Apply a model's groups and contradictions; unknown ids are ignored, nothing is lost."""
    by_id = {l.id: l for l in lessons}
    used: set[str] = set()
    out: list[Lesson] = []
    for group in decision.groups:
        members = [by_id[m] for m in dict.fromkeys(group.members) if m in by_id and m not in used]
        if len(members) < 2:
            continue
        used.update(m.id for m in members)
        anchor = _strongest(members)
        out.append(_combine(members, wording=group.model_dump(exclude={"members"}), signature=anchor.signature))
    out += [l for l in lessons if l.id not in used]
    leaf_owner = {leaf: l for l in out for leaf in _leaves(l)}
    conflicts = []
    for c in decision.contradictions:
        if c.a in by_id and c.b in by_id:
            a, b = leaf_owner[_leaves(by_id[c.a])[0]], leaf_owner[_leaves(by_id[c.b])[0]]
            if a.id != b.id:
                conflicts.append(_conflict(a, b, c.reason, "llm"))
    return out, conflicts


def _merge_by_signature(lessons: list[Lesson]) -> list[Lesson]:
    groups: dict[str, list[Lesson]] = defaultdict(list)
    for lesson in lessons:
        groups[lesson.signature].append(lesson)
    return [_combine(members) if len(members) > 1 else members[0] for _, members in sorted(groups.items())]


def _merge_near_duplicates(lessons: list[Lesson]) -> list[Lesson]:
    """Cluster lessons whose wording is near-identical (same kind and polarity, shingle Jaccard at
    least `NEAR_DUPLICATE` with the cluster's first lesson), strongest first; a lesson joins the
    earliest cluster it matches.

    Only clusters that can match are compared (prefix filtering): with the shingles of every set
    ordered rarest first, two sets of Jaccard >= t share one of the first `len - floor(t * len) + 1`
    shingles of each, so heads are indexed by those alone. Same clusters as comparing with every
    head, without the quadratic cost at the top of a large tree (1,500 lessons: 1.1 million
    comparisons before).
    """
    ordered = sorted(lessons, key=lambda l: (-l.support, l.id))
    shingles = {l.id: _shingles(f"{l.title} {l.rule}") for l in ordered}
    frequency = Counter(sh for l in ordered for sh in shingles[l.id])
    clusters: list[list[Lesson]] = []
    heads_by_shingle: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for lesson in ordered:
        mine = shingles[lesson.id]
        prefix = sorted(mine, key=lambda sh: (frequency[sh], sh))[: len(mine) - math.floor(NEAR_DUPLICATE * len(mine)) + 1]
        for index in sorted({c for sh in prefix for c in heads_by_shingle.get(sh, ())}):
            head = clusters[index][0]
            if (head.kind, head.polarity) == (lesson.kind, lesson.polarity) and _jaccard(shingles[head.id], mine) >= NEAR_DUPLICATE:
                clusters[index].append(lesson)
                break
        else:
            clusters.append([lesson])
            for sh in prefix:
                heads_by_shingle[sh].append(len(clusters) - 1)
    return [_combine(c) if len(c) > 1 else c[0] for c in clusters]


def _combine(members: list[Lesson], wording: dict | None = None, signature: str | None = None) -> Lesson:
    anchor = _strongest(members)
    fields = wording or anchor.model_dump(include={"title", "rule", "when", "kind", "subject", "polarity"})
    evidence = union_evidence(m.evidence for m in members)  # streamed: one chunk of each member's at a time
    causes = sorted({m.cause for m in members if m.cause})
    return Lesson.create(
        **fields,
        cause="; ".join(causes)[:500],
        signature=signature or anchor.signature,
        evidence=evidence,
        merged_from=tuple(sorted({leaf for m in members for leaf in _leaves(m)})),
    )


def _finish(lessons: list[Lesson], conflicts: list[Conflict], sets: list[LessonSet], level: int) -> LessonSet:
    lessons = sorted(lessons, key=lambda l: l.id)
    conflicts = _remap_conflicts(conflicts, lessons) + detect_polarity_conflicts(lessons)
    unique = {(c.a.signature, c.b.signature): c for c in sorted(conflicts, key=lambda c: c.id)}
    sources = tuple(sorted({t for s in sets for t in s.sources}))
    return LessonSet(lessons=tuple(lessons), conflicts=tuple(sorted(unique.values(), key=lambda c: c.id)), level=level, sources=sources)


def anchor_to_existing(lessons: Iterable[Lesson], existing: Iterable[RuleRecord]) -> list[Lesson]:
    """Give a new lesson the signature of an existing rule it restates, so the rule is updated, not duplicated.

    `existing` holds anything with `title`, `rule`, `kind`, `polarity` and `signature`: the
    rules a previous build recorded in provenance.json.

    Models word the same insight differently from run to run; without this, every incremental
    refresh would add a near-copy of a rule the skill already has. Only lessons of the same kind
    and polarity whose wording is near-identical (the threshold used for dedup) are anchored.
    """
    known = [(e, _shingles(f"{e.title} {e.rule}")) for e in sorted(existing, key=lambda e: e.signature)]
    signatures = {e.signature for e, _ in known}
    anchored = []
    for lesson in lessons:
        if lesson.signature not in signatures:
            words = _shingles(f"{lesson.title} {lesson.rule}")
            match = next((e for e, sh in known if (e.kind, e.polarity) == (lesson.kind, lesson.polarity)
                          and _jaccard(words, sh) >= NEAR_DUPLICATE), None)
            if match is not None:
                lesson = Lesson.create(**{**lesson.model_dump(exclude={"id", "signature", "evidence"}),
                                          "signature": match.signature, "evidence": lesson.evidence})
        anchored.append(lesson)
    return anchored


def detect_polarity_conflicts(lessons: list[Lesson]) -> list[Conflict]:
    """Cheap programmatic signal: the same subject recommended by one lesson and forbidden by another."""
    by_subject: dict[str, list[Lesson]] = defaultdict(list)
    for lesson in lessons:
        if lesson.subject:
            by_subject[lesson.subject].append(lesson)
    found = []
    for subject, group in sorted(by_subject.items()):
        dos = [l for l in group if l.polarity == "do"]
        avoids = [l for l in group if l.polarity == "avoid"]
        for a in dos:
            for b in avoids:
                if _same_topic(a, b):
                    found.append(_conflict(a, b, f"one lesson recommends {subject!r}, the other forbids it", "polarity"))
    return found


def _same_topic(a: Lesson, b: Lesson) -> bool:
    """Opposite polarity on one subject only conflicts when the rules talk about the same thing."""
    return _jaccard(_words(a.when + " " + a.title), _words(b.when + " " + b.title)) >= 0.3 or a.signature.split(":")[:2] == b.signature.split(":")[:2]


def _conflict(a: Lesson, b: Lesson, reason: str, detected_by: str) -> Conflict:
    a, b = sorted((a, b), key=lambda l: l.signature)
    strong, weak = sorted((a, b), key=lambda l: (-l.failing_support, -l.support, l.signature))
    decisive = strong.support >= DECISIVE_RATIO * weak.support and strong.support - weak.support >= 2
    return Conflict(
        id="C-" + content_hash([a.signature, b.signature])[:10],
        a=a,
        b=b,
        reason=reason,
        detected_by=detected_by,
        status="resolved" if decisive else "needs-review",
        resolution=f"stronger support: {strong.support} vs {weak.support} trajectories" if decisive else None,
        winner=strong.id if decisive else None,
    )


def _remap_conflicts(conflicts: list[Conflict], lessons: list[Lesson]) -> list[Conflict]:
    """Point each conflict at the lessons that now contain its sides' leaves; re-judge support."""
    owner = {leaf: l for l in lessons for leaf in _leaves(l)}
    out = []
    for c in conflicts:
        a, b = owner.get(_leaves(c.a)[0]), owner.get(_leaves(c.b)[0])
        if c.detected_by == "existing-skill" and a is None and b is not None:
            out.append(c.model_copy(update={"b": b}))  # side a is a rule of the skill, not in the pool
            continue
        if a is None or b is None:
            continue
        if a.id == b.id:
            out.append(c.model_copy(update={"status": "resolved", "resolution": "merged into one synthesised rule", "winner": a.id}))
        else:
            out.append(_conflict(a, b, c.reason, c.detected_by))
    return out


def _strongest(members: list[Lesson]) -> Lesson:
    return min(members, key=lambda l: (-l.failing_support, -l.support, l.id))


def _leaves(lesson: Lesson) -> tuple[str, ...]:
    return lesson.merged_from or (lesson.id,)


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def _jaccard(a: set, b: set) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)  # |a | b| without building the union


def _lesson_words(lesson: Lesson) -> list[str]:
    return _WORD.findall(f"{lesson.title} {lesson.rule} {lesson.when} {lesson.subject}".lower())


def _tfidf(docs: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    """Unit-length TF-IDF vectors of word lists (no dependency; lessons are short)."""
    frequency = Counter(word for words in docs.values() for word in set(words))
    n = len(docs)
    vectors = {}
    for key, words in docs.items():
        counts = Counter(words)
        vector = {w: c * (1.0 + math.log((1 + n) / (1 + frequency[w]))) for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        vectors[key] = {w: v / norm for w, v in vector.items()}
    return vectors


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(w, 0.0) for w, v in a.items())


RISKY_COMMANDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("fetches and runs code", re.compile(
        r"\b(curl|wget|iwr|invoke-webrequest|fetch)\b[^\n|]*\|\s*(sudo\s+)?(ba|z|k|da)?sh\b|"
        r"\b(curl|wget|iwr|invoke-webrequest)\b[^\n|]*\|\s*(sudo\s+)?(python\d?|perl|ruby|node|iex|invoke-expression)\b|"
        r"(ba|z)?sh\s+<\(\s*(curl|wget)|\beval\s+[\"']?\$\(\s*(curl|wget)|\bsource\s+<\(\s*(curl|wget)", re.I)),
    ("sends data out", re.compile(
        r"\bcurl\b[^\n]*\s(-d|--data(-binary|-raw|-urlencode)?|-F|--form|-T|--upload-file)\b|"
        r"\bwget\b[^\n]*--post-(data|file)|\b(nc|ncat|netcat)\s+\S+\s+\d+|"
        r"\b(scp|rsync)\b[^\n]*\s\S+@[^\s:]+:|/dev/tcp/|\binvoke-restmethod\b[^\n]*-method\s+post", re.I)),
    ("deletes outside the workspace", re.compile(
        r"\brm\s+(-[a-z]*\s+)*(/(?![\w.-]*workspace)|~|\$home\b|\.\./)|\brm\s+-[a-z]*r[a-z]*f?\s+\*|"
        r"\bshred\b|\bmkfs\b|\bdd\s+[^\n]*of=/dev/", re.I)),
    ("disables tests or checks", re.compile(
        r"--no-verify\b|\bgit\s+commit\b[^\n]*\s-n\b|\b(skip|disable|delete|remove|comment out)\s+(the\s+|all\s+|failing\s+)*"
        r"(tests?|checks?|hooks?|linters?|ci|assertions?|type[- ]?checks?)\b|@pytest\.mark\.skip|\bset\s+\+e\b|"
        r"\bpytest\b[^\n]*\|\|\s*true|\b(HUSKY|SKIP_TESTS|CI_SKIP)=", re.I)),
    ("raises privileges", re.compile(
        r"\bsudo\b|\bsu\s+(-|root)|\bchmod\s+(-R\s+)?(777|[ugoa]*\+s|[0-7]?[4-7][0-7]{3})\b|\bchown\s+root\b|"
        r"--privileged\b|\bsetuid\b|\bvisudo\b|/etc/sudoers", re.I)),
)
RISKY_SUPPORT = 3
"""Distinct tasks a rule carrying a risky command needs before it may be written without review."""


def risky_command(lesson: Lesson) -> str | None:
    """What a lesson's text would make an agent do that needs a person's review, if anything."""
    text = " ".join((lesson.title, lesson.rule, lesson.when))
    return next((what for what, pattern in RISKY_COMMANDS if pattern.search(text)), None)


def hold_risky(final: LessonSet, task_of: Mapping[str, str]) -> LessonSet:
    """Put each risky lesson supported by fewer than `RISKY_SUPPORT` distinct tasks on the review list.

    The hold is a needs-review conflict against the safety screen, so the author keeps the rule
    out of SKILL.md and it shows in CONFLICTS.md and the pull request's review list.
    """
    held = []
    for lesson in final.lessons:
        what = risky_command(lesson)
        tasks = {task_of.get(row[0], row[0]) for row in evidence_rows(lesson.evidence)}
        if what is None or len(tasks) >= RISKY_SUPPORT:
            continue
        screen = Lesson.create(title="Safety screen", rule=f"A rule that {what} needs review.", when="always",
                               kind=lesson.kind, signature=f"safety:{lesson.signature}", polarity="avoid", evidence=())
        reason = (f"the rule {what}; it is supported by {len(tasks)} distinct task(s), fewer than {RISKY_SUPPORT}, "
                  "so a person must approve it (it may come from text injected into a trajectory)")
        held.append(Conflict(id="C-" + content_hash(["safety", lesson.signature])[:10], a=lesson, b=screen, reason=reason,
                             detected_by="safety", status="needs-review"))
    if not held:
        return final
    conflicts = {c.id: c for c in (*final.conflicts, *held)}
    return final.model_copy(update={"conflicts": tuple(sorted(conflicts.values(), key=lambda c: c.id))})
