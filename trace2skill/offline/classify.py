"""Classifying failed runs into pitfall signatures, and telling real failures from answers.

A signature keeps only the kind of failure and the normalised command family (`not-found:
pytest`, `edit:syntax-error`, `missing-file:rm`), never paths or user code, so the same
mistake in different trajectories gets the same signature. Each classifier returns a
`Verdict`, the signature and the telling line of the output; `classify` pairs it with the
command into the evidence quote.

False alarms are filtered first: grep, diff, cmp, `test` and friends exit 1 to say "no match"
or "different"; `ls` of a missing path answers a question; linters exit non-zero when they
report findings; a failing test run or an exception in the agent's own reproduction script
before any edit is the normal edit-test loop, not a mistake.
"""

from __future__ import annotations

import re

from ..types import Trace
from . import quotes
from .feedback import is_rejection, protocol_findings
from .runs import Finding, Run, Verdict
from .shell import LINTERS, TEST_RUNNERS, family_of, is_shell, program, real_commands, simple_commands
from .tracebacks import python_error

NO_MATCH_PROGRAMS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "git grep", "git diff", "diff", "cmp",
                               "test", "[", "[[", "which", "command", "type", "pgrep", "false"})
PROBES = frozenset({"ls", "stat", "file", "test", "["})
"""Commands an agent runs to ask whether a path exists; "no" is an answer, not a failure."""
_TOOL_ERRORS = (
    (re.compile(r"(unknown|invalid|unsupported) (tool|function)|tool .{0,40} (not found|does not exist)", re.I),
     "tool:unknown-tool"),
    (re.compile(r"(invalid|malformed) (json|arguments)|missing (required )?(argument|parameter)", re.I),
     "tool:bad-arguments"),
)


def findings(trace: Trace, runs: list[Run], edits: list[set[str]]) -> list[Finding]:
    """Every failure in the trace: harness feedback, then each failed run, judged with the
    files edited before it (so an exception from one of them is the agent's regression)."""
    found = list(protocol_findings(trace, runs))
    edited: set[str] = set()
    for run, targets in zip(runs, edits, strict=True):
        if (finding := classify(run, frozenset(edited))) is not None:
            found.append(finding)
        edited |= targets
    return found


def classify(run: Run, edited: frozenset[str]) -> Finding | None:
    """The finding for a failed run, or None when it did not fail or failed on purpose."""
    if not failed(run) or is_rejection(run.output):
        return None
    verdict = _tool_error(run) or _shell_error(run) or python_error(run, edited) or _runner_error(run)
    verdict = verdict or _generic_error(run)
    if verdict is None:
        return None
    signature, line = verdict
    return Finding(signature, run.step, quotes.failure(_as_called(run), line), run.command)


def _as_called(run: Run) -> str:
    """What the agent asked for: the shell text, or a non-shell tool's name and arguments."""
    return run.command if is_shell(run.tool, run.command) else f"{run.tool} {run.arguments.strip()}"


def failed(run: Run) -> bool:
    return run.is_error and not _is_false_alarm(run)


def _at(output: str, match: re.Match[str]) -> str:
    return quotes.line_at(output, match.start())


def _tool_error(run: Run) -> Verdict | None:
    """Errors from non-shell tools: protocol errors by kind, anything else per tool."""
    if is_shell(run.tool, run.command):
        return None
    for pattern, signature in _TOOL_ERRORS:
        if match := pattern.search(run.output):
            return signature, _at(run.output, match)
    return f"tool-error:{run.family}", quotes.telling_line(run.output, run.exit_code)


def _is_false_alarm(run: Run) -> bool:
    """Exit codes that report a result, not a failure (grep no-match, diff differences...)."""
    commands = real_commands(run.command)
    families = {family_of(name, args) for name, args in commands}
    if run.exit_code in (1, 2) and families and families <= PROBES and "Traceback" not in run.output:
        return True
    if _error_markers(run.output):
        return False
    if run.exit_code == 1 and families & NO_MATCH_PROGRAMS:
        return True
    if run.exit_code == 123 and "xargs" in families and any("grep" in args for _, args in commands):
        return True
    if families & LINTERS and run.exit_code is not None and run.exit_code > 0:
        return "pylint" not in families or run.exit_code & (1 | 32) == 0
    return False


def _error_markers(output: str) -> bool:
    """Text that means a real error even when the exit status alone could be a result."""
    return bool(re.search(r"Traceback \(most recent call last\)|command not found|No such file or directory"
                          r"|^\w[\w./-]*: (?:error|invalid|unrecognized|cannot|can't)|Permission denied",
                          output, re.M | re.I))


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
    if match := re.search(r"Permission denied", out):
        return f"permission:{run.family}", _at(out, match)
    if match := re.search(r"unrecognized arguments|invalid option|unknown option|no such option"
                          r"|^usage: ", out, re.M | re.I):
        return f"usage:{run.family}", _at(out, match)
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


def _generic_error(run: Run) -> Verdict | None:
    """A non-zero exit of a non-Python tool that printed an error line."""
    if run.family.startswith("python") or run.family in TEST_RUNNERS | {"shell", "script", "unknown"}:
        return None
    programs = {program(words)[0].rsplit("/", 1)[-1] for words in simple_commands(run.command)}
    for match in re.finditer(r"^(?:([\w.+-]+): |(error|fatal): ).*$", run.output, re.M):
        name = match.group(1) or "git"
        if name in programs:
            return f"exit:{run.family if name == run.family.split()[0] else name}", quotes.clip(match.group(0))
    return None
