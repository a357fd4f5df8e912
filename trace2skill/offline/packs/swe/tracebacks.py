"""Python exceptions that are mistakes rather than the bug reproducing.

A traceback is the normal result of running a reproduction or a failing test, so most are
not pitfalls. These are: broken syntax (in the agent's own script or in an edited file), an
exception raised inside a file the agent edited earlier in the run (its own regression), and
exceptions caused by how the script or runner was set up (system Python, Django settings,
ASCII locale). Only lines right after a traceback frame count as the exception, so prose that
happens to end in `Error:` is ignored.
"""

from __future__ import annotations

import re

from ... import quotes
from ...runs import Run, Verdict
from .scratch import is_scratch, matches_edited, runs_file

_EXC_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|NotReady|Configured|Interrupt"
                       r"|DoesNotExist)))(?::\s?(.*))?$")
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+')
_SYNTAX = frozenset({"SyntaxError", "IndentationError", "TabError"})
_FRAME_REACH = 12
"""Lines after a traceback frame within which an exception line belongs to that traceback."""
_REPORTED = frozenset({"ModuleNotFoundError", "FileNotFoundError", "PermissionError", "MemoryError"})


def python_error(run: Run, edited: frozenset[str]) -> Verdict | None:
    """The signature and exception line of a Python exception that is a mistake, else None.

    `edited` holds the files written before this run.
    """
    caught = _exception(run.output)
    if caught is None:
        return None
    name, message, frame, offset = caught
    line = quotes.line_at(run.output, offset)
    if name in _SYNTAX:
        own = frame is None or frame.startswith("<") or is_scratch(frame) or runs_file(run.command, frame)
        return ("script:syntax-error" if own else "edit:syntax-error"), line
    if signature := _environment_signature(name, message, run):
        return signature, line
    if frame and name != "AssertionError" and matches_edited(frame, edited):
        return "edit:runtime-error", line
    if name in _REPORTED:
        return f"python:{name}", line
    return None


def _exception(output: str) -> tuple[str, str, str | None, int] | None:
    """The last Python exception in the output: (class, message, innermost frame file, offset)."""
    found = None
    offset = 0
    frame: str | None = None
    since_frame = 99
    for line in output.splitlines(keepends=True):
        if match := _FRAME.match(line):
            frame, since_frame = match.group(1), 0
        elif (match := _EXC_LINE.match(line.rstrip("\r\n"))) and since_frame <= _FRAME_REACH:
            found = (match.group(2), match.group(3) or "", frame, offset)
        since_frame += 1
        offset += len(line)
    return found


def _environment_signature(name: str, message: str, run: Run) -> str | None:
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
