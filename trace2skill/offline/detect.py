"""Did a run fail, and which line of its output says how: error detection for any agent.

A run failed when its tool flagged an error, its process exited non-zero, or its output opens
like an error report ("Error: ...", `{"error": ...}`), unless the exit status answers a
question (grep found nothing, diff found differences, a linter reported findings). The telling
line is looked for in a fixed order, most specific first:

1. test-runner summaries of any language (pytest, unittest, jest, mocha, go test, cargo test,
   Maven/Gradle, RSpec, npm), for test commands;
2. tracebacks and panics: Python, Node, Go, Rust, Java (the exception line, not the frames);
3. HTTP errors (a 4xx/5xx status);
4. the first line, when it names an error (tools often open their reply with it);
5. the shell's and tools' own words (`command not found`, `No such file or directory`,
   `Error: ...`, `fatal: ...`);
6. else the first line that names an error, else the last line, else the exit code.
"""

from __future__ import annotations

import re

from ..ingest._steps import reports_json_error
from . import quotes
from .runs import Run
from .shell import LINTERS, TEST_RUNNERS, family_of, is_shell, real_commands

NO_MATCH_PROGRAMS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "git grep", "git diff", "diff", "cmp",
                               "test", "[", "[[", "which", "command", "type", "pgrep", "false"})
PROBES = frozenset({"ls", "stat", "file", "test", "["})
"""Commands an agent runs to ask whether a path exists; "no" is an answer, not a failure."""
LINE_LIMIT = 1000
_FILTERS = frozenset({"head", "tail", "grep", "egrep", "rg", "sort", "uniq", "wc", "tee", "cut", "awk", "less", "more",
                      "tr", "column", "xargs", "echo", "printf", "true", "cat"})
"""Programs that only shape or announce another command's output: not the one that failed."""
_NAMED = re.compile(r"^(?:(?:ba|z)?sh: (?:line \d+: )?)?([\w./+-]+): ")
_ERROR_OPENING = re.compile(r"^\s*(?:\[?error\]?|exception|fatal|failed|failure)\b\s*[:!-]", re.I)
_TEST_SUMMARIES = (
    re.compile(r"^=+ .*\b\d+ (?:failed|errors?)\b.*=+$", re.M),                 # pytest
    re.compile(r"^FAILED \((?:failures|errors)=\d+.*\)$", re.M),               # unittest
    re.compile(r"^Tests?:\s+\d+ failed\b.*$", re.M),                           # jest / vitest
    re.compile(r"^\s*\d+ failing\b.*$", re.M),                                 # mocha
    re.compile(r"^--- FAIL: .*$|^FAIL[ \t]+\S+.*$", re.M),                     # go test
    re.compile(r"^test result: FAILED\..*$", re.M),                            # cargo test
    re.compile(r"^(?:\[(?:ERROR|INFO)\] )?Tests run: \d+, Failures: [1-9]\d*.*$", re.M),   # Maven / Gradle
    re.compile(r"^\d+ examples?, [1-9]\d* failures?.*$", re.M),                # RSpec
    re.compile(r"^npm (?:ERR!|error) .*$", re.M),                              # npm
)
_EXCEPTIONS = (
    re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)\b(?::.*)?$", re.M),
    re.compile(r"^panic: .*$", re.M),                                          # Go
    re.compile(r"^thread '[^']*' panicked at .*$", re.M),                      # Rust
    re.compile(r"^error(?:\[E\d+\])?: .*$", re.M),                             # rustc, cargo, many CLIs
    re.compile(r'^Exception in thread "[^"]*" .*$|^Caused by: .*$', re.M),     # Java
    re.compile(r"^Uncaught \w*Error\b.*$", re.M),                              # browsers, Node REPL
)
_TRACE_START = re.compile(r"Traceback \(most recent call last\)|^\s+at [\w.$<>]+ ?\(|^goroutine \d+ \[|panicked at"
                          r"|^Exception in thread", re.M)
_HTTP = re.compile(r"^.*(?:HTTP/\d(?:\.\d)? [45]\d\d\b|\b(?:status(?: code)?|HTTP(?:Error)?)\W{0,3}[45]\d\d\b"
                   r"|\b[45]\d\d (?:Bad Request|Unauthorized|Forbidden|Not Found|Method Not Allowed|Conflict"
                   r"|Too Many Requests|Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)\b).*$",
                   re.M | re.I)
_OWN_WORDS = re.compile(r"^.*(?:command not found|No such file or directory|Permission denied|not recognized as"
                        r"|cannot find|can't open|Unable to|is not defined|does not exist|timed out).*$"
                        r"|^\s*(?:\w[\w./ -]*: )?(?:error|fatal|Error|ERROR|FATAL)\b:? .*$", re.M)


def failed(run: Run) -> bool:
    """True when the run really failed (see the module docstring)."""
    if run.is_error or run.exit_code:
        return not _answers_a_question(run)
    return _reports_error(run.output)


def _reports_error(output: str) -> bool:
    """A tool result that opens like an error report, though nothing flagged it."""
    if reports_json_error(output):
        return True
    head = output.lstrip()[:300]
    return bool(_ERROR_OPENING.match(head) or head.startswith("Traceback (most recent call last)"))


def _answers_a_question(run: Run) -> bool:
    """Exit codes that report a result, not a failure (grep no-match, diff differences...)."""
    commands = real_commands(run.command)
    families = {family_of(name, args) for name, args in commands}
    if run.exit_code in (1, 2) and families and families <= PROBES and "Traceback" not in run.output:
        return True
    if re.search(r"Traceback \(most recent call last\)|command not found|No such file or directory"
                 r"|^\w[\w./-]*: (?:error|invalid|unrecognized|cannot|can't)|Permission denied",
                 run.output, re.M | re.I):
        return False
    if run.exit_code == 1 and families & NO_MATCH_PROGRAMS:
        return True
    if run.exit_code == 123 and "xargs" in families and any("grep" in args for _, args in commands):
        return True
    if families & LINTERS and run.exit_code is not None and run.exit_code > 0:
        return "pylint" not in families or run.exit_code & (1 | 32) == 0
    return False


def error_line(run: Run) -> str:
    """The line of a failed run's output that says what went wrong (module docstring order);
    a bare heading such as `ERROR:` takes the line after it, which says what."""
    line = _error_line(run)
    if re.fullmatch(r"\W*\w+\W*", line) and (at := run.output.find(line)) >= 0:
        following = next((l.strip() for l in run.output[at + len(line):].splitlines() if l.strip()), "")
        return _clip(f"{line} {following}".strip())
    return line


def _error_line(run: Run) -> str:
    out = run.output
    searches = []
    if run.family in TEST_RUNNERS:
        searches.append(_TEST_SUMMARIES)
    if _TRACE_START.search(out) or run.family not in TEST_RUNNERS:
        searches.append(_EXCEPTIONS)
    searches.append(_TEST_SUMMARIES if run.family not in TEST_RUNNERS else ())
    for patterns in searches:
        if found := _last_match(out, patterns):
            return found
    first = next((line.strip() for line in out.splitlines() if not quotes.is_markup(line)), "")
    if quotes.names_error(first):
        return _clip(first)
    for pattern in (_HTTP, _OWN_WORDS):
        if match := pattern.search(out):
            return _clip(match.group(0).strip())
    return quotes.telling_line(out, run.exit_code)


def _last_match(output: str, patterns) -> str:
    """The last line any of `patterns` matches (a traceback's final exception is its cause)."""
    best: re.Match[str] | None = None
    for pattern in patterns:
        for match in pattern.finditer(output):
            if best is None or match.start() > best.start():
                best = match
    return _clip(best.group(0).strip()) if best else ""


def _clip(line: str) -> str:
    """The line whole up to `LINE_LIMIT`: the template is cut after masking, so two messages
    that differ only in a long path still meet; quotes clip it to their own limit."""
    return quotes.clip(line, LINE_LIMIT)


def failing_family(run: Run, line: str) -> str:
    """The family of the command that failed in a command line of several (`cd x && npm test
    | tail`): the program the error line names, else a test runner, else the last command that
    is not a filter. Other tools are their own family."""
    if not is_shell(run.tool, run.command) or run.command.split()[:1] == [run.tool]:
        return run.family  # another tool, or a SWE-agent command named after its first word
    families = [f for f in (family_of(name, args) for name, args in real_commands(run.command))
                if re.fullmatch(r"[\w.+/-]+(?: [\w:.+-]+)?", f)]  # not the rest of a quoted heredoc (`)"`)
    if len(families) <= 1:
        return run.family
    if (named := _NAMED.match(line)) and (base := named.group(1).rsplit("/", 1)[-1]) in {f.split()[0] for f in families}:
        return next(f for f in families if f.split()[0] == base)
    if runners := [f for f in families if f in TEST_RUNNERS]:
        return runners[-1]
    return next((f for f in reversed(families) if f not in _FILTERS), families[-1])
