"""OpenHands (V0 runtime) event streams and evaluation `output.jsonl` records.

OpenHands records a run as a list of events (`openhands/events/serialization/event.py`): an
*action* (`{id, source, action, args, tool_call_metadata?, ...}`) or an *observation*
(`{id, source, observation, content, extras, cause}`), where `cause` is the id of the action
it answers. Two files carry them:
- an event stream: the JSON list itself (`trajs/*.json`, a session's `event_cache/*.json`);
- an evaluation record (`output.jsonl`, one per line): `{instance_id, instruction, history,
  metadata, test_result, error}`, with the events in `history`.

Mapping: every agent action other than `message` and `system` is a tool call (`run`, `read`,
`edit`, `think`, `finish`, `browse`, ...), named after the function the model called
(`tool_call_metadata.function_name`) or the action, with the model's own argument string
when the model response is kept, else the action's `args`; calls made in one model response
share a step. An observation whose `cause` is such a call is its result; an `error`
observation, a non-zero (or `-1`: timed out) `exit_code`, `success: false`, or a result that
says so in words (`_steps.looks_like_error`) flag an error.
Agent and user `message`s and the `system` prompt become steps. Environment bookkeeping
(`agent_state_changed`, `change_agent_state`, `recall` and its observation, `null`
observations) is ignored by rule and counted in the ledger.

Outcome: an evaluation record is `success`/`failure` when `test_result.report.resolved` is
a boolean (written by OpenHands' SWE-bench evaluation); otherwise, and for event streams,
it is `unknown` (a `report.json` beside the file still labels it through `trace2skill.ingest.labels`).
The V1 SDK (`openhands-sdk`, events with a `kind` discriminator, e.g. the `history` of
OpenHands/benchmarks `output.jsonl`) is read too: `SystemPromptEvent` and `MessageEvent`
become steps, each `ActionEvent` is a tool call (`tool_call_id`, `tool_name`, the model's
`tool_call.arguments`; its `thought` the step text, calls of one `llm_response_id` share a
step), and `ObservationEvent` (`observation.is_error` flags an error), `UserRejectObservation`
and `AgentErrorEvent` (both errors) are its results. Other V1 events (state updates,
condensation, pauses, tokens) are ignored by rule. A folder of one-event-per-file JSON (a V1
conversation's `events/`) is not joined into one trajectory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, as_int, derived_id, exit_code_in, kind_of, looks_like_error, string_id, text_of
from .base import Document, Ledger, Sample

NAME = "openhands"

_NOT_CALLS = ("message", "system")
_IGNORED_ACTIONS = {
    "change_agent_state": "agent state changes are runtime bookkeeping, not agent actions",
    "recall": "recall actions fetch workspace context for the prompt; not an agent tool call",
}
_IGNORED_OBSERVATIONS = {
    "agent_state_changed": "agent state changes are runtime bookkeeping, not agent actions",
    "null": "'null' observations only acknowledge a non-tool event",
    "recall": "recall observations fetch workspace context for the prompt; not a tool result",
}


def _is_event(value: JSONValue) -> bool:
    if not isinstance(value, dict) or "id" not in value or "source" not in value:
        return False
    return "action" in value or "observation" in value or str(value.get("kind", "")).endswith(_V1_KINDS)


def _is_record(value: JSONValue) -> bool:
    history = value.get("history") if isinstance(value, dict) else None
    return isinstance(history, list) and bool(history) and _is_event(history[0]) and ("instance_id" in value or "test_result" in value)


_V1_KINDS = ("Event", "Observation", "Condensation", "CondensationRequest")
_V1_IGNORED = "V1 events without a message, call or result (state updates, condensation, pauses, tokens)"


def sniff(sample: Sample) -> bool:
    if isinstance(sample, list):
        return bool(sample) and _is_event(sample[0])
    return _is_record(sample)


def read(doc: Document) -> Iterator[Trace | Skip]:
    if doc.kind == "jsonl":
        for entry in doc.records():
            if isinstance(entry, Skip):
                doc.ledger.drop("line is not valid JSON")
                yield entry
            else:
                yield from _read_value(doc, entry[1], f"line {entry[0]}")
        return
    yield from _read_value(doc, doc.value(), None)


def _read_value(doc: Document, value: JSONValue, where: str | None) -> Iterator[Trace | Skip]:
    if isinstance(value, list) and value and _is_event(value[0]):
        yield from _trace(doc, value, where, {})
    elif _is_record(value):
        yield from _trace(doc, value["history"], where, value)
    else:
        doc.ledger.drop("not an OpenHands event list or evaluation record")
        yield doc.skip(f"expected an OpenHands event list or evaluation record, got {kind_of(value)}", where)


def _trace(doc: Document, events: list[JSONValue], where: str | None, record: JSONObject) -> Iterator[Trace | Skip]:
    steps = StepList()
    state = _State(doc.ledger)
    for index, event in enumerate(events):
        doc.ledger.saw(records=1)
        if not _is_event(event):
            doc.ledger.drop("event without id, source and action/observation")
            yield doc.skip(f"history item {index} is not an OpenHands event ({kind_of(event)})", where)
        elif isinstance(event.get("kind"), str):  # V1 SDK event; V0 events have no `kind`
            _v1_event(state, steps, event)
        elif "action" in event:
            state.action(steps, event)
        else:
            state.observation(steps, event)
    built = steps.build()
    if not built:
        yield doc.skip("no messages, actions or observations to read", where)
        return
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    if isinstance(metadata.get("git_commit"), str):
        doc.ledger.version = f"evaluation record, OpenHands git {metadata['git_commit'][:10]}"
    elif not doc.ledger.version:
        doc.ledger.version = "V1 SDK events" if any(isinstance(e, dict) and "kind" in e for e in events[:5]) else "V0 events"
    llm = metadata.get("llm_config") if isinstance(metadata.get("llm_config"), dict) else {}
    instruction = record.get("instruction")
    extra: JSONObject = {}
    if isinstance(record.get("instance_id"), str):
        extra["instance_id"] = record["instance_id"]
    if record.get("error"):
        extra["error"] = str(record["error"])[:2000]
    yield Trace(
        id=extra.get("instance_id") or derived_id(NAME, built),
        task=instruction if isinstance(instruction, str) and instruction else steps.first_message("user"),
        agent=f"OpenHands {metadata['agent_class']}" if isinstance(metadata.get("agent_class"), str) else "OpenHands",
        model=llm.get("model") if isinstance(llm.get("model"), str) else state.model,
        steps=built,
        outcome=_outcome(record.get("test_result")),
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


def _outcome(test_result: JSONValue) -> str:
    report = test_result.get("report") if isinstance(test_result, dict) else None
    resolved = report.get("resolved") if isinstance(report, dict) else None
    return "unknown" if not isinstance(resolved, bool) else ("success" if resolved else "failure")


class _State:
    """Which action ids were tool calls, and the model response the last call came from."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.calls: dict[str, str] = {}
        self.last_response: str | None = None
        self.model: str | None = None

    def action(self, steps: StepList, event: JSONObject) -> None:
        action, source = event.get("action"), event.get("source")
        args = event.get("args") if isinstance(event.get("args"), dict) else {}
        if not isinstance(action, str):
            self.ledger.drop("action is not a string")
        elif action == "system":
            steps.add("system", text_of(args.get("content")) or text_of(event.get("message")))
        elif action == "message":
            text = text_of(args.get("content")) or text_of(event.get("message"))
            if source == "agent":
                steps.append_text(steps.open_agent_step(after_calls=True, after_message=True), text)
            else:
                steps.add("user", text)
            self.last_response = None
        elif source == "agent" and action not in _IGNORED_ACTIONS:
            self._call(steps, event, args)
        else:
            self.ledger.ignore(_IGNORED_ACTIONS.get(str(action), f"'{action}' actions from {source} are not agent tool calls"))

    def _call(self, steps: StepList, event: JSONObject, args: JSONObject) -> None:
        self.ledger.saw(calls=1)
        meta = event.get("tool_call_metadata") if isinstance(event.get("tool_call_metadata"), dict) else {}
        response = meta.get("model_response") if isinstance(meta.get("model_response"), dict) else {}
        response_id = response.get("id") if isinstance(response.get("id"), str) else None
        self.model = self.model or (response.get("model") if isinstance(response.get("model"), str) else None)
        same_turn = response_id is not None and response_id == self.last_response
        index = len(steps) - 1 if same_turn else steps.open_agent_step(after_calls=True, after_message=True)
        if not same_turn:
            steps.append_text(index, text_of(args.get("thought")) or _response_text(response))
        call_id = meta.get("tool_call_id") if isinstance(meta.get("tool_call_id"), str) else f"event-{string_id(event.get('id'))}"
        name = meta.get("function_name") if isinstance(meta.get("function_name"), str) else str(event.get("action"))
        arguments = _response_arguments(response, call_id)
        if arguments is None:
            arguments = arguments_text({k: v for k, v in args.items() if k != "thought"})
        steps.add_call(index, ToolCall(id=call_id, name=name, arguments=arguments))
        self.calls[string_id(event.get("id")) or f"event-{len(self.calls)}"] = call_id
        self.last_response = response_id

    def observation(self, steps: StepList, event: JSONObject) -> None:
        kind = str(event.get("observation"))
        call_id = self.calls.get(string_id(event.get("cause")) or "")
        if call_id is None:
            if kind == "error":
                steps.add("system", text_of(event.get("content")) or text_of(event.get("message")), extra={"error": True})
            else:
                self.ledger.ignore(_IGNORED_OBSERVATIONS.get(kind, f"'{kind}' observations that answer no tool call"))
            return
        self.ledger.saw(results=1)
        extras = event.get("extras") if isinstance(event.get("extras"), dict) else {}
        meta = extras.get("metadata") if isinstance(extras.get("metadata"), dict) else {}
        content = text_of(event.get("content")) or text_of(event.get("message"))
        code = as_int(meta.get("exit_code", extras.get("exit_code")))
        code = exit_code_in(content) if code is None else code
        failed = kind == "error" or (code is not None and code != 0) or event.get("success") is False or looks_like_error(content)
        steps.attach(Observation(call_id=call_id, content=content, is_error=failed, exit_code=code))


def _response_text(response: JSONObject) -> str:
    message = _response_message(response)
    return text_of(message.get("content")) if message else ""


def _response_arguments(response: JSONObject, call_id: str) -> str | None:
    """The argument string the model wrote for `call_id`, when the response is kept."""
    message = _response_message(response)
    calls = (message or {}).get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict) and call.get("id") == call_id and isinstance(call.get("function"), dict):
            value = call["function"].get("arguments")
            return value if isinstance(value, str) else json.dumps(value)
    return None


def _response_message(response: JSONObject) -> JSONObject | None:
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict):
        return choices[0]["message"]
    return None


# --- V1 SDK events (`kind` discriminator) ---

def _v1_event(state: _State, steps: StepList, event: JSONObject) -> None:
    kind = event.get("kind")
    if kind == "SystemPromptEvent":
        steps.add("system", text_of(event.get("system_prompt")))
    elif kind == "MessageEvent":
        message = event.get("llm_message") if isinstance(event.get("llm_message"), dict) else {}
        text = text_of(message.get("content"))
        if event.get("source") == "agent" or message.get("role") == "assistant":
            steps.append_text(steps.open_agent_step(after_calls=True, after_message=True), text)
        else:
            steps.add("user", text)
        state.last_response = None
    elif kind == "ActionEvent":
        _v1_action(state, steps, event)
    elif kind in ("ObservationEvent", "UserRejectObservation", "AgentErrorEvent"):
        state.ledger.saw(results=1)
        observation = event.get("observation") if isinstance(event.get("observation"), dict) else {}
        if kind == "ObservationEvent":
            content, flagged = text_of(observation.get("content")), observation.get("is_error") is True
        elif kind == "UserRejectObservation":
            content, flagged = f"Action rejected: {text_of(event.get('rejection_reason'))}", True
        else:
            content, flagged = text_of(event.get("error")), True
        code = as_int(observation.get("exit_code"))
        code = exit_code_in(content) if code is None else code
        steps.attach(Observation(call_id=str(event.get("tool_call_id") or ""), content=content, exit_code=code,
                                 is_error=flagged or (code is not None and code != 0) or looks_like_error(content)))
    else:
        state.ledger.ignore(_V1_IGNORED)


def _v1_action(state: _State, steps: StepList, event: JSONObject) -> None:
    state.ledger.saw(calls=1)
    call = event.get("tool_call") if isinstance(event.get("tool_call"), dict) else {}
    response_id = event.get("llm_response_id") if isinstance(event.get("llm_response_id"), str) else None
    same_turn = response_id is not None and response_id == state.last_response
    index = len(steps) - 1 if same_turn else steps.open_agent_step(after_calls=True, after_message=True)
    if not same_turn:
        steps.append_text(index, text_of(event.get("thought")))
        steps.append_reasoning(index, text_of(event.get("reasoning_content")))
    arguments = call.get("arguments")
    steps.add_call(index, ToolCall(id=str(event.get("tool_call_id") or call.get("id") or ""), name=str(event.get("tool_name") or call.get("name") or "tool"),
                                   arguments=arguments if isinstance(arguments, str) else arguments_text(arguments or event.get("action"))))
    state.last_response = response_id
