"""The SWE pack's failure classifier: catalogue signatures, and the normal edit-test loop.

A signature keeps only the kind of failure and the normalised command family (`not-found:
pytest`, `edit:syntax-error`, `missing-file:rm`), never paths or user code, so the same
mistake in different trajectories gets the same signature and the catalogue's wording.

Some failures are not mistakes for a bash agent fixing a bug: a failing test run, or an
exception in the agent's own reproduction script before it edited anything, is the bug
reproducing. The pack *judges* those runs (so the generic analyst does not count them) without
reporting them. Failures it has no catalogue signature for are left to the generic analyst.
"""

from __future__ import annotations

import re

from ....types import Trace
from ... import quotes
from ...detect import failed
from ...runs import Finding, Run, Verdict
from ...shell import TEST_RUNNERS, family_of, real_commands
from .feedback import is_rejection, protocol_findings
from .tracebacks import python_error


_OWN_CODE = frozenset({"shell", "script", "unknown"})
"""Families whose failures are the agent's own code or the bug itself: a failing reproduction
script, test run or shell script is how the loop goes, not a mistake to warn about."""


def judge(trace: Trace, runs: list[Run], edits: list[set[str]]) -> tuple[list[Finding], set[int]]:
    """The pack's findings (harness feedback, then failed runs it recognises) and the indices
    of the runs it judged: recognised, or dismissed as the normal edit-test loop."""
    found = list(protocol_findings(trace, runs))
    judged: set[int] = set()
    edited: set[str] = set()
    for i, (run, targets) in enumerate(zip(runs, edits, strict=True)):
        verdict = _verdict(run, frozenset(edited))
        if verdict is not None:
            judged.add(i)
            if verdict[0]:
                found.append(Finding(verdict[0], run.step, quotes.failure(run.command, verdict[1]), run.command))
        edited |= targets
    return found, judged


def _verdict(run: Run, edited: frozenset[str]) -> Verdict | None:
    """("", "") for a run that failed as part of the normal loop (or was rejected by the
    harness, which `protocol_findings` reports); a catalogue verdict; or None (not the pack's)."""
    if not failed(run):
        return None
    if is_rejection(run.output):
        return "", ""
    verdict = _shell_error(run) or python_error(run, edited) or _runner_error(run)
    if verdict is not None:
        return verdict
    families = {family_of(name, args) for name, args in real_commands(run.command)} | {run.family}
    if any(f.startswith("python") or f in TEST_RUNNERS | _OWN_CODE for f in families):
        return "", ""
    return None


def _at(output: str, match: re.Match[str]) -> str:
    return quotes.line_at(output, match.start())


_NOT_FOUND = re.compile(r"^(?:.*?: )?(?:line \d+: )?([\w./+-]+): command not found", re.M)
_NO_FILE = re.compile(r"^([\w.+-]+): .*No such file or directory|can't open file .*No such file", re.M)
_SHELL_ERRORS = (
    (re.compile(r"^sed: -e expression.*$", re.M), "sed:bad-expression"),
    (re.compile(r"syntax error near unexpected token|unexpected EOF while looking for matching"
                r"|here-document at line \d+ delimited by end-of-file"), "shell:syntax-error"),
    (re.compile(r"patch failed|corrupt patch|does not apply|Hunk #\d+ FAILED"), "patch:does-not-apply"),
)


def _shell_error(run: Run) -> Verdict | None:
    """Errors the shell or a coreutils-style program reports in its own words."""
    out = run.output
    if (match := _NOT_FOUND.search(out)) or run.exit_code == 127 and (match := re.search(r"([\w./+-]+): not found", out)):
        name = match.group(1).rsplit("/", 1)[-1]
        return f"not-found:{'script' if name.endswith(('.sh', '.py')) else name}", _at(out, match)
    if match := re.search(r"No module named '?pytest'?", out):
        return ("env:system-python" if "/usr/bin/python" in run.command else "not-found:pytest"), _at(out, match)
    for pattern, signature in _SHELL_ERRORS:
        if match := pattern.search(out):
            return signature, _at(out, match)
    if "Traceback (most recent call last)" not in out and (match := _NO_FILE.search(out)):
        failing = match.group(1) or "python script"
        failing = "python script" if re.fullmatch(r"python[\d.]*", failing) else failing
        return f"missing-file:{failing}", _at(out, match)
    return None


def _runner_error(run: Run) -> Verdict | None:
    """Test-runner failures that are about invoking the runner, not about the tests."""
    if run.family not in TEST_RUNNERS:
        return None
    out = run.output
    if match := re.search(r"ERROR: (?:file|module) or (?:directory|package) not found|ERROR: file not found", out):
        return f"missing-file:{run.family}", _at(out, match)
    if match := re.search(r"errors? during collection|ERROR collecting|collected \d+ items? / \d+ errors?", out):
        return "tests:collection-error", _at(out, match)
    empty = re.search(r"no tests ran|collected 0 items|\d+ deselected|Ran 0 tests", out)
    if run.exit_code == 5 or empty and "collected 0 items" in empty.group(0):
        return "tests:none-collected", _at(out, empty) if empty else quotes.telling_line(out, run.exit_code)
    return None
