"""Shared step assembly for the message-based readers (Responses, Anthropic, Claude Code,
Codex, OTLP).

Every one of those formats writes a tool call in one place and its result somewhere later
(a `function_call_output` item, a `tool_result` block in the next user turn, a tool span).
`StepList` keeps the steps mutable while a trajectory is read, remembers which agent step
owns each call id, and attaches every result to that step, so the frozen `Step`s come out
with calls and observations side by side. A result whose call never appeared is not dropped:
it becomes a `tool` step flagged `extra["unmatched_call"]`, so nothing is silently lost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..types import JSONObject, JSONValue, Observation, Step, StepSource, ToolCall, content_hash


@dataclass
class _Draft:
    source: StepSource
    message: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    extra: JSONObject = field(default_factory=dict)


class StepList:
    """The steps of one trajectory under construction."""

    def __init__(self) -> None:
        self._drafts: list[_Draft] = []
        self._owner: dict[str, int] = {}
        self._answered: set[str] = set()

    def __len__(self) -> int:
        return len(self._drafts)

    def add(
        self,
        source: StepSource,
        message: str = "",
        *,
        reasoning: str | None = None,
        extra: JSONObject | None = None,
    ) -> int:
        """Append a step and return its index."""
        self._drafts.append(_Draft(source, message, reasoning, extra=dict(extra or {})))
        return len(self._drafts) - 1

    def last(self) -> _Draft | None:
        return self._drafts[-1] if self._drafts else None

    def open_agent_step(self, *, after_calls: bool = False, after_message: bool = False) -> int:
        """Index of the agent step new agent output belongs to, starting one when needed.

        The last step is reused when it is an agent step, unless it already has tool calls
        (`after_calls`) or text (`after_message`) and the caller says that starts a new turn.
        """
        last = self.last()
        reuse = (
            last is not None
            and last.source == "agent"
            and not last.observations
            and not (after_calls and last.tool_calls)
            and not (after_message and last.message)
        )
        return len(self._drafts) - 1 if reuse else self.add("agent")

    def append_text(self, index: int, text: str) -> None:
        if text:
            draft = self._drafts[index]
            draft.message = f"{draft.message}\n\n{text}" if draft.message else text

    def append_reasoning(self, index: int, text: str) -> None:
        if text:
            draft = self._drafts[index]
            draft.reasoning = f"{draft.reasoning}\n\n{text}" if draft.reasoning else text

    def add_call(self, index: int, call: ToolCall) -> None:
        self._drafts[index].tool_calls.append(call)
        if call.id:
            self._owner[call.id] = index

    def knows_call(self, call_id: str | None) -> bool:
        return call_id is not None and call_id in self._owner

    def has_result(self, call_id: str | None) -> bool:
        return call_id is not None and call_id in self._answered

    def attach(self, observation: Observation, *, extra: JSONObject | None = None) -> bool:
        """Join a tool result to the step that made the call.

        Returns False when no step made that call; the result then becomes a `tool` step
        flagged `unmatched_call` (and carrying `extra`), so it is kept, not lost.
        """
        call_id = observation.call_id
        if call_id is not None:
            self._answered.add(call_id)
        owner = self._owner.get(call_id) if call_id is not None else None
        if owner is not None:
            self._drafts[owner].observations.append(observation)
            return True
        index = self.add("tool", extra={"unmatched_call": True, **(extra or {})})
        self._drafts[index].observations.append(observation)
        return False

    def attach_to_step(self, index: int, observation: Observation) -> None:
        self._drafts[index].observations.append(observation)
        if observation.call_id is not None:
            self._answered.add(observation.call_id)

    def set_extra(self, index: int, key: str, value: JSONValue) -> None:
        self._drafts[index].extra[key] = value

    def first_message(self, source: StepSource = "user") -> str:
        """Text of the first non-empty step from `source` not flagged as injected meta text."""
        for draft in self._drafts:
            if draft.source == source and draft.message and not draft.extra.get("meta"):
                return draft.message
        return ""

    def build(self) -> tuple[Step, ...]:
        """Freeze the drafts; empty agent steps (no text, calls or results) are dropped."""
        kept = [d for d in self._drafts if not _is_empty_agent(d)]
        return tuple(
            Step(
                index=i,
                source=d.source,
                message=d.message,
                reasoning=d.reasoning,
                tool_calls=tuple(d.tool_calls),
                observations=tuple(d.observations),
                extra=d.extra,
            )
            for i, d in enumerate(kept)
        )


def _is_empty_agent(draft: _Draft) -> bool:
    return (
        draft.source == "agent"
        and not draft.message
        and draft.reasoning is None
        and not draft.tool_calls
        and not draft.observations
        and not draft.extra
    )


_MAX_DEPTH = 64
"""Content nested deeper than this is not flattened (it is hostile, not a message)."""


def text_of(content: JSONValue, _depth: int = 0) -> str:
    """Flatten a message content value (string, list of parts, part) to plain text.

    Text parts keep their text; images and files become a short bracketed marker, so a
    reader of the trajectory still sees that something was there.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if _depth > _MAX_DEPTH:
        return "[deeply nested content]"
    if isinstance(content, list):
        return "\n".join(t for t in (text_of(part, _depth + 1) for part in content) if t)
    if isinstance(content, dict):
        for key in ("text", "content", "output", "value"):
            value = content.get(key)
            if isinstance(value, (str, list)):
                return text_of(value, _depth + 1)
        kind = content.get("type")
        if isinstance(kind, str) and kind:
            return f"[{kind}]"
        return json.dumps(content, ensure_ascii=False, sort_keys=True)
    return str(content)


def arguments_text(value: JSONValue) -> str:
    """Tool arguments as a string: kept verbatim when already text, JSON otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def string_id(value: JSONValue) -> str | None:
    """An id from a non-empty string or an integer (not a bool); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value):
        return str(value)
    return None


def derived_id(format_name: str, steps: tuple[Step, ...]) -> str:
    """A content-derived trace id for formats whose files carry none."""
    return f"{format_name}-{content_hash([s.model_dump(mode='json') for s in steps])}"


def as_int(value: JSONValue) -> int | None:
    """An int from an int, an integral float or a decimal string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def kind_of(value: JSONValue) -> str:
    """The JSON type name of a value, for skip reasons."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    for py_type, name in names.items():
        if isinstance(value, py_type):
            return name
    return "number" if isinstance(value, (int, float)) else type(value).__name__


_ERROR_PHRASES = ("traceback (most recent call last)", "command not found", "no such file or directory", "permission denied")
_ERROR_LINE = r"^[\s>*\[]*(?:[A-Za-z_][\w.]*(?:Error|Exception)|error|fatal)\]?(?:\[[^\]\n]*\])?:\s"
_IS_ERROR = r"[\"']?is_error[\"']?\s*[:=]\s*true\b"
_STATUS_ERROR = r"[\"']?status[\"']?\s*[:=]\s*[\"']?(?:error|failed|failure)\b"
_ERROR_WORDS = re.compile(
    "|".join([*(re.escape(phrase) for phrase in _ERROR_PHRASES), _ERROR_LINE, _IS_ERROR, _STATUS_ERROR]),
    re.MULTILINE | re.IGNORECASE,
)
"""What a failed result says (see `looks_like_error`)."""
_ERROR_PARTS = tuple((words, re.compile(pattern, re.MULTILINE | re.IGNORECASE)) for words, pattern in (
    (("error", "exception", "fatal"), _ERROR_LINE), (("is_error",), _IS_ERROR), (("status",), _STATUS_ERROR)))
"""`_ERROR_WORDS` but its phrases, one alternative at a time, each with the words (lower case)
every match of it holds: on ASCII text an alternative is tried only where its words occur in
the lower-cased text, since a case-insensitive alternation tries every position of the text
(this halves the gate's time on real-formats' tool results)."""
_EXIT_WORDS = re.compile(
    r"\b(?:exit(?:ed with)?|return)[ _]?(?:code|status)\b[\s:=]*(-?\d+)",
    re.IGNORECASE,
)


def exit_code_in(text: str) -> int | None:
    """The exit status a tool result states in words (`Exit code: 1`, `exit status 2`,
    `Process exited with code 0`, `[Command finished with exit code 1]`, `returncode=1`) in
    its first or last three lines, or None. Only the head and tail are read, where tools
    report the status, so a file listing that mentions an exit code mid-way is not taken."""
    if not isinstance(text, str):
        return None
    for line in head_and_tail(text.strip()):
        if line.isascii() and "exit" not in (lower := line.lower()) and "return" not in lower:
            continue  # every match holds one of the two words (a search tries every position)
        match = _EXIT_WORDS.search(line)
        if match:
            return int(match.group(1))
    return None


def head_and_tail(text: str, chunk: int = 1024) -> list[str]:
    """The first three and last three of `text.splitlines()` when it has more than six, else
    all of them, without splitting a long text whole: the lines are taken from its first and
    last `chunk` characters when each holds four lines or more (three whole ones, whatever
    line break ends them), and from the whole text otherwise."""
    if len(text) > 2 * chunk:
        head, tail = text[:chunk].splitlines(), text[-chunk:].splitlines()
        if len(head) > 3 and len(tail) > 3:
            return head[:3] + tail[-3:]
    lines = text.splitlines()
    return lines[:3] + lines[-3:] if len(lines) > 6 else lines


def reports_json_error(text: str) -> bool:
    """The result is a JSON object with a non-empty `error` field (how many APIs and tools report failure)."""
    head = text.lstrip()
    if not head.startswith("{"):
        return False
    try:
        value = json.loads(head)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("error") not in (None, False, "", [], {})


def looks_like_error(text: str) -> bool:
    """Whether a tool result's text says it failed, in any case.

    One rule for every reader (formats that flag errors still pass their text through it):
    a Python traceback; a line opening with `SomethingError:`, `SomethingException:`,
    `Error:` or `fatal:` (`[ERROR]:` too); a non-zero `exit code` / `exit status` /
    `return code`; `is_error: true`; `status: error|failed`; a JSON object with a non-empty
    `error` field; `command not found`, `No such file or directory`, `Permission denied`.
    Deliberately about the result's own words, so a result that merely quotes a file with
    the word "error" in it mid-line is not flagged. Stable signature: other readers call it.
    """
    if not isinstance(text, str) or not text:
        return False
    if reports_json_error(text):
        return True
    code = exit_code_in(text)
    if code is not None and code != 0:
        return True
    if not text.isascii():  # `lower()` may change length or map a non-ASCII letter to an ASCII one
        return bool(_ERROR_WORDS.search(text))
    lower = text.lower()
    if any(phrase in lower for phrase in _ERROR_PHRASES):
        return True
    return any(any(word in lower for word in words) and pattern.search(text) for words, pattern in _ERROR_PARTS)
