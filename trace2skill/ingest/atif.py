"""Reader and writer for ATIF v1.x, Harbor's Agent Trajectory Interchange Format.

Reading accepts one trajectory `{schema_version: "ATIF-v1.x", session_id, agent, steps, ...}`,
a list of them, or JSONL with one per line. Writing (`emit_atif`) produces **JSONL, one
trajectory per line**: a single streamable file, which this reader (and the ingest core's
`.gz` support, when the name ends in `.gz`) reads back.

Mapping to the canonical model. ATIF has no `tool` step source and keeps results on the
agent step that made the calls, so a run of our `tool` steps after an agent step is folded
into that step's `observation.results`; a `tool` step with no agent step before it is written
as a `system` step. What ATIF cannot say (which results came from folded steps, `is_error`,
`exit_code`, call ids we had to invent, argument strings that are not JSON objects, the task,
outcome, reward, format, source and every `extra`) is kept under the `trace2skill` key of
the trajectory's and the steps' `extra`. Everything ATIF *can* say stays in its own fields,
so other ATIF consumers see a normal trajectory.

Round-trip guarantee: for any `Trace` whose `extra` values are JSON values (dict, list, str,
int, finite float, bool, None), `trace_from_atif(trace_to_atif(t)) == t`, field for field,
*including* `source` (it still points at the file the trace was first read from, which is the
provenance users want; the ATIF file's own position is not recorded). Foreign ATIF files
(no `extra.trace2skill`) keep their extra fields in `Step.extra` / `Trace.extra`; their
outcome comes from `extra` or `final_metrics.extra` (`outcome`, `success`, `resolved`,
`passed`, `reward`), and is `unknown` when only a reward is given (the caller's success
threshold decides).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from ..errors import TraceFormatError
from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, Step, ToolCall, Trace
from ._steps import as_int, derived_id, exit_code_in, kind_of, looks_like_error, text_of
from .base import Document, Sample

NAME = "atif"
SCHEMA_VERSION = "ATIF-v1.7"
"""The version written: core fields, `final_metrics.extra` (outcome, reward), the result-level
`extra` of v1.7 (`is_error`, `exit_code`) and the step- and root-level `extra` objects."""
NAMESPACE = "trace2skill"
"""Key under ATIF `extra` that holds what ATIF cannot express."""
NAMESPACE_VERSION = 1

_VERSION = re.compile(r"^(ATIF-)?v?1\.\d+")
_ATIF_SOURCES = ("system", "user", "agent")


def sniff(sample: Sample) -> bool:
    """True for an ATIF trajectory (or a list of them)."""
    if isinstance(sample, list):
        return bool(sample) and sniff(sample[0])
    if not isinstance(sample, dict) or not isinstance(sample.get("steps"), list):
        return False
    version = sample.get("schema_version")
    return isinstance(version, str) and bool(_VERSION.match(version))


def lines_stand_alone(first: JSONValue) -> bool:
    """Each JSONL line is read on its own, so a large file may be cut into byte ranges (`stream.plan_shards`)."""
    return True


def read(doc: Document) -> Iterator[Trace | Skip]:
    """Yield one trajectory per ATIF document, or a `Skip` saying what is wrong with it."""
    if doc.kind == "jsonl":
        for entry in doc.records():
            yield entry if isinstance(entry, Skip) else _convert(doc, entry[1], f"line {entry[0]}")
    else:
        value = doc.value()
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield _convert(doc, item, f"item {i}")
        else:
            yield _convert(doc, value, None)


def _convert(doc: Document, value: JSONValue, where: str | None) -> Trace | Skip:
    if not isinstance(value, dict):
        return doc.skip(f"expected an ATIF trajectory object, got {kind_of(value)}", where)
    version = value.get("schema_version")
    if not (isinstance(version, str) and _VERSION.match(version)):
        return doc.skip(f"not an ATIF trajectory: schema_version {version!r} is not 'ATIF-v1.x'", where)
    if not isinstance(value.get("steps"), list):
        return doc.skip(f"not an ATIF trajectory: 'steps' must be a list, got {kind_of(value.get('steps'))}", where)
    _count(doc, value)
    try:
        return trace_from_atif(value, SourceRef(path=doc.path, record=where))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return doc.skip(f"invalid ATIF trajectory: {_short(error)}", where)


def _count(doc: Document, value: JSONObject) -> None:
    """Ledger: a trajectory's steps are its records, with their calls and results; sidechains
    we wrote under our namespace are read too; embedded sub-agent trajectories are not."""
    doc.ledger.version = value["schema_version"]
    steps = [s for s in value["steps"] if isinstance(s, dict)]
    namespace = value.get("extra", {}).get(NAMESPACE) if isinstance(value.get("extra"), dict) else None
    sidechains = namespace.get("extra", {}).get("sidechains") if isinstance(namespace, dict) and isinstance(namespace.get("extra"), dict) else None
    for side in sidechains if isinstance(sidechains, list) else []:
        steps += [{"tool_calls": s.get("tool_calls"), "observation": {"results": s.get("observations")}}
                  for s in (side.get("steps") if isinstance(side, dict) and isinstance(side.get("steps"), list) else []) if isinstance(s, dict)]
    calls, results = _calls_results(steps)
    doc.ledger.saw(records=len(value["steps"]), calls=calls, results=results)
    embedded = value.get("subagent_trajectories")
    if isinstance(embedded, list) and embedded:
        inner = [s for t in embedded if isinstance(t, dict) and isinstance(t.get("steps"), list) for s in t["steps"] if isinstance(s, dict)]
        calls, results = _calls_results(inner)
        doc.ledger.saw(records=len(inner), calls=calls, results=results)
        doc.ledger.ignore("embedded subagent_trajectories are kept whole in extra, not read as steps", len(inner), calls=calls, results=results)


def _calls_results(steps: list[JSONObject]) -> tuple[int, int]:
    calls = sum(len(s["tool_calls"]) for s in steps if isinstance(s.get("tool_calls"), list))
    observations = [s.get("observation") for s in steps]
    return calls, sum(len(o["results"]) for o in observations if isinstance(o, dict) and isinstance(o.get("results"), list))


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------- writing


def emit_atif(traces: Iterable[Trace], out: Path) -> int:
    """Write traces as ATIF JSONL (gzip when `out` ends in `.gz`), atomically.

    Args:
        traces: trajectories to write, in order.
        out: target file; its folder is created; an existing file is replaced only once
            every trace has been written.

    Returns:
        How many trajectories were written.

    Raises:
        TraceFormatError: a trace holds a value JSON cannot carry (NaN, infinity, an object
            that is not JSON, or nesting too deep to encode); nothing is written then.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    opener = gzip.open if out.name.endswith(".gz") else open
    count = 0
    try:
        with opener(partial, "wt", encoding="utf-8", newline="\n") as handle:
            for trace in traces:
                try:
                    line = json.dumps(trace_to_atif(trace), separators=(",", ":"), allow_nan=False)
                except (ValueError, TypeError, RecursionError) as error:
                    raise TraceFormatError(f"trace {trace.id!r} cannot be written as ATIF: {error}") from error
                handle.write(line + "\n")
                count += 1
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return count


def trace_to_atif(trace: Trace) -> JSONObject:
    """One trace as an ATIF trajectory dict (see the module docstring for the mapping)."""
    steps: list[JSONObject] = []
    for position, step in enumerate(trace.steps):
        if step.source == "tool" and steps and steps[-1]["source"] == "agent":
            _fold_tool_step(steps[-1], step, position)
        else:
            steps.append(_atif_step(step, position, len(steps) + 1))
    for atif_step in steps:
        if not atif_step["extra"][NAMESPACE]:
            del atif_step["extra"]
    name, _, version = (trace.agent or "").rpartition(" ")
    agent: JSONObject = {"name": name or version or "unknown", "version": (version if name else "") or "unknown"}
    if trace.model is not None:
        agent["model_name"] = trace.model
    namespace = {
        "version": NAMESPACE_VERSION,
        "task": trace.task,
        "agent": trace.agent,
        "outcome": trace.outcome,
        "reward": trace.reward,
        "format": trace.format,
        "source": trace.source.model_dump(mode="json"),
        "extra": trace.extra,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "session_id": trace.id,
        "agent": agent,
        "steps": steps,
        "final_metrics": _final_metrics(trace, len(steps)),
        "extra": {NAMESPACE: namespace},
    }


def _final_metrics(trace: Trace, total_steps: int) -> JSONObject:
    """`final_metrics` with the outcome and reward in its `extra`, where ATIF consumers (and
    this reader, for foreign files) look for a run's result; the spec has no field of its own."""
    metrics: JSONObject = {"total_steps": total_steps}
    result = {k: v for k, v in (("outcome", trace.outcome), ("reward", trace.reward)) if v not in (None, "unknown")}
    if result:
        metrics["extra"] = result
    return metrics


def _atif_step(step: Step, position: int, step_id: int) -> JSONObject:
    atif_source = step.source if step.source in _ATIF_SOURCES else "system"
    keep: JSONObject = {}
    out: JSONObject = {"step_id": step_id, "source": atif_source, "message": step.message}
    timestamp = step.extra.get("timestamp")
    if _is_iso(timestamp):
        out["timestamp"] = timestamp
    if atif_source != step.source:
        keep["source"] = step.source
    if step.index != position:
        keep["index"] = step.index
    if step.reasoning is not None:
        if atif_source == "agent":
            out["reasoning_content"] = step.reasoning
        else:
            keep["reasoning"] = step.reasoning
    if step.tool_calls and atif_source == "agent":
        out["tool_calls"], calls_keep = _atif_calls(step, position)
        if any(calls_keep):
            keep["calls"] = calls_keep
    elif step.tool_calls:
        keep["tool_calls"] = [c.model_dump(mode="json") for c in step.tool_calls]
    if step.extra:
        keep["extra"] = step.extra
    out["extra"] = {NAMESPACE: keep}
    _add_results(out, step.observations)
    return out


def _fold_tool_step(target: JSONObject, step: Step, position: int) -> None:
    """Fold a `tool` step into the preceding agent step's observation, remembering it."""
    record: JSONObject = {"results": len(step.observations)}
    if step.index != position:
        record["index"] = step.index
    if step.message:
        record["message"] = step.message
    if step.reasoning is not None:
        record["reasoning"] = step.reasoning
    if step.tool_calls:
        record["tool_calls"] = [c.model_dump(mode="json") for c in step.tool_calls]
    if step.extra:
        record["extra"] = step.extra
    target["extra"][NAMESPACE].setdefault("folded", []).append(record)
    _add_results(target, step.observations)


def _atif_calls(step: Step, position: int) -> tuple[list[JSONObject], list[JSONObject]]:
    taken = {c.id for c in step.tool_calls if c.id is not None}
    calls, keep = [], []
    for j, call in enumerate(step.tool_calls):
        note: JSONObject = {}
        call_id = call.id
        if call_id is None:
            call_id = f"t2s-{position}-{j}"
            while call_id in taken:
                call_id += "'"
            taken.add(call_id)
            note["id"] = None
        arguments = _arguments_object(call.arguments)
        if arguments is None:
            arguments, note["arguments"] = {"input": call.arguments}, call.arguments
        elif json.dumps(arguments, ensure_ascii=False) != call.arguments:
            note["arguments"] = call.arguments
        calls.append({"tool_call_id": call_id, "function_name": call.name, "arguments": arguments})
        keep.append(note)
    return calls, keep


def _add_results(atif_step: JSONObject, observations: Iterable[Observation]) -> None:
    call_ids = {c["tool_call_id"] for c in atif_step.get("tool_calls", ())}
    results = atif_step.setdefault("observation", {"results": []})["results"]
    keep = atif_step["extra"][NAMESPACE].setdefault("results", [{} for _ in results])
    for observation in observations:
        note: JSONObject = {}
        linked = observation.call_id if observation.call_id in call_ids else None
        if linked != observation.call_id:
            note["call_id"] = observation.call_id
        result: JSONObject = {"content": observation.content} if linked is None else {"source_call_id": linked, "content": observation.content}
        flags = {k: v for k, v in (("is_error", observation.is_error or None), ("exit_code", observation.exit_code)) if v is not None}
        if flags:
            result["extra"] = flags
        results.append(result)
        keep.append(note)
    if not results:
        del atif_step["observation"]
    if not any(keep):
        del atif_step["extra"][NAMESPACE]["results"]


def _arguments_object(arguments: str) -> JSONObject | None:
    try:
        value = json.loads(arguments)
        json.dumps(value, allow_nan=False)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_iso(value: JSONValue) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- reading


def trace_from_atif(value: JSONObject, source: SourceRef) -> Trace:
    """Build a `Trace` from one ATIF trajectory dict.

    Args:
        value: the trajectory.
        source: where it was read from; replaced by the recorded original source when the
            trajectory was written by `trace_to_atif`.

    Raises:
        ValueError: the trajectory is malformed (pydantic's `ValidationError` included).
    """
    extra = value.get("extra") if isinstance(value.get("extra"), dict) else {}
    namespace = extra.get(NAMESPACE)
    if namespace is not None:
        if not isinstance(namespace, dict) or namespace.get("version") != NAMESPACE_VERSION:
            raise ValueError(f"extra.{NAMESPACE} is not version {NAMESPACE_VERSION} data: {namespace!r:.80}")
        return _own_trace(value, namespace)
    return _foreign_trace(value, source)


def _steps(value: JSONObject, own: bool) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i, raw in enumerate(value["steps"]):
        if not isinstance(raw, dict):
            raise ValueError(f"steps[{i}] must be an object, got {kind_of(raw)}")
        if raw.get("source") not in _ATIF_SOURCES:
            raise ValueError(f"steps[{i}].source must be one of {_ATIF_SOURCES}, got {raw.get('source')!r}")
        try:
            steps.extend(_expand(raw, len(steps), own))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"steps[{i}]: {_short(error)}") from error
    return tuple(steps)


def _own_trace(value: JSONObject, namespace: JSONObject) -> Trace:
    agent = value.get("agent") if isinstance(value.get("agent"), dict) else {}
    return Trace(
        id=value["session_id"],
        task=namespace["task"],
        agent=namespace["agent"],
        model=agent.get("model_name"),
        steps=_steps(value, own=True),
        outcome=namespace["outcome"],
        reward=namespace["reward"],
        source=SourceRef.model_validate(namespace["source"]),
        format=namespace["format"],
        extra=namespace["extra"],
    )


def _expand(raw: JSONObject, position: int, own: bool) -> list[Step]:
    """One ATIF step as canonical steps: itself, then any `tool` steps folded into it."""
    keep = raw["extra"].get(NAMESPACE, {}) if own and isinstance(raw.get("extra"), dict) else {}
    raw_calls = _list_field(raw, "tool_calls")
    observation = raw.get("observation")
    if observation is not None and not isinstance(observation, dict):
        raise ValueError(f"observation must be an object, got {kind_of(observation)}")
    raw_results = _list_field(observation or {}, "results")
    calls = [_tool_call(c, n) for c, n in zip(raw_calls, _padded(keep.get("calls"), len(raw_calls)), strict=True)]
    notes = _padded(keep.get("results"), len(raw_results))
    observations = [_observation(r, n, own) for r, n in zip(raw_results, notes, strict=True)]
    folded = keep.get("folded", [])
    own_count = len(observations) - sum(f["results"] for f in folded)
    if own_count < 0:
        raise ValueError("records more folded results than it holds")
    first = Step(
        index=keep.get("index", position),
        source=keep.get("source", raw["source"]),
        message=text_of(raw.get("message")),
        reasoning=keep["reasoning"] if "reasoning" in keep else raw.get("reasoning_content"),
        tool_calls=[ToolCall.model_validate(c) for c in keep["tool_calls"]] if "tool_calls" in keep else calls,
        observations=observations[:own_count],
        extra=keep.get("extra", {}) if own else _foreign_step_extra(raw),
    )
    expanded, offset = [first], own_count
    for record in folded:
        expanded.append(
            Step(
                index=record.get("index", position + len(expanded)),
                source="tool",
                message=record.get("message", ""),
                reasoning=record.get("reasoning"),
                tool_calls=[ToolCall.model_validate(c) for c in record.get("tool_calls", [])],
                observations=observations[offset : offset + record["results"]],
                extra=record.get("extra", {}),
            )
        )
        offset += record["results"]
    return expanded


def _list_field(holder: JSONObject, key: str) -> list[JSONValue]:
    value = holder.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list, got {kind_of(value)}")
    return value


def _padded(notes: JSONValue, count: int) -> list[JSONObject]:
    """Exactly `count` notes: the recorded ones, then empty ones."""
    notes = [n if isinstance(n, dict) else {} for n in notes[:count]] if isinstance(notes, list) else []
    return notes + [{} for _ in range(count - len(notes))]


def _tool_call(raw: JSONValue, note: JSONObject) -> ToolCall:
    if not isinstance(raw, dict):
        raise ValueError(f"tool call must be an object, got {kind_of(raw)}")
    arguments = raw.get("arguments")
    text = (
        arguments
        if isinstance(arguments, str)
        else json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    )
    return ToolCall(
        id=note["id"] if "id" in note else raw.get("tool_call_id"),
        name=raw.get("function_name"),
        arguments=note.get("arguments", text),
    )


def _observation(raw: JSONValue, note: JSONObject, own: bool) -> Observation:
    if not isinstance(raw, dict):
        raise ValueError(f"observation result must be an object, got {kind_of(raw)}")
    content = raw.get("content")
    if content is None and raw.get("subagent_trajectory_ref"):
        content = f"[subagent trajectory: {json.dumps(raw['subagent_trajectory_ref'], ensure_ascii=False)}]"
    extra = raw.get("extra") if isinstance(raw.get("extra"), dict) else {}
    if own:
        return Observation(
            call_id=note["call_id"] if "call_id" in note else raw.get("source_call_id"),
            content=text_of(content),
            is_error=extra.get("is_error", note.get("is_error", False)) is True,
            exit_code=as_int(extra.get("exit_code", note.get("exit_code"))),
        )
    text = text_of(content)
    code = as_int(extra.get("exit_code", extra.get("return_code")))
    flagged = any(k in extra for k in ("is_error", "error", "exit_code", "return_code"))
    if code is None and not flagged:
        code = exit_code_in(text)
    failed = extra.get("is_error") is True or extra.get("error") not in (None, False, "") or code not in (None, 0)
    failed = failed or (not flagged and looks_like_error(text))
    return Observation(call_id=raw.get("source_call_id"), content=text, is_error=failed, exit_code=code)


def _foreign_step_extra(raw: JSONObject) -> JSONObject:
    keys = ("timestamp", "model_name", "reasoning_effort", "metrics", "llm_call_count", "is_copied_context")
    extra = {k: raw[k] for k in keys if raw.get(k) is not None}
    if raw.get("extra"):
        extra["atif_extra"] = raw["extra"]
    return extra


def _foreign_trace(value: JSONObject, source: SourceRef) -> Trace:
    agent = value.get("agent") if isinstance(value.get("agent"), dict) else {}
    name, version = agent.get("name"), agent.get("version")
    label = " ".join(p for p in (name, version) if isinstance(p, str) and p and p != "unknown") or None
    steps = _steps(value, own=False)
    outcome, reward = _foreign_outcome(value)
    extra = {"schema_version": value["schema_version"]}
    for key in ("final_metrics", "notes", "continued_trajectory_ref", "extra", "subagent_trajectories"):
        if value.get(key):
            extra["atif_extra" if key == "extra" else key] = value[key]
    trace_id = value.get("session_id") or value.get("trajectory_id")
    return Trace(
        id=trace_id if isinstance(trace_id, str) and trace_id else derived_id(NAME, steps),
        task=next((s.message for s in steps if s.source == "user" and s.message), ""),
        agent=label,
        model=agent.get("model_name") if isinstance(agent.get("model_name"), str) else None,
        steps=steps,
        outcome=outcome,
        reward=reward,
        source=source,
        format=NAME,
        extra=extra,
    )


_SUCCESS_WORDS = {"success", "succeeded", "pass", "passed", "resolved", "true"}
_FAILURE_WORDS = {"failure", "failed", "fail", "unresolved", "error", "false"}


def _foreign_outcome(value: JSONObject) -> tuple[str, float | None]:
    """Outcome and reward from a foreign trajectory's `extra` or `final_metrics.extra`."""
    metrics = value.get("final_metrics") if isinstance(value.get("final_metrics"), dict) else {}
    places = [p for p in (value.get("extra"), metrics.get("extra")) if isinstance(p, dict)]
    outcome, reward = "unknown", None
    for place in places:
        for key in ("outcome", "result", "status"):
            word = str(place.get(key, "")).lower()
            if outcome == "unknown" and word in _SUCCESS_WORDS | _FAILURE_WORDS:
                outcome = "success" if word in _SUCCESS_WORDS else "failure"
        for key in ("success", "resolved", "passed"):
            if outcome == "unknown" and isinstance(place.get(key), bool):
                outcome = "success" if place[key] else "failure"
        raw = place.get("reward", place.get("score"))
        if reward is None and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            reward = float(raw)
    return outcome, reward
