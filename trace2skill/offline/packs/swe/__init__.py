"""The SWE pack: a bash agent fixing a bug in a Python repository.

It was written from a study of 500 mini-swe-agent SWE-bench Verified trajectories, so it is
optional and speaks only where its signatures fire: a run applies when its harness shows
(mini-swe-agent's `<returncode>` observations and submit marker, its format, timeout and
overlong-output feedback, the `/testbed` checkout) or when the trace carries a submitted patch. On such runs it adds:

* failure signatures with catalogue wording (`data/swe_pack.toml`): format errors, timeouts,
  overlong output, system Python, Django scratch-script mistakes, edit regressions, ...;
* dismissals: failing test runs and exceptions in the agent's own scripts are the bug
  reproducing (the normal edit-test loop), not mistakes;
* seven behaviours around the source edits (reproduce first, tests after the last edit, ...).
"""

from __future__ import annotations

import re

from ....types import Trace
from ...behaviours import Shown
from ...runs import Run
from .behaviours import judge_behaviours
from .catalogue import catalogue_text, shown, wording
from .classify import judge
from .feedback import is_feedback
from .submit import SUBMIT_MARKERS, submission

NAME = "swe"
_HARNESS = re.compile(r"^\s*<returncode>-?\d+</returncode>|^\s*Please always provide EXACTLY ONE action")

__all__ = ["NAME", "applies", "behaviours", "catalogue_text", "is_feedback", "judge", "shown", "wording"]


def applies(trace: Trace, runs: list[Run]) -> bool:
    """The run comes from a SWE harness (see the module docstring)."""
    if any(marker in run.command for run in runs for marker in SUBMIT_MARKERS):
        return True
    if any("/testbed" in run.command or _HARNESS.match(run.output) or is_feedback(run.output) for run in runs):
        return True
    return submission(trace, runs) is not None


def behaviours(trace: Trace, runs: list[Run], writes: list[set[str]]) -> list[Shown]:
    return judge_behaviours(trace, runs, writes)
