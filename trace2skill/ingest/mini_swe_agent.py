"""mini-swe-agent `.traj.json` trajectories: 1.x text (`trajectory_format: "mini-swe-agent-1"`)
and 2.x (`"mini-swe-agent-1.1"`, `info.mini_version` 2.x), in its tool-call and text modes.

2.x (read by `_read_v2`, see its docstring) is told apart by `info.mini_version` 2.x or by
what only 2.x writes: `tool` role messages, assistant `tool_calls`, `extra.actions`, an
`exit` message. Everything below describes 1.x.

mini-swe-agent is bash-only: each assistant message holds a THOUGHT and one fenced ```bash
block, and the next user message is what the environment answered. So each assistant
message becomes one agent step whose single `bash` tool call is the fenced command and whose
observation is the following user message.

Observations:
- `<returncode>N</returncode>` gives `exit_code`. A non-zero exit is an error, except that
  exit status 1 from a predicate command is an answer, not a failure: `grep`/`egrep`/
  `fgrep`/`rg`/`ag` and `test`/`[` with empty output (no match, condition false), and
  `diff`/`cmp` with any output (files differ). The command judged is the last one of a
  `|`, `&&`, `||` or `;` chain, since that one sets the exit status. On the SWE-bench corpus
  this turns 288 "grep found nothing" results into non-errors and keeps real failures.
- The format-error feedback ("Please always provide EXACTLY ONE action ...") and the
  "The last command <command>...</command> timed out" message are environment observations
  with `is_error=True`; no command ran for a format error, so that step has no tool call.
- The final user message after `COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` is the submitted diff.

The trace id is `instance_id` (else the file name without `.traj.json`), so it joins with
`results_summary.json` and SWE-bench reports. The outcome stays `unknown` here: the label
lives in the harness results, joined later by `trace2skill.ingest.labels`. `info.submission` and the
exit status go to `extra`; the huge raw provider responses in `messages[].extra` are not
kept, only their reasoning text (as `Step.reasoning`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, as_int, kind_of, text_of
from .base import Document, Sample, read_each

NAME = "mini_swe_agent"
_RETURNCODE = re.compile(r"^\s*<returncode>(-?\d+)</returncode>")
_OUTPUT = re.compile(r"<output(?:_head)?>\n?(.*?)</output(?:_head)?>", re.DOTALL)
_PR = re.compile(r"<pr_description>\s*(?:Consider the following PR description:\s*)?(.*?)</pr_description>", re.DOTALL)
_CHAIN = re.compile(r"\|\||&&|\||;")
_FORMAT_ERROR = re.compile(r"\s*Please always provide EXACTLY ONE action")
_TIMEOUT = re.compile(r"^\s*The last command <command>.*?</command> timed out", re.DOTALL)
_PREDICATES_EMPTY = {"grep", "egrep", "fgrep", "rg", "ag", "test", "["}
_PREDICATES_DIFF = {"diff", "cmp"}


def sniff(sample: Sample) -> bool:
    if not isinstance(sample, dict):
        return False
    fmt = sample.get("trajectory_format")
    if isinstance(fmt, str) and fmt.startswith("mini-swe-agent"):
        return True
    info = sample.get("info")
    return isinstance(sample.get("messages"), list) and isinstance(info, dict) and "mini_version" in info


def lines_stand_alone(first: JSONValue) -> bool:
    """Each JSONL line is read on its own, so a large file may be cut into byte ranges (`stream.plan_shards`)."""
    return True


def read(doc: Document) -> Iterator[Trace | Skip]:
    return read_each(doc, _read_one)


def _read_one(doc: Document, value: JSONValue, record: str | None) -> Iterator[Trace | Skip]:
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        yield doc.skip(f"expected an object with a 'messages' list, got {kind_of(value)}", record)
        return
    info = value.get("info") if isinstance(value.get("info"), dict) else {}
    doc.ledger.version = info.get("mini_version") if isinstance(info.get("mini_version"), str) else value.get("trajectory_format")
    if _is_v2(value, info):
        yield from _read_v2(doc, value, info, record)
        return
    actions = _count_v1(doc, value["messages"])
    messages = value["messages"]
    steps: list[JSONObject] = []
    task = ""
    i = 0
    while i < len(messages):
        message = messages[i]
        if not isinstance(message, dict):
            yield doc.skip(f"message {i} is {kind_of(message)}, expected an object", record)
            i += 1
            continue
        role, text = message.get("role"), text_of(message.get("content"))
        if role == "assistant":
            reply = messages[i + 1] if i + 1 < len(messages) else None
            answered = isinstance(reply, dict) and reply.get("role") == "user"
            steps.append(_agent_step(len(steps), message, text, text_of(reply.get("content")) if answered else None, actions[i]))
            i += 2 if answered else 1
            continue
        source = "system" if role == "system" else "user"
        if source == "user" and not task:
            match = _PR.search(text)
            task = match.group(1).strip() if match else text
        steps.append({"index": len(steps), "source": source, "message": text})
        i += 1
    info = value.get("info") if isinstance(value.get("info"), dict) else {}
    # The steps, their calls and observations are validated in this one call, from their
    # fields: building each model on its own cost as much again.
    yield Trace.model_validate({
        "id": _trace_id(value, doc.path),
        "task": task,
        "agent": _agent_name(info),
        "model": _model_name(info),
        "steps": steps,
        "source": SourceRef(path=doc.path, record=record),
        "format": NAME,
        "extra": _extra(value, info),
    })


def _agent_step(index: int, message: JSONObject, text: str, reply: str | None, actions: list[Block]) -> JSONObject:
    """The fields of one agent `Step` (see `_read_one`)."""
    calls: list[JSONObject] = []
    visible = text
    if len(actions) == 1:
        calls = [{"id": f"call-{index}", "name": "bash", "arguments": actions[0][2]}]
        visible = _without(text, actions).strip()
    observations = [] if reply is None else [_observation(reply, calls[0] if calls else None)]
    extra = {} if len(actions) == 1 else {"actions_found": len(actions)}
    return {"index": index, "source": "agent", "message": visible, "reasoning": _reasoning(message),
            "tool_calls": calls, "observations": observations, "extra": extra}


def _observation(text: str, call: JSONObject | None) -> JSONObject:
    """The fields of the `Observation` of `call` (a `ToolCall`'s fields, if any)."""
    call_id = call["id"] if call else None
    if _FORMAT_ERROR.match(text) or _TIMEOUT.match(text):
        return {"call_id": call_id, "content": text, "is_error": True}
    match = _RETURNCODE.match(text)
    if match is None:
        return {"call_id": call_id, "content": text}
    code = int(match.group(1))
    is_error = code != 0 and not _is_predicate_answer(code, call["arguments"] if call else "", lambda: _OUTPUT.search(text))
    return {"call_id": call_id, "content": text, "exit_code": code, "is_error": is_error}


def _is_predicate_answer(code: int, command: str, output: Callable[[], re.Match[str] | None]) -> bool:
    """Exit status 1 from a predicate is an answer (see the module docstring). `output` finds
    the command's output; it is searched only for a predicate that failed, since the search
    reads the whole result."""
    if code != 1:
        return False
    words = _CHAIN.split(command)[-1].split()
    program = PurePosixPath(words[0]).name if words else ""
    if program == "git" and len(words) > 1 and words[1] == "grep":
        program = "grep"
    if program in _PREDICATES_DIFF:
        return True
    if program not in _PREDICATES_EMPTY:
        return False
    found = output()
    return found is None or not found.group(1).strip()


def _reasoning(message: JSONObject) -> str | None:
    extra = message.get("extra")
    response = extra.get("response") if isinstance(extra, dict) else None
    choices = response.get("choices") if isinstance(response, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        inner = choices[0].get("message")
        if isinstance(inner, dict):
            text = inner.get("reasoning") or inner.get("reasoning_content")
            return text if isinstance(text, str) and text else None
    return None


def _trace_id(value: JSONObject, path: str) -> str:
    instance = value.get("instance_id")
    if isinstance(instance, str) and instance:
        return instance
    name = PurePosixPath(path.replace("\\", "/").rsplit("!", 1)[-1]).name
    for suffix in (".traj.json", ".json", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _agent_name(info: JSONObject) -> str:
    version = info.get("mini_version")
    return f"mini-swe-agent {version}" if isinstance(version, str) else "mini-swe-agent"


def _model_name(info: JSONObject) -> str | None:
    config = info.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    name = model.get("model_name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


def _extra(value: JSONObject, info: JSONObject) -> JSONObject:
    extra: JSONObject = {"trajectory_format": value.get("trajectory_format")}
    for key in ("exit_status", "submission", "model_stats"):
        if key in info:
            extra[key] = info[key]
    return extra


def _count_v1(doc: Document, messages: list[JSONValue]) -> dict[int, list[Block]]:
    """Ledger for 1.x: every message is a record; an assistant message with exactly one
    ```bash block is a call, and the user message after an assistant message its result.
    Returns the ```bash blocks of each assistant message, by message index."""
    found: dict[int, list[Block]] = {}
    calls = results = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        actions = found[i] = fenced_blocks(text_of(message.get("content")), _ACTION)
        reply = messages[i + 1] if i + 1 < len(messages) else None
        calls += len(actions) == 1
        results += isinstance(reply, dict) and reply.get("role") == "user"
        if len(actions) != 1:
            doc.ledger.ignore("assistant messages with no or several ```bash blocks run no command (mini-swe-agent answers with a format error)")
    doc.ledger.saw(records=len(messages), calls=calls, results=results)
    return found


Block = tuple[int, int, str]
"""A fenced command block: where it starts, where it ends, the command."""


@dataclass(frozen=True)
class Fence:
    """How a command block is written: ``` and one of some tags, whitespace up to a newline,
    the command, a newline and ```."""

    pattern: re.Pattern[str]
    openers: tuple[str, ...]


def fence_of(*tags: str) -> Fence:
    r"""The block `r"```(?:TAG|...)\s*\n(.*?)\n```"` (DOTALL) finds, its lazy body written
    out: lines, each newline not followed by ``` (the same first closing fence; the lazy body
    tried the closing fence at every character of every command, more than the rest of the
    reader cost)."""
    alternatives = "|".join(re.escape(tag) for tag in tags)
    pattern = re.compile(rf"```(?:{alternatives})\s*\n([^\n]*(?:\n(?!```)[^\n]*)*)\n```")
    return Fence(pattern, tuple("```" + tag for tag in tags))


def fenced_blocks(text: str, fence: Fence) -> list[Block]:
    """The blocks `finditer` of the fence's expression finds, as (start, end, command): a match
    starts with an opener, so it is tried only where `str.find` sees one (faster than the
    expression engine's own scan for it)."""
    blocks: list[Block] = []
    at = _opener_at(text, 0, fence.openers)
    while at >= 0:
        match = fence.pattern.match(text, at)
        if match is not None:
            blocks.append((at, match.end(), match.group(1)))
        at = _opener_at(text, at + 1 if match is None else match.end(), fence.openers)
    return blocks


def _opener_at(text: str, start: int, openers: tuple[str, ...]) -> int:
    """Where the first of `openers` occurs from `start`, or -1."""
    if len(openers) == 1:
        return text.find(openers[0], start)
    found = [at for at in (text.find(opener, start) for opener in openers) if at >= 0]
    return min(found) if found else -1


_ACTION = fence_of("bash")
"""1.x: a command is the body of a ```bash block."""


# ---------------------------------------------------------------- 2.x

_V2_ACTION = fence_of("mswea_bash_command", "bash")
"""2.x text mode: a command is the body of a ```mswea_bash_command (or ```bash) block."""
_JSON_RETURNCODE = re.compile(r'^\s*\{\s*"returncode":\s*(-?\d+)')


def _is_v2(value: JSONObject, info: JSONObject) -> bool:
    version = info.get("mini_version")
    if isinstance(version, str) and version[:1].isdigit() and int(version.split(".")[0]) >= 2:
        return True
    for message in value["messages"]:
        if isinstance(message, dict) and (
            message.get("role") in ("tool", "exit") or message.get("tool_calls")
            or (isinstance(message.get("extra"), dict) and "actions" in message["extra"])
        ):
            return True
    return False


def _read_v2(doc: Document, value: JSONObject, info: JSONObject, record: str | None) -> Iterator[Trace | Skip]:
    """mini-swe-agent 2.x: OpenAI-style messages plus mini-swe-agent's `extra`.

    Tool-call mode: an assistant message's `tool_calls` (the `bash` tool, `{"command": ...}`)
    are its calls, and each `tool` message (`tool_call_id`, `extra.returncode`,
    `extra.exception_info`) is joined to its call. Text mode: `extra.actions` (else the
    fenced ```mswea_bash_command blocks) are the calls, answered in order by the following
    `user` messages. A result is an error on a non-zero return code (except a predicate's
    answer, as in 1.x), an exception, or an interrupt (`extra.interrupt_type`, format errors
    included); the `exit` message carries the exit status and the submitted patch.
    """
    steps, pending, task = StepList(), [], ""
    for i, message in enumerate(value["messages"]):
        doc.ledger.saw(records=1, **_count_v2(message))
        if not isinstance(message, dict):
            yield doc.skip(f"message {i} is {kind_of(message)}, expected an object", record)
            continue
        role, text = message.get("role"), text_of(message.get("content"))
        extra = message.get("extra") if isinstance(message.get("extra"), dict) else {}
        if role == "assistant":
            pending = _v2_agent_step(steps, message, text, extra)
        elif role == "tool" or (role == "user" and ("returncode" in extra or "interrupt_type" in extra) and steps.last() is not None):
            _v2_result(steps, message, text, extra, pending)
        elif role == "exit":
            steps.add("system", text, extra={"exit_status": extra.get("exit_status")})
        else:
            if role == "user" and not task:
                match = _PR.search(text)
                task = match.group(1).strip() if match else text
            steps.add("system" if role == "system" else "user", text)
    built = steps.build()
    yield Trace(
        id=_trace_id(value, doc.path), task=task, agent=_agent_name(info), model=_model_name(info),
        steps=built, source=SourceRef(path=doc.path, record=record), format=NAME, extra=_extra(value, info),
    )


def _count_v2(message: JSONValue) -> dict[str, int]:
    if not isinstance(message, dict):
        return {"calls": 0, "results": 0}
    extra = message.get("extra") if isinstance(message.get("extra"), dict) else {}
    if message.get("role") == "assistant":
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            return {"calls": len(calls), "results": 0}
        actions = extra.get("actions")
        n = len(actions) if isinstance(actions, list) else len(fenced_blocks(text_of(message.get("content")), _V2_ACTION))
        return {"calls": n, "results": 0}
    answered = message.get("role") == "tool" or (message.get("role") == "user" and ("returncode" in extra or "interrupt_type" in extra))
    return {"calls": 0, "results": int(answered)}


def _v2_agent_step(steps: StepList, message: JSONObject, text: str, extra: JSONObject) -> list[ToolCall]:
    blocks = fenced_blocks(text, _V2_ACTION)
    index = steps.add("agent", _without(text, blocks).strip() if "```" in text else text, reasoning=_reasoning(message))
    calls: list[ToolCall] = []
    raw_calls = message.get("tool_calls")
    if isinstance(raw_calls, list) and raw_calls:
        for j, raw in enumerate(c for c in raw_calls if isinstance(c, dict)):
            function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
            arguments = function.get("arguments")
            command = _command_of(arguments)
            call_id = raw.get("id") if isinstance(raw.get("id"), str) else f"call-{index}-{j}"
            calls.append(ToolCall(id=call_id, name=str(function.get("name") or "bash"),
                                  arguments=command if command is not None else arguments_text(arguments)))
    else:
        actions = extra.get("actions")
        commands = [a.get("command") for a in actions if isinstance(a, dict)] if isinstance(actions, list) else [b[2] for b in blocks]
        calls = [ToolCall(id=f"call-{index}-{j}", name="bash", arguments=str(c)) for j, c in enumerate(commands)]
    for call in calls:
        steps.add_call(index, call)
    return calls


def _without(text: str, blocks: list[Block]) -> str:
    """`text` with `blocks` cut out."""
    kept, last = [], 0
    for start, end, _ in blocks:
        kept.append(text[last:start])
        last = end
    return "".join(kept) + text[last:]


def _command_of(arguments: JSONValue) -> str | None:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    command = arguments.get("command") if isinstance(arguments, dict) else None
    return command if isinstance(command, str) else None


def _v2_result(steps: StepList, message: JSONObject, text: str, extra: JSONObject, pending: list[ToolCall]) -> None:
    """Join one result to its call (by `tool_call_id`, else the next unanswered call)."""
    call_id = message.get("tool_call_id") if isinstance(message.get("tool_call_id"), str) else None
    call = next((c for c in pending if c.id == call_id), None) if call_id else None
    if call is None and call_id is None:
        call = next((c for c in pending if not steps.has_result(c.id)), None)
    code = as_int(extra.get("returncode"))
    if code is None:
        match = _RETURNCODE.match(text) or _JSON_RETURNCODE.match(text)
        code = int(match.group(1)) if match else None
    output = extra.get("raw_output") if isinstance(extra.get("raw_output"), str) else None
    answer = code == 1 and call is not None and _is_predicate_answer(
        1, call.arguments, lambda: _OUTPUT.search(f"<output>{output}</output>") if output is not None else _OUTPUT.search(text))
    failed = (code not in (None, 0) and not answer) or bool(extra.get("exception_info")) or "interrupt_type" in extra
    observation = Observation(call_id=call.id if call else call_id, content=text, exit_code=code, is_error=failed)
    if call is not None or call_id is not None:
        steps.attach(observation)
    else:
        steps.attach_to_step(len(steps) - 1, observation)
