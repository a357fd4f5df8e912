"""The offline analyst: lessons mined from one trajectory without any model.

It is the default analyst when no LLM is configured, so it has to say things a practitioner
can act on. It reads a `Trace` generically (any tool call, any observation) and reports:

* **pitfalls**: commands that really failed (non-zero exits, tracebacks, tool errors,
  timeouts, agent-protocol feedback such as "found 2 actions"), each keyed by a normalised
  *signature* (`timeout:pytest`, `not-found:pytest`, `edit:syntax-error`, ...), with the
  failing step, a quote of the command and the telling line of its output and, when the
  agent fixed it, the command that did;
* **behaviours**: what the run did around its edits (reproduced the bug first, re-ran the
  existing tests after the last edit, reviewed the diff, left scratch files in the patch).

`select_offline` then runs once over the consolidated lessons of a corpus and keeps those
the corpus backs. Lesson wording lives in `data/offline_rules.toml` and depends only on the
signature. One concept per module:

* `runs`: runs (a command and its result) and findings, read out of any trace;
* `shell`: shell text, programs behind wrappers, command families and shapes;
* `edits`: files written, scratch files, a command's operands;
* `feedback`, `classify`, `tracebacks`: harness feedback, failed runs, Python exceptions;
* `quotes`: evidence quotes; `wording`: the rule catalogue;
* `pitfalls`, `behaviours`: the two kinds of lesson; `select`: the corpus pass.

See docs/offline-analyst.md.
"""

from __future__ import annotations

from ..types import Lesson, Trace
from .behaviours import behaviour_lessons
from .classify import findings
from .edits import edited_files
from .pitfalls import pitfall_lessons
from .runs import read_runs
from .select import select_offline

__all__ = ["analyse_offline", "select_offline"]


def analyse_offline(trace: Trace) -> list[Lesson]:
    """Mine one trajectory for pitfalls and behaviours, without a model.

    Args:
        trace: any canonical trace; only tool calls, observations and step text are read.

    Returns:
        One lesson per signature found in this trace, ordered by signature. Lessons with the
        same signature from other traces carry identical wording.
    """
    runs = read_runs(trace)
    edits = edited_files(runs)
    lessons = pitfall_lessons(trace, runs, findings(trace, runs, edits)) + behaviour_lessons(trace, runs, edits)
    return sorted(lessons, key=lambda lesson: lesson.signature)
