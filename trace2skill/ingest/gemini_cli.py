"""Gemini CLI sessions, in the two shapes the CLI writes.

1. The chat history (`/chat save` checkpoints, exported trajectories): the Gemini API's own
   `Content[]`, a list of `{role: "user" | "model", parts: [...]}`. Model parts are `text`
   (with `thought: true` for thinking), `functionCall {id, name, args}`; user parts are `text`
   and `functionResponse {id, name, response: {output} | {error}}` (an `error` key, or words
   such as `Error:`, flag an error). Calls and responses pair by `id`, else by name in order.
2. The automatic session record (`~/.gemini/tmp/<project>/chats/session-*.json`,
   `chatRecordingService.ts`): `{sessionId, projectHash, startTime, lastUpdated, messages}`,
   where a `gemini` message carries `toolCalls [{id, name, args, result, status,
   resultDisplay}]` (status `error` or `cancelled` flags an error) and `thoughts`; `user`
   messages are the prompts; `info` / `warning` notices are ignored by rule, `error` messages
   become system steps.

Outcome: the CLI records none, so it is `unknown`.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, derived_id, kind_of, looks_like_error, string_id, text_of
from .base import Document, Ledger, Sample

NAME = "gemini_cli"


def _is_content(value: JSONValue) -> bool:
    return isinstance(value, dict) and value.get("role") in ("user", "model") and isinstance(value.get("parts"), list)


def _is_record(value: JSONValue) -> bool:
    return isinstance(value, dict) and isinstance(value.get("messages"), list) and "sessionId" in value and "projectHash" in value


def _is_prompt_log(value: JSONValue) -> bool:
    first = value[0] if isinstance(value, list) and value else None
    return isinstance(first, dict) and isinstance(first.get("message"), str) and isinstance(first.get("messageId"), int) and "sessionId" in first


def sniff(sample: Sample) -> bool:
    if isinstance(sample, list):
        return bool(sample) and (_is_content(sample[0]) or _is_prompt_log(sample))
    return _is_record(sample)


def read(doc: Document) -> Iterator[Trace | Skip]:
    value = doc.value() if doc.kind == "json" else None
    if isinstance(value, list) and value and _is_content(value[0]):
        steps = _from_history(doc.ledger, value)
        doc.ledger.version = "chat history (Content[])"
        yield from _trace(doc, steps, None, {})
    elif _is_prompt_log(value):
        doc.ledger.saw(records=len(value))
        doc.ledger.ignore("logs.json repeats the sessions' user prompts (the CLI's input history)", len(value))
    elif _is_record(value):
        doc.ledger.version = "session record"
        yield from _trace(doc, _from_record(doc.ledger, value["messages"]), string_id(value.get("sessionId")), value)
    else:
        yield doc.skip(f"expected a Gemini CLI history or session record, got {kind_of(value)}")


def _trace(doc: Document, steps: StepList, session: str | None, record: JSONObject) -> Iterator[Trace | Skip]:
    built = steps.build()
    if not built:
        yield doc.skip("session has no messages")
        return
    extra = {k: record[k] for k in ("projectHash", "startTime", "lastUpdated", "summary") if isinstance(record.get(k), str)}
    yield Trace(
        id=session or derived_id(NAME, built),
        task=steps.first_message("user"),
        agent="Gemini CLI",
        model=next((m.get("model") for m in record.get("messages") or [] if isinstance(m, dict) and isinstance(m.get("model"), str)), None),
        steps=built,
        source=SourceRef(path=doc.path),
        format=NAME,
        extra=extra,
    )


def _from_history(ledger: Ledger, contents: list[JSONValue]) -> StepList:
    steps = StepList()
    pending: list[ToolCall] = []
    for number, content in enumerate(contents):
        ledger.saw(records=1)
        if not _is_content(content):
            ledger.drop("history item is not a {role, parts} content")
            continue
        if content["role"] == "model":
            index = steps.add("agent")
            for part in content["parts"]:
                _model_part(ledger, steps, index, part, pending, number)
            continue
        for part in content["parts"]:
            response = part.get("functionResponse") if isinstance(part, dict) else None
            if isinstance(response, dict):
                ledger.saw(results=1)
                steps.attach(_observation(response, pending))
            elif text_of(part):
                steps.add("user", text_of(part))
    return steps


def _model_part(ledger: Ledger, steps: StepList, index: int, part: JSONValue, pending: list[ToolCall], number: int) -> None:
    call = part.get("functionCall") if isinstance(part, dict) else None
    if isinstance(call, dict):
        ledger.saw(calls=1)
        made = ToolCall(id=string_id(call.get("id")) or f"call-{number}-{len(pending)}", name=str(call.get("name") or "tool"),
                        arguments=arguments_text(call.get("args")))
        steps.add_call(index, made)
        pending.append(made)
    elif isinstance(part, dict) and part.get("thought") is True:
        steps.append_reasoning(index, text_of(part.get("text")))
    elif isinstance(part, dict) and set(part) <= {"thoughtSignature"}:
        return
    else:
        steps.append_text(index, text_of(part))


def _observation(response: JSONObject, pending: list[ToolCall]) -> Observation:
    """A function response, paired by id, else with the oldest open call of that name."""
    call_id = string_id(response.get("id"))
    match = next((c for c in pending if c.id == call_id), None) if call_id else None
    if match is None and call_id is None:
        match = next((c for c in pending if c.name == response.get("name")), None)
    if match is not None:
        pending.remove(match)
        call_id = match.id
    body = response.get("response") if isinstance(response.get("response"), dict) else {}
    failed = "error" in body
    content = text_of(body.get("error") if failed else body.get("output", body.get("content"))) or arguments_text(body)
    return Observation(call_id=call_id, content=content, is_error=failed or looks_like_error(content))


def _from_record(ledger: Ledger, messages: list[JSONValue]) -> StepList:
    steps = StepList()
    for message in messages:
        ledger.saw(records=1)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "user":
            steps.add("user", text_of(message.get("content")))
        elif kind == "gemini":
            _gemini_message(ledger, steps, message)
        elif kind == "error":
            steps.add("system", text_of(message.get("content")), extra={"error": True})
        elif kind in ("info", "warning"):
            ledger.ignore("info and warning notices are CLI messages to the user, not part of the conversation")
        else:
            ledger.drop(f"message of unknown type {kind!r}")
    return steps


def _gemini_message(ledger: Ledger, steps: StepList, message: JSONObject) -> None:
    thoughts = [t for t in message.get("thoughts") or [] if isinstance(t, dict)]
    reasoning = "\n\n".join(f"{t.get('subject', '')}: {t.get('description', '')}".strip(": ") for t in thoughts)
    index = steps.add("agent", text_of(message.get("content")), reasoning=reasoning or None)
    for call in message.get("toolCalls") or []:
        ledger.saw(calls=1)
        if not isinstance(call, dict):
            ledger.drop("tool call is not an object", calls=1)
            continue
        call_id = string_id(call.get("id")) or f"{message.get('id')}-{call.get('name')}"
        steps.add_call(index, ToolCall(id=call_id, name=str(call.get("name") or "tool"), arguments=arguments_text(call.get("args"))))
        if call.get("result") is None and call.get("resultDisplay") is None:
            continue
        ledger.saw(results=1)
        content = _record_result(call.get("result")) or text_of(call.get("resultDisplay"))
        steps.attach(Observation(call_id=call_id, content=content,
                                 is_error=call.get("status") in ("error", "cancelled") or looks_like_error(content)))


def _record_result(result: JSONValue) -> str:
    """Text of a recorded tool result (a `PartListUnion`, usually one functionResponse part)."""
    parts = result if isinstance(result, list) else [result]
    texts = []
    for part in parts:
        response = part.get("functionResponse") if isinstance(part, dict) else None
        if isinstance(response, dict):
            body = response.get("response") if isinstance(response.get("response"), dict) else {}
            texts.append(text_of(body.get("error", body.get("output"))) or arguments_text(body))
        else:
            texts.append(text_of(part))
    return "\n".join(t for t in texts if t)
