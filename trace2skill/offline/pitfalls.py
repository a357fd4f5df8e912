"""Pitfall lessons: a trace's failures grouped by signature, with the command that fixed them.

A recovery is recorded as an extra evidence item whose steps are `(failing, recovering)` and
whose quote is the recovering command (`quotes.command_line`), so the corpus pass can count
which form of command worked next across runs.
"""

from __future__ import annotations

from ..types import Evidence, Lesson, Trace
from . import quotes
from .classify import failed
from .edits import operands, writes_files
from .feedback import is_feedback
from .runs import Finding, Run, is_submit
from .shell import TEST_RUNNERS, family, shape
from .wording import lesson

MAX_OCCURRENCES = 3
"""Evidence items kept per signature per trace: enough to locate it, not a log dump."""
RECOVERY_WINDOW = 6
"""How many later commands may count as the recovery of a failure."""
_READERS = frozenset({"cat", "nl", "sed", "head", "tail", "less", "awk", "git show", "grep", "rg", "git grep",
                      "ls", "find", "tree"})


def pitfall_lessons(trace: Trace, runs: list[Run], findings: list[Finding]) -> list[Lesson]:
    """One lesson per signature: up to `MAX_OCCURRENCES` failures plus the first recovery."""
    by_signature: dict[str, list[Finding]] = {}
    for found in sorted(findings, key=lambda f: (f.step, f.signature, f.quote)):
        by_signature.setdefault(found.signature.replace(" ", "-"), []).append(found)
    lessons = []
    for signature, found in by_signature.items():
        evidence = [Evidence(trace_id=trace.id, outcome=trace.outcome, steps=(item.step,), quote=item.quote)
                    for item in _dedupe(found)[:MAX_OCCURRENCES]]
        recovery = next((r for r in (_recovery(f, runs) for f in found) if r is not None), None)
        if recovery is not None:
            failed_at, run = recovery
            evidence.append(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=(failed_at, run.step),
                                     quote=quotes.command_line(run.command)))
        lessons.append(lesson(signature, evidence))
    return lessons


def _dedupe(found: list[Finding]) -> list[Finding]:
    seen: set[tuple[int, str]] = set()
    kept = []
    for item in found:
        if (item.step, item.quote) not in seen:
            seen.add((item.step, item.quote))
            kept.append(item)
    return kept


def _recovery(found: Finding, runs: list[Run]) -> tuple[int, Run] | None:
    """The command that fixed a failure: the first later command (within `RECOVERY_WINDOW`)
    that worked and touched the same paths or labels (or, with none, was the same family),
    provided it differs in shape from the failing one; a plain retry is not a recovery."""
    if found.signature.startswith("format:") or not found.command:
        return None
    failing_family, targets = family(found.command), operands(found.command)
    later = [r for r in runs if r.step > found.step and not is_submit(r)][:RECOVERY_WINDOW]
    for run in later:
        if failed(run) or is_feedback(run.output):
            continue
        related = bool(operands(run.command) & targets) or (run.family == failing_family and not targets)
        if related and _role(run.command) == _role(found.command):
            return (found.step, run) if shape(run.command) != shape(found.command) else None
    return None


def _role(command: str) -> str:
    """What a command is for, so a recovery is a different way of doing the same job."""
    command_family = family(command)
    if command_family in TEST_RUNNERS:
        return "test"
    if writes_files(command):
        return "edit"
    if command_family.startswith("python"):
        return "python"
    if command_family in _READERS:
        return "read"
    if command_family in ("rm", "rmdir"):
        return "delete"
    return command_family
