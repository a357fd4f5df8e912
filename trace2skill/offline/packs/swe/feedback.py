"""Harness feedback: the agent protocol telling the agent off, wherever it is recorded.

Rejected responses ("found 2 actions"), timeouts and overlong output are reported by the
harness, not by the command, and formats put that text either on the calling step's
observation or in a following user/tool step. Each becomes a pitfall finding charged to
the agent step it answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ....types import Trace
from ... import quotes
from ...runs import Finding, Run
from ...shell import TEST_RUNNERS, family

FEEDBACK_HEAD = 400
"""Harness feedback opens the observation; searching only the head keeps program output that
merely mentions such phrases (a grep through the harness's own sources) from matching."""
_FORMAT = re.compile(r"^\s*(?:Please )?(?:always )?(?:provide|contain)s? EXACTLY ONE (?:action|bash code block)"
                     r".{0,80}?found (\d+)", re.I | re.S)
_TIMEOUT = re.compile(r"^\s*(?:The last command <command>(.*?)</command> (?P<notice>timed out[^\n]*)"
                      r"|(?:error:\s*)?(?:the )?(?:command|execution|tool call) timed out)", re.I | re.S)
_TOO_LONG = re.compile(r"^(?:\s*<returncode>-?\d+</returncode>)?\s*(?:<warning>)?\s*"
                       r"(?P<notice>The output of your last command was too long)")
_SERVER = re.compile(r"runserver|http\.server|\bserve\b|uvicorn|gunicorn|flask run")


def _feedback(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """Harness feedback at the start of an observation (see `FEEDBACK_HEAD`)."""
    head = text[:FEEDBACK_HEAD]
    if pattern is _TIMEOUT and head.lstrip().startswith("The last command <command>"):
        head = text
    return pattern.search(head)


def is_feedback(text: str) -> bool:
    return any(_feedback(p, text) for p in (_FORMAT, _TIMEOUT, _TOO_LONG))


def is_rejection(text: str) -> bool:
    """The harness rejected or killed the command, so its exit status says nothing."""
    return bool(_feedback(_FORMAT, text) or _feedback(_TIMEOUT, text))


def protocol_findings(trace: Trace, runs: list[Run]) -> Iterator[Finding]:
    """Agent-protocol feedback (format errors, timeouts, overlong output), wherever it sits:
    on the calling step's observations or in a following user/tool step (then it is charged
    to the last agent step)."""
    commands = {run.step: run.command for run in runs}
    messages = {step.index: step.message for step in trace.steps if step.source == "agent"}
    last_agent: int | None = None
    for step in trace.steps:
        if step.source == "agent":
            last_agent = step.index
        texts = [o.content for o in step.observations]
        if step.source in ("user", "tool") and not step.tool_calls and last_agent is not None:
            texts.append(step.message)
        owner = step.index if step.source == "agent" or last_agent is None else last_agent
        for text in texts:
            yield from _feedback_in(text, owner, commands.get(owner, ""), messages.get(owner, ""))


def _feedback_in(text: str, step: int, command: str, message: str) -> Iterator[Finding]:
    if match := _feedback(_FORMAT, text):
        sig = "format:no-action" if match.group(1) == "0" else "format:multiple-actions"
        yield Finding(sig, step, quotes.joined(quotes.sent_commands(message), quotes.line_at(text, match.start())))
    if match := _feedback(_TIMEOUT, text):
        command = match.group(1) or command
        kind = "server" if _SERVER.search(command) else family(command) if command else "command"
        notice = match.group("notice") or quotes.line_at(text, match.start())
        yield Finding(f"timeout:{kind}", step, quotes.failure(command, notice), command)
    if match := _feedback(_TOO_LONG, text):
        notice = quotes.line_at(text, match.start("notice"))
        yield Finding(f"output:too-long:{_output_group(family(command))}", step, quotes.failure(command, notice),
                      command)


def _output_group(command_family: str) -> str:
    """Which advice fits an over-long output: reading a file, listing a tree, or running tests."""
    if command_family in ("cat", "nl", "sed", "head", "tail", "less", "more", "awk", "git show"):
        return "file-view"
    if command_family in ("ls", "find", "tree", "grep", "rg", "git grep", "git ls-files", "du"):
        return "listing"
    if command_family in TEST_RUNNERS:
        return "tests"
    return "other"
