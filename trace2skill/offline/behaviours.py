"""Behaviour lessons: what a run did around its source edits, judged on every trace.

Which analyst speaks follows the outcome, as in Trace2Skill: a resolved run cites the good
behaviours it showed and the bad ones it avoided; a failed run cites the bad behaviours it
showed and the good ones it omitted; a run with an unknown outcome cites what it showed. So a
behaviour lesson's two support counts are exactly the two cells that argue for it, and the
corpus pass can rebuild all four cells from them and the corpus totals.

A behaviour that was shown is quoted by the command that shows it. One that was omitted or
avoided has no command to quote, so its quote says briefly what is missing and where
(`no reproduction re-run after the last source edit at step 31: sed -i ...`), or what the
patch held instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..types import Evidence, Lesson, Trace
from . import quotes
from .classify import failed
from .edits import is_scratch, is_source_edit, operands, repo_path, script_of
from .runs import Run, is_submit, submission
from .shell import TEST_RUNNERS
from .wording import lesson, wording

EDIT_CHURN_LIMIT = 8
"""Source-edit commands beyond which a run counts as churning (the catalogue text says 8)."""
_MISSING = {
    "behaviour:reproduce-first": ("no reproduction ran", "before the first source edit"),
    "behaviour:tests-after-edit": ("no passing run of specific tests", "after the last source edit"),
    "behaviour:rerun-repro-after-edit": ("no reproduction re-run", "after the last source edit"),
    "behaviour:review-diff": ("no `git diff` or `git status`", "after the last source edit"),
}
"""How an omitted behaviour is described: what is missing, and where it should have been."""


@dataclass(frozen=True)
class Behaviour:
    """Whether a run showed a behaviour, and the steps and quote that show it (or its absence)."""

    signature: str
    shown: bool
    steps: tuple[int, ...]
    quote: str


def behaviour_lessons(trace: Trace, runs: list[Run], edits: list[set[str]]) -> list[Lesson]:
    """Behaviour evidence per the module docstring: shown, or omitted, depending on outcome."""
    lessons = []
    for item in _behaviours(trace, runs, edits):
        if _argues_for_rule(item.shown, wording(item.signature)["polarity"] == "do", trace.outcome):
            evidence = Evidence(trace_id=trace.id, outcome=trace.outcome, steps=item.steps, quote=item.quote)
            lessons.append(lesson(item.signature, [evidence]))
    return lessons


def _argues_for_rule(shown: bool, wanted: bool, outcome: str) -> bool:
    if outcome == "success":
        return shown == wanted
    if outcome == "failure":
        return shown != wanted
    return shown


def _behaviours(trace: Trace, runs: list[Run], edits: list[set[str]]) -> Iterator[Behaviour]:
    """Judge each behaviour. Without a detected source edit, "after the last edit" means the
    whole run and "before the first edit" means before submitting."""
    submit_i = next((i for i, r in enumerate(runs) if is_submit(r)), len(runs))
    edited_at = [i for i, targets in enumerate(edits) if is_source_edit(targets)]
    first_i, last_i = (edited_at[0], edited_at[-1]) if edited_at else (submit_i, -1)
    before = [r for r in runs[:first_i] if _is_scratch_run(r)]
    yield _judged("behaviour:reproduce-first", before[:1], runs[first_i] if edited_at else None)
    yield from _after_last_edit(runs[last_i + 1:submit_i], runs[last_i] if edited_at else None)
    submit = runs[submit_i] if submit_i < len(runs) else None
    yield _churn([runs[i] for i in edited_at], submit)
    yield from _patch_behaviours(trace, runs, submit)


def _after_last_edit(after: list[Run], last_edit: Run | None) -> Iterator[Behaviour]:
    tests = [r for r in after if r.family in TEST_RUNNERS and operands(r.command)]
    passing = tests[-1:] if tests and not failed(tests[-1]) else []
    yield _judged("behaviour:tests-after-edit", passing, last_edit)
    scripts = [r for r in after if _is_scratch_run(r) and not failed(r)]
    yield _judged("behaviour:rerun-repro-after-edit", scripts[-1:], last_edit)
    reviews = [r for r in after if r.family in ("git diff", "git status") and not is_submit(r)]
    yield _judged("behaviour:review-diff", reviews[-1:], last_edit)


def _judged(signature: str, shown_by: list[Run], edit: Run | None) -> Behaviour:
    """A behaviour shown by `shown_by[0]` (if any), located relative to the source `edit`."""
    if shown_by:
        run = shown_by[0]
        steps = tuple(sorted({run.step, edit.step} if edit else {run.step}))
        return Behaviour(signature, True, steps, quotes.command_line(run.command))
    missing, where = _MISSING[signature]
    if edit is None:
        return Behaviour(signature, False, (), f"{missing}; the run made no source edit")
    described = f"{missing} {where} at step {edit.step}: {quotes.command_line(edit.command)}"
    return Behaviour(signature, False, (edit.step,), quotes.clip(described))


def _churn(source_edits: list[Run], submit: Run | None) -> Behaviour:
    """Edit churn: more than `EDIT_CHURN_LIMIT` commands edited source files."""
    count, steps = len(source_edits), (submit.step,) if submit else ()
    if count <= EDIT_CHURN_LIMIT:
        described = f"{_counted(count, 'source edit')} in the run (more than {EDIT_CHURN_LIMIT} is churn)"
        return Behaviour("behaviour:edit-churn", False, steps, described)
    run = source_edits[EDIT_CHURN_LIMIT]
    described = f"{count} source edits; edit {EDIT_CHURN_LIMIT + 1} at step {run.step}: {quotes.command_line(run.command)}"
    return Behaviour("behaviour:edit-churn", True, tuple(sorted({*steps, run.step})), quotes.clip(described))


def _is_scratch_run(run: Run) -> bool:
    """A run of the agent's own Python: a scratch script, `python -c`, or Python on stdin."""
    if run.family in ("python -c", "python"):
        return True
    if run.family != "python script":
        return False
    script = script_of(run.command)
    return is_scratch(script) or "/" not in repo_path(script)


def _patch_behaviours(trace: Trace, runs: list[Run], submit: Run | None) -> Iterator[Behaviour]:
    """Judge the submitted patch: scratch files added to it, and fixes spread over files."""
    steps = (submit.step,) if submit else ()
    patch = submission(trace, runs)
    if patch is None:
        missing = f"no patch in the trace; submitted at step {submit.step}" if submit else "no submission in the trace"
        yield Behaviour("behaviour:scratch-in-patch", False, steps, missing)
        yield Behaviour("behaviour:patch-spread", False, steps, missing)
        return
    headers = list(re.finditer(r"^diff --git a/(\S+) b/\S+$", patch, re.M))
    added = [m for m in headers if re.match(r"\n(new file mode|--- /dev/null)", patch[m.end():m.end() + 20])]
    scratch = [m for m in added if is_scratch(m.group(1))]
    if scratch:
        header = scratch[0]
        quote = quotes.joined(header.group(0), quotes.line_at(patch, header.end() + 1))
        yield Behaviour("behaviour:scratch-in-patch", True, steps, quote)
    else:
        described = f"the patch adds no scratch file; it changes {_listing([m.group(1) for m in headers])}"
        yield Behaviour("behaviour:scratch-in-patch", False, steps, quotes.clip(described))
    source = [m.group(1) for m in headers if _is_library_file(m.group(1))]
    described = f"the patch changes {_counted(len(source), 'source file')}" + (f": {_listing(source)}" if source else "")
    yield Behaviour("behaviour:patch-spread", len(source) > 1, steps, quotes.clip(described))


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    return f"{shown} and {len(paths) - 3} more" if len(paths) > 3 else shown or "no file"


def _is_library_file(path: str) -> bool:
    """A non-test source file of the project (what a fix normally changes)."""
    return (path.endswith((".py", ".pyx", ".c", ".js", ".ts", ".go", ".rs", ".java", ".rb"))
            and not is_scratch(path) and not re.search(r"(^|/)(tests?|testing)/|(^|/)test_|_test\.|conftest", path)
            and path.rsplit("/", 1)[-1] not in ("setup.py", "conftest.py"))
