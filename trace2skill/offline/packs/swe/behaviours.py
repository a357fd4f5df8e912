"""The SWE pack's behaviours: what a bash agent fixing a bug did around its source edits.

Each is judged on one run as shown or not, with the steps and a quote of the command that
shows it. Whether a behaviour becomes a rule is decided on the whole corpus by the same test
as the generic behaviours (`offline.behaviours`): only when resolved and failed runs really
differ, worded from the numbers.

*Source edits* are writes to files the submitted patch modifies (when the trace has the
patch), else to files that are not scratch files: so building a scratch reproduction
(`mkdir reproduce_issue && cat <<EOF > reproduce_issue/src/x.py`) is not an edit of the
project. A *reproduction* is any Python run (a script, `python -c`, `python -m tool`) in any
part of a command line, or a run of the project's own tool on files the agent wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ....types import Trace
from ... import quotes
from ...behaviours import Shown
from ...detect import failed
from ...edits import operands, repo_path
from ...runs import Run
from ...shell import TEST_RUNNERS, real_commands
from .scratch import is_scratch
from .submit import is_submit, submission

EDIT_CHURN_LIMIT = 8
"""Source-edit commands beyond which a run counts as churning (the catalogue text says 8)."""


def judge_behaviours(trace: Trace, runs: list[Run], edits: list[set[str]]) -> list[Shown]:
    """The pack's behaviours this run showed (see the module docstring)."""
    patch = submission(trace, runs)
    changed = _patched_files(patch) if patch else None
    submit_i = next((i for i, r in enumerate(runs) if is_submit(r)), len(runs))
    edited_at = [i for i, targets in enumerate(edits) if _is_source_edit(targets, changed)]
    first_i, last_i = (edited_at[0], edited_at[-1]) if edited_at else (submit_i, -1)
    shown: list[Shown] = []
    repro = next((r for r in runs[:first_i] if _is_reproduction(r, edits, runs)), None)
    if repro is not None:
        shown.append(_shown("behaviour:reproduce-first", repro, runs[first_i] if edited_at else None))
    if edited_at:
        shown += _after_last_edit(runs[last_i + 1:submit_i], runs[last_i], edits, runs)
    if len(edited_at) > EDIT_CHURN_LIMIT:
        run = runs[edited_at[EDIT_CHURN_LIMIT]]
        described = f"{len(edited_at)} source edits; edit {EDIT_CHURN_LIMIT + 1} at step {run.step}: "
        shown.append(Shown("behaviour:edit-churn", (run.step,), quotes.clip(described + quotes.command_line(run.command))))
    if patch:
        shown += _patch_behaviours(patch, runs[submit_i] if submit_i < len(runs) else None)
    return shown


def _after_last_edit(after: list[Run], last_edit: Run, edits: list[set[str]], runs: list[Run]) -> Iterator[Shown]:
    tests = [r for r in after if r.family in TEST_RUNNERS and operands(r.command)]
    if tests and not failed(tests[-1]):
        yield _shown("behaviour:tests-after-edit", tests[-1], last_edit)
    scripts = [r for r in after if _is_reproduction(r, edits, runs) and not failed(r)]
    if scripts:
        yield _shown("behaviour:rerun-repro-after-edit", scripts[-1], last_edit)
    reviews = [r for r in after if r.family in ("git diff", "git status")]
    if reviews:
        yield _shown("behaviour:review-diff", reviews[-1], last_edit)


def _shown(signature: str, run: Run, edit: Run | None) -> Shown:
    steps = tuple(sorted({run.step, edit.step} if edit else {run.step}))
    return Shown(signature, steps, quotes.command_line(run.command))


def _is_source_edit(targets: set[str], changed: set[str] | None) -> bool:
    if changed is not None:
        return any(t == "<patch>" or repo_path(t) in changed for t in targets)
    return any(t == "<patch>" or not is_scratch(t) for t in targets)


def _is_reproduction(run: Run, edits: list[set[str]], runs: list[Run]) -> bool:
    """A Python run anywhere in the command line (not a test runner or pip), or a program
    run on a file or folder the agent wrote earlier in this run."""
    if run.family in TEST_RUNNERS:
        return False
    for name, args in real_commands(run.command):
        if re.fullmatch(r"python[\d.]*", name.rsplit("/", 1)[-1]) and args[:2] not in (["-m", "pip"], ["-m", "pytest"]):
            return True
    index = runs.index(run)
    written = {repo_path(t).split("/")[0] for targets in edits[:index] for t in targets if t != "<patch>"}
    return bool(written & {repo_path(o).split("/")[0] for o in operands(run.command)}) and run.family not in _READERS


_READERS = frozenset({"cat", "nl", "sed", "head", "tail", "less", "ls", "grep", "rg", "find", "rm", "mkdir", "cp",
                      "mv", "echo", "git diff", "git status", "git add", "git checkout", "touch", "chmod", "wc"})


def _patched_files(patch: str) -> set[str]:
    """Files the patch modifies (not files it adds: a new file is not an edit of the project)."""
    headers = list(re.finditer(r"^diff --git a/(\S+) b/\S+$", patch, re.M))
    return {m.group(1) for m in headers if not re.match(r"\n(new file mode|--- /dev/null)", patch[m.end():m.end() + 20])}


def _patch_behaviours(patch: str, submit: Run | None) -> Iterator[Shown]:
    """Scratch files added to the submitted patch, and fixes spread over several non-test
    source files (added or modified: an added non-scratch file must be justified too)."""
    steps = (submit.step,) if submit else ()
    headers = list(re.finditer(r"^diff --git a/(\S+) b/\S+$", patch, re.M))
    added = [m for m in headers if re.match(r"\n(new file mode|--- /dev/null)", patch[m.end():m.end() + 20])]
    scratch = [m for m in added if is_scratch(m.group(1))]
    if scratch:
        header = scratch[0]
        yield Shown("behaviour:scratch-in-patch", steps, quotes.joined(header.group(0), quotes.line_at(patch, header.end() + 1)))
    source = [m.group(1) for m in headers if _is_library_file(m.group(1))]
    if len(source) > 1:
        listing = ", ".join(source[:3]) + (f" and {len(source) - 3} more" if len(source) > 3 else "")
        yield Shown("behaviour:patch-spread", steps, quotes.clip(f"the patch changes {len(source)} source files: {listing}"))


def _is_library_file(path: str) -> bool:
    """A non-test source file of the project (what a fix normally changes)."""
    return (path.endswith((".py", ".pyx", ".c", ".js", ".ts", ".go", ".rs", ".java", ".rb"))
            and not is_scratch(path) and not re.search(r"(^|/)(tests?|testing)/|(^|/)test_|_test\.|conftest", path)
            and path.rsplit("/", 1)[-1] not in ("setup.py", "conftest.py"))
