"""How a mini-swe-agent or SWE-agent run hands in its work, and the patch it submitted."""

from __future__ import annotations

from ....types import Trace
from ...runs import Run
from ...runs import is_submit as is_submit_tool

SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")


def is_submit(run: Run) -> bool:
    return any(marker in run.command for marker in SUBMIT_MARKERS) or is_submit_tool(run)


def submission(trace: Trace, runs: list[Run]) -> str | None:
    """The final patch text when the trace shows it (submit output or a `submission` field)."""
    for run in reversed(runs):
        if is_submit(run) and "diff --git" in run.output:
            return run.output
    for key in ("submission", "patch", "model_patch"):
        value = trace.extra.get(key)
        if isinstance(value, str) and "diff --git" in value:
            return value
    return None
