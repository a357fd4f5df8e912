"""The offline analyst: lessons mined from one trajectory without any model.

It is the default analyst when no LLM is configured, so it has to say things a practitioner
can act on. It reads a `Trace` generically (any tool call, any observation) and reports:

* **pitfalls**: commands that really failed (non-zero exits, tracebacks, tool errors,
  timeouts, agent-protocol feedback such as "found 2 actions"), each keyed by a normalised
  *signature* (`timeout:pytest`, `not-found:pytest`, `edit:syntax-error`, ...), with the
  failing step, a verbatim quote and, when the agent fixed it, the command that did;
* **behaviours**: what the run did around its edits (reproduced the bug first, re-ran the
  existing tests after the last edit, reviewed the diff, left scratch files in the patch).

Which analyst runs follows the outcome, as in Trace2Skill. Every run reports its pitfalls
(a resolved run that hit one and recovered is where the fix is learned). The success analyst
reports the good behaviours a resolved run showed and the bad ones it avoided; the error
analyst reports the bad behaviours a failed run showed and the good ones it omitted; a run
with an unknown outcome reports what it showed. So a behaviour lesson's two support counts
are exactly the two cells that argue for it, and `select_offline` can recover all four cells
from them and the corpus totals.

Lesson wording lives in `data/offline_rules.toml` and depends only on the signature, so
lessons from different traces about the same thing are identical except for their evidence
and consolidation can merge them by signature with exact counts.

False alarms are filtered before classification: grep, diff, cmp, `test` and friends exit 1
to say "no match" or "different"; `ls` of a missing path answers a question; linters exit
non-zero when they report findings; a failing test run or an exception in the agent's own
reproduction script before any edit is the normal edit-test loop, not a mistake.

This is one module rather than a package on purpose: shell parsing, classification,
behaviours and selection share small private helpers and one notion of a "run", and the
public surface is just the two functions. See docs/offline-analyst.md.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import cache
from importlib import resources
from typing import Any

from .types import Evidence, Lesson, ToolCall, Trace

QUOTE_LIMIT = 200
MAX_OCCURRENCES = 3
"""Evidence items kept per signature per trace: enough to locate it, not a log dump."""
RECOVERY_WINDOW = 6
"""How many later commands may count as the recovery of a failure."""
MIN_BEHAVIOUR_SUPPORT = 2
MIN_PITFALL_SUPPORT = 2
MIN_RECOVERY_COUNT = 2
RECOVERY_SHARE = 4
"""A recovery is quoted in the rule only when at least 1/RECOVERY_SHARE of the runs used it."""
MAJORITY = 0.5
EDIT_CHURN_LIMIT = 8
"""Source-edit commands beyond which a run counts as churning (the catalogue text says 8)."""

SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")
SUBMIT_TOOLS = frozenset({"submit", "finish", "mark_task_complete", "task_complete", "attempt_completion"})
TEST_RUNNERS = frozenset({"pytest", "runtests.py", "bin/test", "unittest", "tox", "nose", "django test"})
NO_MATCH_PROGRAMS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "git grep", "git diff", "diff", "cmp",
                               "test", "[", "[[", "which", "command", "type", "pgrep", "false"})
PROBES = frozenset({"ls", "stat", "file", "test", "["})
"""Commands an agent runs to ask whether a path exists; "no" is an answer, not a failure."""
LINTERS = frozenset({"flake8", "pycodestyle", "pyflakes", "mypy", "ruff", "black", "isort", "pylint"})
SETUP_WRAPPERS = frozenset({"cd", "export", "source", ".", "set", "ulimit", "pushd", "popd", "unset"})
PREFIX_WRAPPERS = frozenset({"sudo", "time", "nohup", "env", "exec", "stdbuf", "xvfb-run"})
SCRATCH_NAME = re.compile(r"(^|/)(reproduc\w*|repro\w*|debug\w*|scratch\w*|tmp\w*|temp\w*|check\w*|verify\w*"
                          r"|test_(fix|issue|repro|bug|patch)\w*)\.(py|sh|txt|json|cfg)$", re.I)


@dataclass(frozen=True)
class _Run:
    """One executed command (or tool call) and what came back."""

    step: int
    tool: str
    command: str
    family: str
    output: str
    exit_code: int | None
    is_error: bool
    arguments: str = ""
    """The raw arguments, for non-shell tools whose command text is not the whole story."""


@dataclass(frozen=True)
class _Finding:
    """One failure: its signature, where it happened, what it said, and the command."""

    signature: str
    step: int
    quote: str
    command: str = ""


# --------------------------------------------------------------------------------------------
# Public API


def analyse_offline(trace: Trace) -> list[Lesson]:
    """Mine one trajectory for pitfalls and behaviours, without a model.

    Args:
        trace: any canonical trace; only tool calls, observations and step text are read.

    Returns:
        One lesson per signature found in this trace, ordered by signature. Lessons with the
        same signature from other traces carry identical wording.
    """
    runs = _runs(trace)
    findings = list(_protocol_findings(trace, runs))
    edits = _edits(runs)
    edited: set[str] = set()
    for run, targets in zip(runs, edits):
        if (found := _classify(run, frozenset(edited))) is not None:
            findings.append(found)
        edited |= targets
    lessons = _pitfall_lessons(trace, runs, findings) + _behaviour_lessons(trace, runs, edits)
    return sorted(lessons, key=lambda lesson: lesson.signature)


def select_offline(lessons: list[Lesson], outcomes: dict[str, int]) -> list[Lesson]:
    """Corpus-level pass over consolidated offline lessons: keep what is backed, say by how much.

    * A pitfall is kept when at least `MIN_PITFALL_SUPPORT` trajectories hit it. When one
      recovery form (`pytest -k`, `bin/test`, ...) worked next in at least `MIN_RECOVERY_COUNT`
      runs and in at least 1/`RECOVERY_SHARE` of the runs that hit it, the rule says so.
    * A behaviour lesson's evidence holds, for a `do` behaviour, the successes that showed it
      and the failures that omitted it (for an `avoid` behaviour, the failures that showed it
      and the successes that avoided it). With the corpus totals that gives all four cells. It
      is kept when it discriminates (a `do` behaviour shown by a strictly larger share of
      successes than of failures; an `avoid` behaviour by a strictly larger share of failures),
      or when a `do` behaviour is standard practice (shown by at least `MAJORITY` of the
      successes) and some failures omitted it, those failures being its evidence. It also needs
      `MIN_BEHAVIOUR_SUPPORT` runs that showed it. The kept rule states both shares.
    * Anything else (facts, heuristics from elsewhere) passes through untouched.

    Args:
        lessons: consolidated lessons (one per signature), as produced from `analyse_offline`.
        outcomes: number of analysed traces per outcome, e.g. `{"success": 26, "failure": 14}`.

    Returns:
        The kept lessons, pitfalls first, each group by descending support then signature.
    """
    n_success, n_failure = outcomes.get("success", 0), outcomes.get("failure", 0)
    kept: list[Lesson] = []
    for lesson in lessons:
        if lesson.signature.startswith("behaviour:"):
            judged = _judge_behaviour(lesson, n_success, n_failure)
        elif lesson.kind == "pitfall":
            judged = _judge_pitfall(lesson)
        else:
            judged = lesson
        if judged is not None:
            kept.append(judged)
    return sorted(kept, key=lambda x: (x.kind != "pitfall", -x.support, x.signature))


# --------------------------------------------------------------------------------------------
# Reading commands and results out of any trace


def _runs(trace: Trace) -> list[_Run]:
    """Pair every tool call with its result, by call id when present, else by position.

    Results may sit on the calling step or on the following tool/user steps (formats differ);
    a result nobody claims is kept with an empty command so its errors are still seen.
    """
    runs: list[_Run] = []
    pending: list[tuple[int, ToolCall]] = []
    for step in trace.steps:
        if step.source == "agent" or step.tool_calls:
            pending = [(step.index, call) for call in step.tool_calls]
        for observation in step.observations:
            owner = next((p for p in pending if observation.call_id and p[1].id == observation.call_id), None)
            if owner is None and pending:
                owner = pending[0]
            if owner is not None:
                pending.remove(owner)
            index, call = owner if owner else (step.index, ToolCall(name="unknown"))
            command = _command_text(call)
            content = observation.content
            exit_code = observation.exit_code if observation.exit_code is not None else _embedded_exit(content)
            runs.append(_Run(index, call.name, command, _family(command, call.name), content, exit_code,
                             observation.is_error or bool(exit_code), call.arguments))
    return runs


def _command_text(call: ToolCall) -> str:
    """The shell text of a call: raw for shell tools, the `command`-like field of JSON args."""
    text = call.arguments.strip()
    if not text.startswith(("{", "[")):
        return text
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(value, dict):
        for key in ("command", "cmd", "keystrokes", "script", "code", "input", "commands"):
            if isinstance(value.get(key), str):
                return value[key]
            if isinstance(value.get(key), list) and all(isinstance(v, str) for v in value[key]):
                return _unwrap_argv(value[key])
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _unwrap_argv(value)
    return text


def _unwrap_argv(argv: list[str]) -> str:
    if len(argv) >= 3 and argv[0] in ("bash", "sh", "zsh") and argv[1] in ("-c", "-lc"):
        return argv[2]
    return " ".join(argv)


def _embedded_exit(content: str) -> int | None:
    match = re.search(r"<returncode>\s*(-?\d+)\s*</returncode>", content)
    return int(match.group(1)) if match else None


_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1[^\n]*\n.*?\n\s*\2[ \t]*(?=\n|$)", re.S)


def _simple_commands(command: str) -> list[list[str]]:
    """Split shell text into simple commands (heredoc bodies removed), each as words."""
    text = _HEREDOC.sub(lambda m: m.group(0).split("\n", 1)[0], command)
    text = re.sub(r"\\\n", " ", text)
    parts = re.split(r"&&|\|\||;|\|&|\||\n|(?<![<>&])&(?![>&])", text)
    return [words for words in (part.split() for part in parts) if words]


def _program(words: list[str]) -> tuple[str, list[str]]:
    """Strip assignments and wrappers (`FOO=1 timeout 30 python ...`) to the real program."""
    words = list(words)
    while words:
        head = words[0]
        if re.match(r"^[A-Za-z_]\w*=", head) or head in PREFIX_WRAPPERS:
            words.pop(0)
        elif head == "timeout":
            words.pop(0)
            while words and (words[0].startswith("-") or re.match(r"^\d+[smhd]?$", words[0])):
                words.pop(0)
        else:
            break
    return (words[0], words[1:]) if words else ("", [])


def _family(command: str, tool: str = "bash") -> str:
    """Normalised command family: `pytest`, `python script`, `runtests.py`, `sed`, `git diff`...

    Calls to non-shell tools (an editor, a domain API) are their own family: the tool name.
    """
    if not _is_shell(tool, command):
        return tool.lower()
    for words in _simple_commands(command):
        program, args = _program(words)
        if program and program not in SETUP_WRAPPERS:
            return _family_of(program, args)
    return "shell"


def _is_shell(tool: str, command: str = "") -> bool:
    """Shell tools go by many names (`bash`, `execute_bash`, `Bash`, `shell_exec`); SWE-agent
    names the call after the command's first word, so `cat` with `cat x` is shell too."""
    name = tool.lower()
    return (name in {"sh", "run", "execute", "terminal", "unknown", "local_shell", "container.exec"}
            or any(part in name for part in ("bash", "shell", "command", "exec"))
            or (bool(command) and command.split()[0] == tool))


def _family_of(program: str, args: list[str]) -> str:
    base = program.rsplit("/", 1)[-1]
    if re.fullmatch(r"python[\d.]*", base):
        return _python_family(program, args)
    if base in ("py.test", "pytest"):
        return "pytest"
    if base == "runtests.py" or (program.endswith("bin/test") and base == "test"):
        return "runtests.py" if base == "runtests.py" else "bin/test"
    if base == "git" and args:
        return f"git {args[0]}"
    if base.endswith(".sh") or (program.startswith(("./", "/")) and base != program):
        return "script"
    return base


def _python_family(program: str, args: list[str]) -> str:
    rest = [a for a in args if a not in ("-u", "-B", "-W", "-X", "-O") and not a.startswith(("-W", "-X"))]
    if rest[:1] == ["-m"] and len(rest) > 1:
        module = rest[1]
        if module in LINTERS:
            return module
        return {"pytest": "pytest", "py.test": "pytest", "unittest": "unittest", "django": "django test"}.get(
            module, f"python -m {module}")
    if rest[:1] == ["-c"]:
        return "python -c"
    if rest and rest[0].rsplit("/", 1)[-1] in ("runtests.py", "manage.py", "setup.py"):
        return rest[0].rsplit("/", 1)[-1]
    return "python script" if rest and not rest[0].startswith("-") else "python"


# --------------------------------------------------------------------------------------------
# Classifying a failed run into a signature


FEEDBACK_HEAD = 400
"""Harness feedback opens the observation; searching only the head keeps program output that
merely mentions such phrases (a grep through the harness's own sources) from matching."""
_FORMAT = re.compile(r"^\s*(?:Please )?(?:always )?(?:provide|contain)s? EXACTLY ONE (?:action|bash code block)"
                     r".{0,80}?found (\d+)", re.I | re.S)
_TIMEOUT = re.compile(r"^\s*(?:The last command <command>(.*?)</command> timed out"
                      r"|(?:error:\s*)?(?:the )?(?:command|execution|tool call) timed out)", re.I | re.S)
_TOO_LONG = re.compile(r"^(?:\s*<returncode>-?\d+</returncode>)?\s*(?:<warning>)?\s*"
                       r"The output of your last command was too long")


def _feedback(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """Harness feedback at the start of an observation (see `FEEDBACK_HEAD`)."""
    head = text[:FEEDBACK_HEAD]
    if pattern is _TIMEOUT and head.lstrip().startswith("The last command <command>"):
        head = text
    return pattern.search(head)


def _is_feedback(text: str) -> bool:
    return any(_feedback(p, text) for p in (_FORMAT, _TIMEOUT, _TOO_LONG))


_SERVER = re.compile(r"runserver|http\.server|\bserve\b|uvicorn|gunicorn|flask run")
_TOOL_ERRORS = (
    (re.compile(r"(unknown|invalid|unsupported) (tool|function)|tool .{0,40} (not found|does not exist)", re.I),
     "tool:unknown-tool"),
    (re.compile(r"(invalid|malformed) (json|arguments)|missing (required )?(argument|parameter)", re.I),
     "tool:bad-arguments"),
)


def _protocol_findings(trace: Trace, runs: list[_Run]) -> Iterator[_Finding]:
    """Agent-protocol feedback (format errors, timeouts, overlong output), wherever it sits:
    on the calling step's observations or in a following user/tool step (then it is charged
    to the last agent step)."""
    commands = {run.step: run.command for run in runs}
    last_agent: int | None = None
    for step in trace.steps:
        if step.source == "agent":
            last_agent = step.index
        texts = [o.content for o in step.observations]
        if step.source in ("user", "tool") and not step.tool_calls and last_agent is not None:
            texts.append(step.message)
        owner = step.index if step.source == "agent" or last_agent is None else last_agent
        for text in texts:
            yield from _feedback_in(text, owner, commands.get(owner, ""))


def _feedback_in(text: str, step: int, command: str) -> Iterator[_Finding]:
    if match := _feedback(_FORMAT, text):
        sig = "format:no-action" if match.group(1) == "0" else "format:multiple-actions"
        yield _Finding(sig, step, _line_at(text, match.start()))
    if match := _feedback(_TIMEOUT, text):
        command = match.group(1) or command
        family = "server" if _SERVER.search(command) else _family(command) if command else "command"
        yield _Finding(f"timeout:{family}", step, _clip(match.group(0)), command)
    if match := _feedback(_TOO_LONG, text):
        yield _Finding(f"output:too-long:{_output_group(_family(command))}", step, _line_at(text, match.start()),
                       command)


def _output_group(family: str) -> str:
    """Which advice fits an over-long output: reading a file, listing a tree, or running tests."""
    if family in ("cat", "nl", "sed", "head", "tail", "less", "more", "awk", "git show"):
        return "file-view"
    if family in ("ls", "find", "tree", "grep", "rg", "git grep", "git ls-files", "du"):
        return "listing"
    if family in TEST_RUNNERS:
        return "tests"
    return "other"


def _classify(run: _Run, edited: frozenset[str]) -> _Finding | None:
    """The signature of a failed run, or None when it did not fail or failed on purpose.

    `edited` holds the files written before this run, so an exception raised inside one of
    them is recognised as the agent's own regression.
    """
    if not _failed(run) or _feedback(_FORMAT, run.output) or _feedback(_TIMEOUT, run.output):
        return None
    found = _tool_error(run) or _shell_error(run) or _python_error(run, edited) or _runner_error(run)
    found = found or _generic_error(run)
    return replace(found, command=run.command) if found else None


def _failed(run: _Run) -> bool:
    return run.is_error and not _is_false_alarm(run)


def _tool_error(run: _Run) -> _Finding | None:
    """Errors from non-shell tools: protocol errors by kind, anything else per tool."""
    if _is_shell(run.tool, run.command):
        return None
    for pattern, sig in _TOOL_ERRORS:
        if match := pattern.search(run.output):
            return _Finding(sig, run.step, _line_at(run.output, match.start()))
    return _Finding(f"tool-error:{run.family}", run.step, _clip(_first_line(run.output)))


def _is_false_alarm(run: _Run) -> bool:
    """Exit codes that report a result, not a failure (grep no-match, diff differences...)."""
    programs = [_program(words) for words in _simple_commands(run.command)]
    families = {_family_of(p, a) for p, a in programs if p and p not in SETUP_WRAPPERS}
    if run.exit_code in (1, 2) and families and families <= PROBES and "Traceback" not in run.output:
        return True
    if _error_markers(run.output):
        return False
    if run.exit_code == 1 and families & NO_MATCH_PROGRAMS:
        return True
    if run.exit_code == 123 and "xargs" in families and any("grep" in a for _, a in programs):
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


def _shell_error(run: _Run) -> _Finding | None:
    """Errors the shell or a coreutils-style program reports in its own words."""
    out = run.output
    if (match := _NOT_FOUND.search(out)) or run.exit_code == 127 and (match := re.search(r"([\w./+-]+): not found", out)):
        program = match.group(1).rsplit("/", 1)[-1]
        target = "script" if program.endswith((".sh", ".py")) else program
        return _Finding(f"not-found:{target}", run.step, _line_at(out, match.start()))
    if match := re.search(r"No module named '?pytest'?", out):
        sig = "env:system-python" if "/usr/bin/python" in run.command else "not-found:pytest"
        return _Finding(sig, run.step, _line_at(out, match.start()))
    if match := re.search(r"^sed: -e expression.*$", out, re.M):
        return _Finding("sed:bad-expression", run.step, _clip(match.group(0)))
    if match := re.search(r"syntax error near unexpected token|unexpected EOF while looking for matching"
                          r"|here-document at line \d+ delimited by end-of-file", out):
        return _Finding("shell:syntax-error", run.step, _line_at(out, match.start()))
    if match := re.search(r"patch failed|corrupt patch|does not apply|Hunk #\d+ FAILED", out):
        return _Finding("patch:does-not-apply", run.step, _line_at(out, match.start()))
    if "Traceback (most recent call last)" not in out and (match := _NO_FILE.search(out)):
        failing = match.group(1) if match.group(1) else "python script"
        failing = "python script" if re.fullmatch(r"python[\d.]*", failing or "") else failing
        return _Finding(f"missing-file:{failing}", run.step, _line_at(out, match.start()))
    if match := re.search(r"Permission denied", out):
        return _Finding(f"permission:{run.family}", run.step, _line_at(out, match.start()))
    if match := re.search(r"unrecognized arguments|invalid option|unknown option|no such option"
                          r"|^usage: ", out, re.M | re.I):
        return _Finding(f"usage:{run.family}", run.step, _line_at(out, match.start()))
    return None


_EXC_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|NotReady|Configured|Interrupt"
                       r"|DoesNotExist)))(?::\s?(.*))?$")
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+')
_SYNTAX = frozenset({"SyntaxError", "IndentationError", "TabError"})


def _exception(output: str) -> tuple[str, str, str | None, int] | None:
    """The last Python exception in the output: (class, message, innermost frame file, offset).

    Only lines that follow a traceback frame count, so prose that happens to end in
    `Error:` is ignored.
    """
    found = None
    offset = 0
    frame: str | None = None
    since_frame = 99
    for line in output.splitlines(keepends=True):
        if match := _FRAME.match(line):
            frame, since_frame = match.group(1), 0
        elif (match := _EXC_LINE.match(line.rstrip("\r\n"))) and since_frame <= 12:
            found = (match.group(2), match.group(3) or "", frame, offset)
        since_frame += 1
        offset += len(line)
    return found


def _python_error(run: _Run, edited: frozenset[str]) -> _Finding | None:
    """Python exceptions that are mistakes: broken syntax, edits that raise, set-up errors.

    Any other exception is taken to be the bug reproducing or a test failing, which is the
    normal loop, not a pitfall.
    """
    caught = _exception(run.output)
    if caught is None:
        return None
    name, message, frame, offset = caught
    quote = _line_at(run.output, offset)
    if name in _SYNTAX:
        own = frame is None or frame.startswith("<") or _is_scratch(frame) or _runs_file(run.command, frame)
        sig = "script:syntax-error" if own else "edit:syntax-error"
        return _Finding(sig, run.step, quote)
    if sig := _environment_signature(name, message, run):
        return _Finding(sig, run.step, quote)
    if frame and name != "AssertionError" and _matches_edited(frame, edited):
        return _Finding("edit:runtime-error", run.step, quote)
    if name in ("ModuleNotFoundError", "FileNotFoundError", "PermissionError", "MemoryError"):
        return _Finding(f"python:{name}", run.step, quote)
    return None


def _environment_signature(name: str, message: str, run: _Run) -> str | None:
    """Exceptions caused by how the script or runner was set up, whoever raised them."""
    out = run.output
    if name in ("ModuleNotFoundError", "ImportError"):
        if "Failed to import test module" in out or run.family == "runtests.py":
            return "django:bad-test-label"
        if re.search(r"(^|\s)/usr/bin/python", run.command):
            return "env:system-python"
        if re.search(r"apps/registry\.py|INSTALLED_APPS", out):
            return "django:missing-scratch-app"
        return None
    if name in ("ImproperlyConfigured", "AppRegistryNotReady"):
        return "django:settings-not-configured"
    if "explicit app_label" in message:
        return "django:missing-app-label"
    if name == "OperationalError" and "no such table" in message:
        return "django:no-such-table" if "django" in out else "sqlite:no-such-table"
    if name in ("UnicodeEncodeError", "UnicodeDecodeError") and "ascii" in message:
        return "python:UnicodeEncodeError"
    return None


def _runner_error(run: _Run) -> _Finding | None:
    """Test-runner failures that are about invoking the runner, not about the tests."""
    if run.family not in TEST_RUNNERS:
        return None
    out = run.output
    if match := re.search(r"ERROR: (?:file|module) or (?:directory|package) not found|ERROR: file not found", out):
        return _Finding(f"missing-file:{run.family}", run.step, _line_at(out, match.start()))
    if match := re.search(r"errors? during collection|ERROR collecting|collected \d+ items? / \d+ errors?", out):
        return _Finding("tests:collection-error", run.step, _line_at(out, match.start()))
    empty = re.search(r"no tests ran|collected 0 items|\d+ deselected|Ran 0 tests", out)
    if run.exit_code == 5 or empty and "collected 0 items" in empty.group(0):
        quote = _line_at(out, empty.start()) if empty else _clip(_first_line(out))
        return _Finding("tests:none-collected", run.step, quote)
    return None


def _generic_error(run: _Run) -> _Finding | None:
    """A non-zero exit of a non-Python tool that printed an error line."""
    if run.family.startswith("python") or run.family in TEST_RUNNERS | {"shell", "script", "unknown"}:
        return None
    programs = {_program(words)[0].rsplit("/", 1)[-1] for words in _simple_commands(run.command)}
    for match in re.finditer(r"^(?:([\w.+-]+): |(error|fatal): ).*$", run.output, re.M):
        program = match.group(1) or "git"
        if program in programs:
            family = run.family if program == run.family.split()[0] else program
            return _Finding(f"exit:{family}", run.step, _clip(match.group(0)))
    return None


# --------------------------------------------------------------------------------------------
# What the agent edited, ran and submitted


_REDIRECT = re.compile(r"(?<![<>&\d])>>?\s*([\w./@+-]+)")
_WRITES = re.compile(r"""open\([^)]*['"](?:w|a|r\+|wb|w\+)['"]|\.write_text\(|\.writelines?\(|fileinput""")
_PATH_LITERAL = re.compile(r"""['"]((?:\./|/testbed/)?[\w.-]+/[\w./-]*\w\.\w+)['"]""")


_HEREDOC_TO_FILE = re.compile(r"<<-?\s*(['\"]?)(\w+)\1\s*>\s*(?P<file>[\w./-]+\.py)[^\n]*\n(?P<body>.*?)\n\s*\2[ \t]*(?=\n|$)",
                              re.S)


def _edits(runs: list[_Run]) -> list[set[str]]:
    """The files each run wrote, aligned with `runs`.

    Besides shell writes it follows the common indirection of writing a Python script that
    rewrites a source file and running it later: the script's targets count at its run.
    """
    scripts: dict[str, set[str]] = {}
    result = []
    for run in runs:
        if not _is_shell(run.tool, run.command):
            result.append(_tool_targets(run))
            continue
        targets = _shell_targets(run.command)
        for match in _HEREDOC_TO_FILE.finditer(run.command):
            written = _python_writes(match.group("body"))
            if written:
                scripts[_repo_path(match.group("file"))] = written
        if re.search(r"\bpython[\d.]*\s+(-c|-\s*<<|<<)", run.command):
            targets |= _python_writes(run.command)
        if run.family == "python script":
            script = next((w for w in run.command.split() if w.endswith(".py")), "")
            targets |= scripts.get(_repo_path(script), set())
        result.append({_repo_path(t) for t in targets if not t.startswith("/dev/")})
    return result


_EDIT_TOOL = re.compile(r"edit|write|create|replace|patch|insert", re.I)


def _tool_targets(run: _Run) -> set[str]:
    """Files an editor-style tool call wrote (`edit`, `Write`, `str_replace_editor` ...)."""
    if not _EDIT_TOOL.search(run.tool) or run.is_error:
        return set()
    try:
        value: Any = json.loads(run.arguments)
    except json.JSONDecodeError:
        return set()
    if not isinstance(value, dict) or value.get("command") in ("view", "read"):
        return set()
    paths = (value.get(key) for key in ("path", "file_path", "filename", "file", "target_file"))
    return {_repo_path(p) for p in paths if isinstance(p, str) and p} or {"<patch>"}


def _python_writes(code: str) -> set[str]:
    return set(_PATH_LITERAL.findall(code)) if _WRITES.search(code) else set()


def _shell_targets(command: str) -> set[str]:
    """Files a shell command writes: sed -i, perl -i, redirections, tee, cp/mv, patch."""
    targets: set[str] = set()
    opener_only = _HEREDOC.sub(lambda m: m.group(0).split("\n", 1)[0], command)
    for words in _simple_commands(command):
        program, args = _program(words)
        base = program.rsplit("/", 1)[-1]
        if base in ("sed", "perl") and any(a.startswith(("-i", "-pi")) for a in args):
            targets.update(a.strip("'\"") for a in args[1:] if _looks_like_path(a))
        elif base == "tee":
            targets.update(a for a in args if _looks_like_path(a))
        elif base in ("cp", "mv") and args and _looks_like_path(args[-1]):
            targets.add(args[-1])
        elif base in ("patch", "ed") or (base == "git" and args[:1] == ["apply"]):
            targets.add("<patch>")
    targets.update(m.group(1) for m in _REDIRECT.finditer(opener_only) if _looks_like_path(m.group(1)))
    return targets


def _looks_like_path(word: str) -> bool:
    word = word.strip("'\"")
    return bool(re.fullmatch(r"[\w./@+-]*\w\.\w+|[\w.@+-]+/[\w./@+-]+", word)) and not word.startswith("-")


def _repo_path(path: str) -> str:
    path = path.strip("'\"")
    path = re.sub(r"^(\./)+", "", path)
    return re.sub(r"^/(testbed|workspace|repo|app|src)/", "", path)


def _is_scratch(path: str) -> bool:
    path = _repo_path(path)
    return (path.startswith("/tmp") or "/" not in path or bool(SCRATCH_NAME.search(path))
            or bool(re.search(r"(^|/)(reproduc|repro|debug|scratch|tmp|temp)\w*/", path)))


def _is_source_edit(targets: set[str]) -> bool:
    return any(t == "<patch>" or not _is_scratch(t) for t in targets)


def _matches_edited(frame: str, edited: frozenset[str]) -> bool:
    frame = _repo_path(frame)
    return any(e != "<patch>" and not _is_scratch(e) and (frame == e or frame.endswith("/" + e)) for e in edited)


def _runs_file(command: str, frame: str) -> bool:
    """Is `frame` the script the command runs with Python (so its syntax is the agent's own)?"""
    name = _repo_path(frame)
    scripts = re.findall(r"\bpython[\d.]*\s+(?:-\w+\s+)*([\w./-]+\.py)\b", command)
    return any(_repo_path(w) == name or name.endswith("/" + _repo_path(w)) for w in scripts)


def _is_submit(run: _Run) -> bool:
    return any(marker in run.command for marker in SUBMIT_MARKERS) or run.tool.lower() in SUBMIT_TOOLS


def _submission(trace: Trace, runs: list[_Run]) -> str | None:
    """The final patch text when the trace shows it (submit output or a `submission` field)."""
    for run in reversed(runs):
        if _is_submit(run) and "diff --git" in run.output:
            return run.output
    for key in ("submission", "patch", "model_patch"):
        value = trace.extra.get(key)
        if isinstance(value, str) and "diff --git" in value:
            return value
    return None


# --------------------------------------------------------------------------------------------
# Pitfall lessons, with the command that recovered


def _pitfall_lessons(trace: Trace, runs: list[_Run], findings: list[_Finding]) -> list[Lesson]:
    """One lesson per signature: up to `MAX_OCCURRENCES` failures plus the first recovery.

    A recovery is recorded as an extra evidence item whose steps are `(failing, recovering)`
    and whose quote is the recovering command, so the corpus pass can count what worked.
    """
    by_signature: dict[str, list[_Finding]] = {}
    for found in sorted(findings, key=lambda f: (f.step, f.signature, f.quote)):
        by_signature.setdefault(found.signature.replace(" ", "-"), []).append(found)
    lessons = []
    for signature, found in by_signature.items():
        evidence = []
        for item in _dedupe(found)[:MAX_OCCURRENCES]:
            evidence.append(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=(item.step,), quote=item.quote))
        recovery = next((r for r in (_recovery(f, runs) for f in found) if r is not None), None)
        if recovery is not None:
            failed_at, run = recovery
            evidence.append(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=(failed_at, run.step),
                                     quote=_clip(_first_line(run.command))))
        lessons.append(_lesson(signature, evidence))
    return lessons


def _dedupe(found: list[_Finding]) -> list[_Finding]:
    seen: set[tuple[int, str]] = set()
    kept = []
    for item in found:
        if (item.step, item.quote) not in seen:
            seen.add((item.step, item.quote))
            kept.append(item)
    return kept


def _recovery(found: _Finding, runs: list[_Run]) -> tuple[int, _Run] | None:
    """The command that fixed a failure: the first later command (within `RECOVERY_WINDOW`)
    that worked and touched the same paths or labels (or, with none, was the same family),
    provided it differs in shape from the failing one; a plain retry is not a recovery."""
    if found.signature.startswith("format:") or not found.command:
        return None
    family, targets, shape = _family(found.command), _targets(found.command), _shape(found.command)
    later = [r for r in runs if r.step > found.step and not _is_submit(r)][:RECOVERY_WINDOW]
    for run in later:
        if _failed(run) or _is_feedback(run.output):
            continue
        related = bool(_targets(run.command) & targets) or (run.family == family and not targets)
        if related and _role(run.command) == _role(found.command):
            return (found.step, run) if _shape(run.command) != shape else None
    return None


def _role(command: str) -> str:
    """What a command is for, so a recovery is a different way of doing the same job."""
    family = _family(command)
    if family in TEST_RUNNERS:
        return "test"
    if _shell_targets(command):
        return "edit"
    if family.startswith("python"):
        return "python"
    if family in ("cat", "nl", "sed", "head", "tail", "less", "awk", "git show", "grep", "rg", "git grep",
                  "ls", "find", "tree"):
        return "read"
    if family in ("rm", "rmdir"):
        return "delete"
    return family


def _targets(command: str) -> set[str]:
    """Paths and dotted test labels a command operates on, plus their last names without
    extension, so `tests/app/test_x.py` and the label `app.test_x` meet on `test_x`."""
    words = re.findall(r"[\w./:@+-]+", _HEREDOC.sub("", command))
    paths = {_repo_path(w).split("::")[0] for w in words
             if ("/" in w or re.fullmatch(r"\w+(\.\w+)+", w)) and not w.startswith("-") and len(w) > 3}
    stems = {re.sub(r"\.(py|pyx|txt|cfg|toml|json|rst|sh)$", "", p).replace("/", ".").rsplit(".", 1)[-1] for p in paths}
    return paths | {s for s in stems if len(s) > 3 and s not in ("tests", "test", "__init__", "testbed")}


# --------------------------------------------------------------------------------------------
# Behaviours around the edits


@dataclass(frozen=True)
class _Behaviour:
    """Whether a run showed a behaviour, and the steps and quote that show it (or its absence)."""

    signature: str
    shown: bool
    steps: tuple[int, ...]
    quote: str


def _behaviour_lessons(trace: Trace, runs: list[_Run], edits: list[set[str]]) -> list[Lesson]:
    """Behaviour evidence per the module docstring: shown, or omitted, depending on outcome.

    Every behaviour is judged on every trace (a trace with no commands shows none), which
    is what lets `select_offline` rebuild the shown/omitted counts for both outcomes.
    """
    lessons = []
    for item in _behaviours(trace, runs, edits):
        wanted = _wording(item.signature)["polarity"] == "do"
        if trace.outcome == "success":
            report = item.shown == wanted
        elif trace.outcome == "failure":
            report = item.shown != wanted
        else:
            report = item.shown
        if report:
            evidence = Evidence(trace_id=trace.id, outcome=trace.outcome, steps=item.steps, quote=item.quote)
            lessons.append(_lesson(item.signature, [evidence]))
    return lessons


def _behaviours(trace: Trace, runs: list[_Run], edits: list[set[str]]) -> Iterator[_Behaviour]:
    """Judge each behaviour. Without a detected source edit, "after the last edit" means the
    whole run and "before the first edit" means before submitting."""
    submit_i = next((i for i, r in enumerate(runs) if _is_submit(r)), len(runs))
    source_edits = [i for i, targets in enumerate(edits) if _is_source_edit(targets)]
    first_i = source_edits[0] if source_edits else submit_i
    last_i = source_edits[-1] if source_edits else -1
    anchor = runs[first_i] if source_edits else None
    before = [r for r in runs[:first_i] if _is_scratch_run(r)]
    yield _judged("behaviour:reproduce-first", before[:1], anchor, first=True)
    after = runs[last_i + 1:submit_i]
    anchor = runs[last_i] if source_edits else None
    tests = [r for r in after if r.family in TEST_RUNNERS and _targets(r.command)]
    passing = tests[-1:] if tests and not _failed(tests[-1]) else []
    yield _judged("behaviour:tests-after-edit", passing, anchor)
    scripts = [r for r in after if _is_scratch_run(r) and not _failed(r)]
    yield _judged("behaviour:rerun-repro-after-edit", scripts[-1:], anchor)
    reviews = [r for r in after if r.family in ("git diff", "git status") and not _is_submit(r)]
    yield _judged("behaviour:review-diff", reviews[-1:], anchor)
    submit = runs[submit_i] if submit_i < len(runs) else None
    churn = [runs[i] for i in source_edits[EDIT_CHURN_LIMIT:EDIT_CHURN_LIMIT + 1]]
    yield _judged("behaviour:edit-churn", churn, submit)
    yield from _patch_behaviours(trace, runs, submit)


def _judged(signature: str, shown_by: list[_Run], anchor: _Run | None, first: bool = False) -> _Behaviour:
    """A behaviour shown by `shown_by[0]` (if any), located relative to the edit `anchor`."""
    if shown_by:
        run = shown_by[0]
        steps = (run.step, anchor.step) if first and anchor else (anchor.step, run.step) if anchor else (run.step,)
        return _Behaviour(signature, True, tuple(sorted(set(steps))), _clip(_first_line(run.command)))
    if anchor is None:
        return _Behaviour(signature, False, (), "")
    return _Behaviour(signature, False, (anchor.step,), _clip(_first_line(anchor.command)))


def _is_scratch_run(run: _Run) -> bool:
    """A run of the agent's own Python: a scratch script, `python -c`, or Python on stdin."""
    if run.family in ("python -c", "python"):
        return True
    if run.family != "python script":
        return False
    script = next((w for w in run.command.split() if w.endswith(".py")), "")
    return _is_scratch(script) or "/" not in _repo_path(script)


def _patch_behaviours(trace: Trace, runs: list[_Run], submit: _Run | None) -> Iterator[_Behaviour]:
    """Judge the submitted patch: scratch files added to it, and fixes spread over files."""
    patch = _submission(trace, runs) or ""
    headers = list(re.finditer(r"^diff --git a/(\S+) b/\S+$", patch, re.M))
    added = [m for m in headers if re.match(r"\n(new file mode|--- /dev/null)", patch[m.end():m.end() + 20])]
    scratch = [m for m in added if _is_scratch(m.group(1))]
    source = [m for m in headers if _is_library_file(m.group(1))]
    steps = (submit.step,) if submit else ()
    for signature, shown in (("behaviour:scratch-in-patch", scratch[:1]), ("behaviour:patch-spread", source[1:2])):
        if shown:
            yield _Behaviour(signature, True, steps, _clip(shown[0].group(0)))
        else:
            yield _Behaviour(signature, False, steps, _clip(_first_line(submit.command)) if submit else "")


def _is_library_file(path: str) -> bool:
    """A non-test source file of the project (what a fix normally changes)."""
    return (path.endswith((".py", ".pyx", ".c", ".js", ".ts", ".go", ".rs", ".java", ".rb"))
            and not _is_scratch(path) and not re.search(r"(^|/)(tests?|testing)/|(^|/)test_|_test\.|conftest", path)
            and path.rsplit("/", 1)[-1] not in ("setup.py", "conftest.py"))


# --------------------------------------------------------------------------------------------
# Wording from the catalogue


@cache
def _catalogue() -> tuple[dict[str, str], ...]:
    """The rule catalogue, `data/offline_rules.toml`: ordered entries, first match wins."""
    text = resources.files("trace2skill").joinpath("data", "offline_rules.toml").read_text(encoding="utf-8")
    return tuple(tomllib.loads(text)["rule"])


def _wording(signature: str) -> dict[str, str]:
    """Title, rule, when, kind, polarity and subject for a signature; a pure function of it."""
    entry = next(e for e in _catalogue() if fnmatchcase(signature, e["match"]))
    prefix, _, rest = signature.partition(":")
    target, _, detail = rest.partition(":")
    fields = {"signature": signature, "prefix": prefix, "target": target or prefix, "detail": detail or target}
    text = {key: _fill(entry[key], fields) for key in ("title", "rule", "when")}
    return {**text, "kind": entry["kind"], "polarity": entry["polarity"],
            "subject": _fill(entry.get("subject", "{target}"), fields)}


def _fill(template: str, fields: dict[str, str]) -> str:
    """Replace only the known placeholders, so rule texts may show Python dicts in braces."""
    return re.sub(r"\{(signature|prefix|target|detail)\}", lambda m: fields[m.group(1)], template).strip()


def _lesson(signature: str, evidence: Iterable[Evidence]) -> Lesson:
    return Lesson.create(signature=signature, evidence=tuple(evidence), **_wording(signature))


# --------------------------------------------------------------------------------------------
# The corpus pass


def _judge_pitfall(lesson: Lesson) -> Lesson | None:
    if lesson.support < MIN_PITFALL_SUPPORT:
        return None
    recoveries = {e.trace_id: e.quote for e in lesson.evidence if len(e.steps) == 2}
    shapes = Counter(_shape(q) for q in recoveries.values())
    if not shapes:
        return lesson
    shape, count = min(shapes.items(), key=lambda kv: (-kv[1], kv[0]))
    if count < MIN_RECOVERY_COUNT or count * RECOVERY_SHARE < lesson.support:
        return lesson
    return _restate(lesson, f"In {count} of the {lesson.support} runs that hit this, `{shape}` was the command that worked next.")


def _shape(command: str) -> str:
    """A recovery command reduced to its family and flags, e.g. `pytest -k`, `rm -f`."""
    family = _family(command)
    words = next((w for w in _simple_commands(command) if _program(w)[0] not in SETUP_WRAPPERS), [])
    flags = sorted({a.split("=")[0] for a in _program(words)[1] if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", a)}
                   - set(family.split()))
    if any("::" in a for a in _program(words)[1]):
        flags.append("path::test")
    return " ".join([family, *flags[:3]])


def _judge_behaviour(lesson: Lesson, n_success: int, n_failure: int) -> Lesson | None:
    """Keep a behaviour that discriminates, or a `do` behaviour that is standard practice in
    resolved runs and that some failed runs skipped; state all four counts either way."""
    do = lesson.polarity == "do"
    success_showed = lesson.succeeding_support if do else n_success - lesson.succeeding_support
    failure_showed = n_failure - lesson.failing_support if do else lesson.failing_support
    if not n_success or success_showed + failure_showed < MIN_BEHAVIOUR_SUPPORT:
        return None
    success_share = success_showed / n_success
    in_success = f"{success_showed} of {n_success} resolved runs ({success_share:.0%})"
    if not n_failure:
        return _restate(lesson, f"Done in {in_success}.") if do and success_share >= MAJORITY else None
    failure_share = failure_showed / n_failure
    shares = f"{in_success} and {failure_showed} of {n_failure} failed runs ({failure_share:.0%})"
    if do and success_share > failure_share:
        return _restate(lesson, f"Resolved runs did this more often: {shares}.")
    if not do and failure_share > success_share:
        return _restate(lesson, f"Failed runs did this more often: {shares}.")
    if do and success_share >= MAJORITY and lesson.failing_support:
        skipped = lesson.failing_support
        return _restate(lesson, f"Standard practice, done in {shares}; the evidence cites the {skipped} failed "
                                f"run{'s' if skipped != 1 else ''} that skipped it.")
    return None


def _restate(lesson: Lesson, sentence: str) -> Lesson:
    fields = lesson.model_dump(exclude={"id", "evidence"})
    fields["rule"] = f"{lesson.rule} {sentence}"
    return Lesson.create(evidence=lesson.evidence, **fields)


# --------------------------------------------------------------------------------------------
# Quotes


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "…"


def _first_line(text: str) -> str:
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def _line_at(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return _clip(text[start: end if end != -1 else len(text)])
