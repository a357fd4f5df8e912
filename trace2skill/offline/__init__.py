"""The offline analyst: lessons mined from trajectories without any model.

It is the default analyst when no LLM is configured, so it has to say things a practitioner
can act on, for any agent. Per trajectory (`analyse_offline`) it finds the runs that failed
(shell exit codes, tool error flags and messages, tracebacks of Python, Node, Go, Rust and
Java, HTTP errors, test-runner summaries) and keys each by its tool or command family and the
*template* of its error line, with the command that worked next. Optional packs (`packs`)
recognise domain-specific failures and dismiss domain-normal ones where their signatures fire.

`select_offline` then runs once over the consolidated lessons with the whole corpus: it keeps
errors that recur across runs, words them from their evidence, and adds behaviours that
really separate resolved from failed runs (Fisher's exact test, Benjamini-Hochberg). One
concept per module:

* `runs`: runs (a command and its result) and findings, read out of any trace;
* `shell`, `edits`: shell text and command families; files written and operands;
* `detect`, `template`: did a run fail and which line says how; that line's template;
* `quotes`, `wording`: evidence quotes; generic wording built from evidence;
* `pitfalls`, `behaviours`, `stats`: the two kinds of lesson and the test behind behaviours;
* `select`: the corpus pass; `packs`: optional domain packs.

See docs/offline-analyst.md.
"""

from __future__ import annotations

from ..types import Lesson, Trace
from . import packs
from .edits import edited_files
from .pitfalls import generic_findings, pitfall_lessons
from .runs import Run, read_runs
from .select import nothing_learned, observed, select_offline

__all__ = ["analyse_offline", "mine", "nothing_learned", "select_offline"]


def mine(trace: Trace) -> tuple[list[Lesson], bytes | None]:
    """One trajectory's lessons and its packed behaviours (None when unlabelled), reading its
    runs once for both: what the map stage keeps of a trajectory for the offline analyst."""
    runs = read_runs(trace)
    writes = edited_files(runs)
    return analyse_offline(trace, runs, writes), observed(trace, runs, writes)


def analyse_offline(trace: Trace, runs: list[Run] | None = None, writes: list[set[str]] | None = None) -> list[Lesson]:
    """Mine one trajectory for its failures, without a model.

    Args:
        trace: any canonical trace; only tool calls, observations and step text are read.
        runs, writes: `read_runs(trace)` and `edited_files(runs)` when the caller has them.

    Returns:
        One lesson per signature found in this trace, ordered by signature. Lessons with the
        same signature from other traces carry identical wording.
    """
    runs = read_runs(trace) if runs is None else runs
    writes = edited_files(runs) if writes is None else writes
    findings, judged = [], set()
    for pack in packs.PACKS:
        if pack.applies(trace, runs):
            found, seen = pack.judge(trace, runs, writes)
            findings += found
            judged |= seen
    findings += generic_findings(runs, judged)
    lessons = pitfall_lessons(trace, runs, findings, packs.wording, lambda run: packs.is_noise(run.output))
    return sorted(lessons, key=lambda lesson: lesson.signature)
