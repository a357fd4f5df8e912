"""The corpus pass: keep the offline lessons the corpus backs, and say by how much.

It runs once on the consolidated lessons (one per signature), with the number of resolved
and failed trajectories analysed. Its thresholds are named constants below; the rule text it
appends states the counts, so a reader can judge the rule's weight.
"""

from __future__ import annotations

from collections import Counter

from ..types import Lesson
from .shell import shape
from .wording import restate

MIN_BEHAVIOUR_SUPPORT = 2
MIN_PITFALL_SUPPORT = 2
MIN_RECOVERY_COUNT = 2
RECOVERY_SHARE = 4
"""A recovery is quoted in the rule only when at least 1/RECOVERY_SHARE of the runs used it."""
MAJORITY = 0.5


def select_offline(lessons: list[Lesson], outcomes: dict[str, int]) -> list[Lesson]:
    """Corpus-level pass over consolidated offline lessons: keep what is backed, say by how much.

    * A pitfall is kept when at least `MIN_PITFALL_SUPPORT` trajectories hit it. When one
      recovery form (`pytest -k`, `bin/test`, ...) worked next in at least `MIN_RECOVERY_COUNT`
      runs and in at least 1/`RECOVERY_SHARE` of the runs that hit it, the rule says so.
    * A behaviour lesson's evidence holds, for a `do` behaviour, the successes that showed it
      and the failures that omitted it (for an `avoid` behaviour, the failures that showed it
      and the successes that avoided it). With the corpus totals that gives all four cells. It
      is kept when it discriminates (a `do` behaviour shown by a strictly larger share of
      successes than of failures; an `avoid` behaviour by a strictly larger share of failures),
      or when a `do` behaviour is standard practice (shown by at least `MAJORITY` of the
      successes) and some failures omitted it, those failures being its evidence. It also needs
      `MIN_BEHAVIOUR_SUPPORT` runs that showed it. The kept rule states both shares.
    * Anything else (facts, heuristics from elsewhere) passes through untouched.

    Args:
        lessons: consolidated lessons (one per signature), as produced from `analyse_offline`.
        outcomes: number of analysed traces per outcome, e.g. `{"success": 26, "failure": 14}`.

    Returns:
        The kept lessons, pitfalls first, each group by descending support then signature.
    """
    n_success, n_failure = outcomes.get("success", 0), outcomes.get("failure", 0)
    kept: list[Lesson] = []
    for lesson in lessons:
        if lesson.signature.startswith("behaviour:"):
            judged = _judge_behaviour(lesson, n_success, n_failure)
        elif lesson.kind == "pitfall":
            judged = _judge_pitfall(lesson)
        else:
            judged = lesson
        if judged is not None:
            kept.append(judged)
    return sorted(kept, key=lambda x: (x.kind != "pitfall", -x.support, x.signature))


def _judge_pitfall(lesson: Lesson) -> Lesson | None:
    """Keep a pitfall enough runs hit; name the recovery most of them used, when it is common."""
    if lesson.support < MIN_PITFALL_SUPPORT:
        return None
    recoveries = {e.trace_id: e.quote for e in lesson.evidence if len(e.steps) == 2}
    shapes = Counter(shape(q) for q in recoveries.values())
    if not shapes:
        return lesson
    common, count = min(shapes.items(), key=lambda kv: (-kv[1], kv[0]))
    if count < MIN_RECOVERY_COUNT or count * RECOVERY_SHARE < lesson.support:
        return lesson
    return restate(lesson, f"In {count} of the {lesson.support} runs that hit this, `{common}` was the command "
                           f"that worked next.")


def _judge_behaviour(lesson: Lesson, n_success: int, n_failure: int) -> Lesson | None:
    """Keep a behaviour that discriminates, or a `do` behaviour that is standard practice in
    resolved runs and that some failed runs skipped; state all four counts either way."""
    do = lesson.polarity == "do"
    success_showed = lesson.succeeding_support if do else n_success - lesson.succeeding_support
    failure_showed = n_failure - lesson.failing_support if do else lesson.failing_support
    if not n_success or success_showed + failure_showed < MIN_BEHAVIOUR_SUPPORT:
        return None
    success_share = success_showed / n_success
    in_success = f"{success_showed} of {n_success} resolved runs ({success_share:.0%})"
    if not n_failure:
        return restate(lesson, f"Done in {in_success}.") if do and success_share >= MAJORITY else None
    failure_share = failure_showed / n_failure
    shares = f"{in_success} and {failure_showed} of {n_failure} failed runs ({failure_share:.0%})"
    if do and success_share > failure_share:
        return restate(lesson, f"Resolved runs did this more often: {shares}.")
    if not do and failure_share > success_share:
        return restate(lesson, f"Failed runs did this more often: {shares}.")
    if do and success_share >= MAJORITY and lesson.failing_support:
        skipped = lesson.failing_support
        return restate(lesson, f"Standard practice, done in {shares}; the evidence cites the {skipped} failed "
                               f"run{'s' if skipped != 1 else ''} that skipped it.")
    return None
