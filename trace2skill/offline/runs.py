"""The records the analyst works on: runs (a command and what came back) and findings.

Formats disagree on where a result sits (on the calling step, or on a later tool or user
step) and on how a command is spelled (raw shell text, JSON with a `command` field, an argv
list). `read_runs` settles both once, so the rest of the analyst sees one shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..types import ToolCall, Trace
from .shell import family

SUBMIT_TOOLS = frozenset({"submit", "finish", "mark_task_complete", "task_complete", "attempt_completion"})
_COMMAND_KEYS = ("command", "cmd", "keystrokes", "script", "code", "input", "commands")


@dataclass(frozen=True)
class Run:
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
class Finding:
    """One failure: its signature, where it happened, the evidence quote, and the command
    (empty when nothing ran, e.g. a rejected response), which recovery matching needs."""

    signature: str
    step: int
    quote: str
    command: str = ""
    tool: str = ""


Verdict = tuple[str, str]
"""What a classifier says about a failed run: its signature and the line of output that shows it."""


def read_runs(trace: Trace) -> list[Run]:
    """Pair every tool call with its result, by call id when present, else by position.

    Results may sit on the calling step or on the following tool/user steps (formats differ);
    a result nobody claims is kept with an empty command so its errors are still seen.
    """
    runs: list[Run] = []
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
            command = command_text(call)
            content = observation.content
            exit_code = observation.exit_code if observation.exit_code is not None else _embedded_exit(content)
            runs.append(Run(index, call.name, command, family(command, call.name), content, exit_code,
                            observation.is_error or bool(exit_code), call.arguments))
    return runs


def command_text(call: ToolCall) -> str:
    """The shell text of a call: raw for shell tools, the `command`-like field of JSON args."""
    text = call.arguments.strip()
    if not text.startswith(("{", "[")):
        return text
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(value, dict):
        for key in _COMMAND_KEYS:
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


def is_submit(run: Run) -> bool:
    """A call that hands the work in (`submit`, `finish`, ...); packs know harness-specific forms."""
    return run.tool.lower() in SUBMIT_TOOLS
