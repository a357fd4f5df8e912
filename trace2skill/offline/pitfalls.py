"""Pitfall lessons: a trace's failures grouped by signature, with the command that fixed them.

Failures a pack recognises keep the pack's signature and wording; every other failure is
keyed by its tool or command family and the *template* of its error line
(`error:book_reservation|Error: payment amount does not add up, total price is N, but paid N`).
A recovery is recorded as an extra evidence item whose steps are `(failing, recovering)` and
whose quote is the recovering command, so the corpus pass can count which form of command
worked next across runs.
"""

from __future__ import annotations

from collections.abc import Callable

from ..types import Evidence, Lesson, Trace
from . import quotes
from .detect import error_line, failed, failing_family
from .edits import operands, writes_files
from .runs import Finding, Run, is_submit
from .shell import TEST_RUNNERS, is_shell, shape
from .template import mask
from .wording import error_signature, error_wording

MAX_OCCURRENCES = 3
"""Evidence items kept per signature per trace: enough to locate it, not a log dump."""
RECOVERY_WINDOW = 6
"""How many later commands may count as the recovery of a failure."""
_READERS = frozenset({"cat", "nl", "sed", "head", "tail", "less", "awk", "git show", "grep", "rg", "git grep",
                      "ls", "find", "tree"})


def generic_findings(runs: list[Run], judged: set[int]) -> list[Finding]:
    """A finding for every failed run no pack has judged: family plus error template."""
    found = []
    for i, run in enumerate(runs):
        if i in judged or not failed(run):
            continue
        line = error_line(run)
        signature = error_signature(failing_family(run, line), mask(line))
        found.append(Finding(signature, run.step, quotes.failure(called(run), line), run.command, run.tool))
    return found


def called(run: Run) -> str:
    """What the agent asked for: the shell text, or a non-shell tool's name and arguments."""
    return run.command if is_shell(run.tool, run.command) else f"{run.tool} {run.arguments.strip()}"


def pitfall_lessons(trace: Trace, runs: list[Run], findings: list[Finding], worded: Callable[[str], dict[str, str] | None],
                    noise: Callable[[Run], bool]) -> list[Lesson]:
    """One lesson per signature: up to `MAX_OCCURRENCES` failures plus the first recovery.

    `worded(signature)` gives a pack's wording, or None for generic signatures; `noise(run)`
    says a pack knows the run's output for harness feedback, which is never a recovery.
    """
    by_signature: dict[str, list[Finding]] = {}
    for found in sorted(findings, key=lambda f: (f.step, f.signature, f.quote)):
        key = found.signature if found.signature.startswith("error:") else found.signature.replace(" ", "-")
        by_signature.setdefault(key, []).append(found)
    lessons = []
    for signature, found in by_signature.items():
        evidence = [Evidence(trace_id=trace.id, outcome=trace.outcome, steps=(item.step,), quote=item.quote)
                    for item in _dedupe(found)[:MAX_OCCURRENCES]]
        recovery = next((r for r in (_recovery(f, [x for x in runs if not noise(x)]) for f in found) if r is not None), None)
        if recovery is not None:
            failed_at, run = recovery
            evidence.append(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=(failed_at, run.step),
                                     quote=quotes.command_line(called(run))))
        fields = worded(signature) or error_wording(signature)
        lessons.append(Lesson.create(signature=signature, evidence=tuple(evidence), **fields))
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
    """The command that fixed a failure: the first later run (within `RECOVERY_WINDOW`) that
    worked and did the same job on the same things, in a different form. For a shell command
    that is the same paths or labels (or, with none, the same family) and a different shape;
    for another tool, the same tool with other arguments. A plain retry is not a recovery."""
    if found.signature.startswith("format:") or not found.command:
        return None
    failing = next((r for r in runs if r.step == found.step and r.command == found.command), None)
    later = [r for r in runs if r.step > found.step and not is_submit(r)][:RECOVERY_WINDOW]
    if failing is not None and not is_shell(failing.tool, failing.command):
        retry = next((r for r in later if r.tool == failing.tool and not failed(r)), None)
        return (found.step, retry) if retry is not None and retry.arguments != failing.arguments else None
    targets = operands(found.command)
    failing_family = failing.family if failing else ""
    for run in later:
        if failed(run) or not is_shell(run.tool, run.command):
            continue
        related = bool(operands(run.command) & targets) or (run.family == failing_family and not targets)
        if related and _role(run.command) == _role(found.command):
            return (found.step, run) if shape(run.command) != shape(found.command) else None
    return None


def _role(command: str) -> str:
    """What a command is for, so a recovery is a different way of doing the same job."""
    from .shell import family

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
