"""Cline and Roo Code task folders: `tasks/<id>/api_conversation_history.json` and its side files.

A task folder (`src/core/storage/disk.ts`) holds `api_conversation_history.json` (the
Anthropic `MessageParam[]` sent to the model, each message with `ts`, assistant messages with
`modelInfo {modelId, providerId, mode}`), `ui_messages.json` (what the chat panel showed:
`ClineMessage[]`, `{ts, type: ask | say, ask, say, text}`), `task_metadata.json`
(`files_in_context`, `model_usage`, `environment_history` with `cline_version`) and, in some
versions, `context_history.json` and `settings.json`.

The conversation file is the trajectory. Tool calls come in two forms:
- native tool calling: `tool_use` blocks (`{id, name, input}`) answered by `tool_result`
  blocks (`{tool_use_id, content: "[name for 'arg'] Result:\\n..."}`) in the next user message;
- the XML protocol (older versions, and any model without native tools): the call is XML in
  the assistant text (`<read_file><path>a.py</path></read_file>`) and the result a user text
  block starting `[read_file for 'a.py'] Result:` (`ToolResultUtils.pushToolResult`), paired
  with the open calls in order.
A result is an error when flagged `is_error` or when it carries Cline's own error wording
(`The tool execution failed with the following error`, `The user denied this operation`).
The `<task>` block is the task; `<environment_details>` blocks (the editor state appended to
each user turn) are left out by rule. The side files repeat the conversation for the UI or
hold settings: the ingest core passes over them (`is_side_file`), and the model and Cline
version come from `task_metadata.json` when it sits beside the conversation.

Outcome: Cline records none (`attempt_completion` is the agent's claim, not a check), so it is
`unknown`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, derived_id, kind_of, looks_like_error, string_id, text_of
from .base import Document, Ledger, Sample

NAME = "cline"

CONVERSATION = "api_conversation_history.json"
SIDE_FILES = ("ui_messages.json", "task_metadata.json", "context_history.json", "settings.json")
_TOOLS = (
    "execute_command", "read_file", "write_to_file", "replace_in_file", "search_files", "list_files",
    "list_code_definition_names", "browser_action", "use_mcp_tool", "access_mcp_resource", "ask_followup_question",
    "attempt_completion", "new_task", "plan_mode_respond", "act_mode_respond", "load_mcp_documentation", "web_fetch",
    "web_search", "focus_chain", "condense", "summarize_task", "report_bug", "new_rule", "apply_patch", "use_skill",
    "apply_diff", "insert_content", "search_and_replace", "switch_mode", "codebase_search", "update_todo_list",
    "fetch_instructions", "generate_explanation", "use_subagents",
)
_XML_CALL = re.compile(r"<(" + "|".join(_TOOLS) + r")>(.*?)</\1>", re.S)
_XML_PARAM = re.compile(r"<([a-z_]+)>\n?(.*?)\n?</\1>", re.S)
_RESULT = re.compile(r"^\[([a-z_]+)(?: for [^\]]*)?\] Result:", re.M)
_ERRORS = ("The tool execution failed with the following error", "The user denied this operation")
_ENV = re.compile(r"<environment_details>.*?</environment_details>", re.S)
_ENV_RULE = "environment_details blocks (editor state appended to each user turn) are not conversation"


def _is_cline(value: JSONValue) -> bool:
    if not (isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("role") == "user"):
        return False
    first = value[0].get("content")
    blocks = first if isinstance(first, list) else []
    text = first if isinstance(first, str) else " ".join(b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str))
    return text.lstrip().startswith(("<task>", "<feedback>")) or "<environment_details>" in text


def sniff(sample: Sample) -> bool:
    return _is_cline(sample)


def is_side_file(path: str) -> bool:
    """A Cline task folder's side file, read with (or repeated by) the conversation beside it."""
    file = Path(path)
    return "!" not in path and file.name in SIDE_FILES and (file.parent / CONVERSATION).is_file()


def read(doc: Document) -> Iterator[Trace | Skip]:
    messages = doc.value() if doc.kind == "json" else None
    if not _is_cline(messages):
        yield doc.skip(f"expected a Cline api_conversation_history list, got {kind_of(messages)}")
        return
    steps, task, model = _steps(doc.ledger, messages)
    built = steps.build()
    if not built:
        yield doc.skip("conversation has no messages")
        return
    metadata = _metadata(doc.path)
    usage = [m for m in metadata.get("model_usage") or [] if isinstance(m, dict)]
    versions = [e.get("cline_version") for e in metadata.get("environment_history") or [] if isinstance(e, dict)]
    doc.ledger.version = next((f"Cline {v}" for v in reversed(versions) if isinstance(v, str)), None)
    folder = Path(doc.path).parent.name if Path(doc.path).name == CONVERSATION else None
    yield Trace(
        id=f"cline-{folder}" if folder else derived_id(NAME, built),
        task=task or steps.first_message("user"),
        agent=doc.ledger.version or "Cline",
        model=model or next((u.get("model_id") for u in reversed(usage) if isinstance(u.get("model_id"), str)), None),
        steps=built,
        source=SourceRef(path=doc.path),
        format=NAME,
        extra={"task_folder": folder} if folder else {},
    )


def _metadata(path: str) -> JSONObject:
    side = Path(path).parent / "task_metadata.json"
    if "!" in path or not side.is_file():
        return {}
    try:
        value = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _steps(ledger: Ledger, messages: list[JSONValue]) -> tuple[StepList, str, str | None]:
    steps = StepList()
    pending: list[ToolCall] = []
    task, model = "", None
    for message in messages:
        ledger.saw(records=1)
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            ledger.drop("message without a user or assistant role")
            continue
        blocks = message["content"] if isinstance(message.get("content"), list) else [{"type": "text", "text": text_of(message.get("content"))}]
        if message["role"] == "assistant":
            info = message.get("modelInfo") if isinstance(message.get("modelInfo"), dict) else {}
            model = model or (info.get("modelId") if isinstance(info.get("modelId"), str) else None)
            _assistant(ledger, steps, blocks, pending)
        else:
            found = _user(ledger, steps, blocks, pending)
            task = task or found
    return steps, task, model


def _assistant(ledger: Ledger, steps: StepList, blocks: list[JSONValue], pending: list[ToolCall]) -> None:
    index = steps.add("agent")
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use":
            ledger.saw(calls=1)
            steps.add_call(index, ToolCall(id=string_id(block.get("id")), name=str(block.get("name") or "tool"),
                                           arguments=arguments_text(block.get("input"))))
        elif kind in ("thinking", "redacted_thinking", "reasoning"):
            steps.append_reasoning(index, text_of(block.get("thinking") or block.get("text")))
        elif kind == "text":
            text = block.get("text") if isinstance(block.get("text"), str) else ""
            for call in _XML_CALL.finditer(text):
                ledger.saw(calls=1)
                made = ToolCall(id=f"cline-xml-{ledger.calls}", name=call.group(1),
                                arguments=json.dumps(dict(_XML_PARAM.findall(call.group(2))), ensure_ascii=False))
                steps.add_call(index, made)
                pending.append(made)
            steps.append_text(index, _XML_CALL.sub("", text).strip())
        else:
            steps.append_text(index, text_of(block))


def _user(ledger: Ledger, steps: StepList, blocks: list[JSONValue], pending: list[ToolCall]) -> str:
    """Read one user message; return the task text when it carries the `<task>` block.

    In the XML protocol a result may be a `[tool] Result:` text block followed by its content
    in further blocks (older versions), so text blocks after a result header join that result.
    """
    task, texts = "", []
    results: list[list[str]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            ledger.saw(results=1)
            content = text_of(block.get("content"))
            failed = block.get("is_error") is True or any(e in content[:600] for e in _ERRORS) or looks_like_error(content)
            steps.attach(Observation(call_id=string_id(block.get("tool_use_id")), content=content, is_error=failed))
            continue
        text = text_of(block)
        if _ENV.search(text):
            ledger.ignore(_ENV_RULE)
            text = _ENV.sub("", text).strip()
        if _RESULT.match(text.lstrip()):
            ledger.saw(results=1)
            results.append([text])
        elif text and results and not texts:
            results[-1].append(text)
        elif text:
            found = re.search(r"<task>\n?(.*?)\n?</task>", text, re.S)
            task = task or (found.group(1).strip() if found else "")
            texts.append(text)
    for parts in results:
        _attach_text_result(steps, pending, "\n".join(parts))
    if texts:
        steps.add("user", "\n\n".join(texts))
    return task


def _attach_text_result(steps: StepList, pending: list[ToolCall], text: str) -> None:
    """An XML-protocol result, paired with the oldest open call of that tool (else the oldest)."""
    name = _RESULT.match(text.lstrip()).group(1)  # type: ignore[union-attr]
    call = next((c for c in pending if c.name == name), pending[0] if pending else None)
    if call is not None:
        pending.remove(call)
    steps.attach(Observation(call_id=call.id if call else None, content=text, is_error=any(e in text[:600] for e in _ERRORS) or looks_like_error(text)))
