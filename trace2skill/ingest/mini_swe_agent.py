"""mini-swe-agent `.traj.json` trajectories (`trajectory_format: "mini-swe-agent-1"`, `-1.1`).

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
lives in the harness results, joined later by `trace2skill.labels`. `info.submission` and the
exit status go to `extra`; the huge raw provider responses in `messages[].extra` are not
kept, only their reasoning text (as `Step.reasoning`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from ..types import Observation, Skip, SourceRef, Step, ToolCall, Trace
from ._steps import kind_of, text_of
from .base import Document, read_each

NAME = "mini_swe_agent"
_ACTION = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)
_RETURNCODE = re.compile(r"^\s*<returncode>(-?\d+)</returncode>")
_OUTPUT = re.compile(r"<output(?:_head)?>\n?(.*?)</output(?:_head)?>", re.DOTALL)
_PR = re.compile(r"<pr_description>\s*(?:Consider the following PR description:\s*)?(.*?)</pr_description>", re.DOTALL)
_CHAIN = re.compile(r"\|\||&&|\||;")
_FORMAT_ERROR = "Please always provide EXACTLY ONE action"
_TIMEOUT = re.compile(r"^\s*The last command <command>.*?</command> timed out", re.DOTALL)
_PREDICATES_EMPTY = {"grep", "egrep", "fgrep", "rg", "ag", "test", "["}
_PREDICATES_DIFF = {"diff", "cmp"}


def sniff(sample: Any) -> bool:
    if not isinstance(sample, dict):
        return False
    fmt = sample.get("trajectory_format")
    if isinstance(fmt, str) and fmt.startswith("mini-swe-agent"):
        return True
    info = sample.get("info")
    return isinstance(sample.get("messages"), list) and isinstance(info, dict) and "mini_version" in info


def read(doc: Document) -> Iterator[Trace | Skip]:
    return read_each(doc, _read_one)


def _read_one(doc: Document, value: Any, record: str | None) -> Iterator[Trace | Skip]:
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        yield doc.skip(f"expected an object with a 'messages' list, got {kind_of(value)}", record)
        return
    messages = value["messages"]
    steps: list[Step] = []
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
            steps.append(_agent_step(len(steps), message, text, text_of(reply.get("content")) if answered else None))
            i += 2 if answered else 1
            continue
        source = "system" if role == "system" else "user"
        if source == "user" and not task:
            match = _PR.search(text)
            task = match.group(1).strip() if match else text
        steps.append(Step(index=len(steps), source=source, message=text))
        i += 1
    info = value.get("info") if isinstance(value.get("info"), dict) else {}
    yield Trace(
        id=_trace_id(value, doc.path),
        task=task,
        agent=_agent_name(info),
        model=_model_name(info),
        steps=tuple(steps),
        source=SourceRef(path=doc.path, record=record),
        format=NAME,
        extra=_extra(value, info),
    )


def _agent_step(index: int, message: dict[str, Any], text: str, reply: str | None) -> Step:
    actions = _ACTION.findall(text)
    calls: tuple[ToolCall, ...] = ()
    visible = text
    if len(actions) == 1:
        calls = (ToolCall(id=f"call-{index}", name="bash", arguments=actions[0]),)
        visible = _ACTION.sub("", text, count=1).strip()
    observations = () if reply is None else (_observation(reply, calls[0] if calls else None),)
    extra = {} if len(actions) == 1 else {"actions_found": len(actions)}
    return Step(
        index=index,
        source="agent",
        message=visible,
        reasoning=_reasoning(message),
        tool_calls=calls,
        observations=observations,
        extra=extra,
    )


def _observation(text: str, call: ToolCall | None) -> Observation:
    call_id = call.id if call else None
    if text.lstrip().startswith(_FORMAT_ERROR) or _TIMEOUT.match(text):
        return Observation(call_id=call_id, content=text, is_error=True)
    match = _RETURNCODE.match(text)
    if match is None:
        return Observation(call_id=call_id, content=text)
    code = int(match.group(1))
    output = _OUTPUT.search(text)
    is_error = code != 0 and not _is_predicate_answer(code, call.arguments if call else "", output)
    return Observation(call_id=call_id, content=text, exit_code=code, is_error=is_error)


def _is_predicate_answer(code: int, command: str, output: re.Match[str] | None) -> bool:
    if code != 1:
        return False
    words = _CHAIN.split(command)[-1].split()
    program = PurePosixPath(words[0]).name if words else ""
    if program == "git" and len(words) > 1 and words[1] == "grep":
        program = "grep"
    empty = output is None or not output.group(1).strip()
    return (program in _PREDICATES_EMPTY and empty) or program in _PREDICATES_DIFF


def _reasoning(message: dict[str, Any]) -> str | None:
    extra = message.get("extra")
    response = extra.get("response") if isinstance(extra, dict) else None
    choices = response.get("choices") if isinstance(response, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        inner = choices[0].get("message")
        if isinstance(inner, dict):
            text = inner.get("reasoning") or inner.get("reasoning_content")
            return text if isinstance(text, str) and text else None
    return None


def _trace_id(value: dict[str, Any], path: str) -> str:
    instance = value.get("instance_id")
    if isinstance(instance, str) and instance:
        return instance
    name = PurePosixPath(path.replace("\\", "/").rsplit("!", 1)[-1]).name
    for suffix in (".traj.json", ".json", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _agent_name(info: dict[str, Any]) -> str:
    version = info.get("mini_version")
    return f"mini-swe-agent {version}" if isinstance(version, str) else "mini-swe-agent"


def _model_name(info: dict[str, Any]) -> str | None:
    config = info.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    name = model.get("model_name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


def _extra(value: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {"trajectory_format": value.get("trajectory_format")}
    for key in ("exit_status", "submission", "model_stats"):
        if key in info:
            extra[key] = info[key]
    return extra
