"""SWE-agent `.traj` files: `{environment, trajectory, history, info, replay_config}`.

`trajectory` is the clean record of the run: one entry per turn with the model's `thought`,
the `action` it issued (a SWE-agent tool command such as `open`, `edit`, `find_file`, or
plain bash), the `observation` and the agent `state`. It becomes one agent step per entry,
preceded by the system prompt and the task taken from `history`. Demonstration messages
(`is_demo`) in `history` are not part of the run and are left out. Files that carry only a
`history` (some demonstrations) are read from it as OpenAI-style messages.

SWE-agent records no exit code, so `is_error` comes from the text (see
`_steps.looks_like_error`), plus SWE-agent's own edit-linter rejection message.
`info.exit_status` is kept in `extra`; it says how the run ended (`submitted`,
`exit_cost`, ...), not whether the fix was right, so the outcome stays `unknown` unless a
results file or labels file says otherwise. The trace id is the file name without `.traj`,
which is the SWE-bench instance id in SWE-agent's own run folders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, Step, ToolCall, Trace
from ._steps import kind_of, looks_like_error, text_of
from .base import Document, Sample, read_each
from .openai_chat import build_steps

NAME = "swe_agent"
_ISSUE = re.compile(r"ISSUE:\s*\n(.*?)\n\s*INSTRUCTIONS:", re.DOTALL)
_LINT_REJECTED = "Your proposed edit has introduced new syntax error"


def sniff(sample: Sample) -> bool:
    if not isinstance(sample, dict):
        return False
    trajectory = sample.get("trajectory")
    if isinstance(trajectory, list) and trajectory:
        first = trajectory[0]
        return isinstance(first, dict) and "action" in first and "observation" in first
    history = sample.get("history")
    return (
        isinstance(history, list)
        and bool(history)
        and isinstance(history[0], dict)
        and ("agent" in history[0] or "message_type" in history[0])
    )


def lines_stand_alone(first: JSONValue) -> bool:
    """Each JSONL line is read on its own, so a large file may be cut into byte ranges (`stream.plan_shards`)."""
    return True


def read(doc: Document) -> Iterator[Trace | Skip]:
    return read_each(doc, _read_one)


def _read_one(doc: Document, value: JSONValue, record: str | None) -> Iterator[Trace | Skip]:
    if not isinstance(value, dict):
        yield doc.skip(f"expected a SWE-agent trajectory object, got {kind_of(value)}", record)
        return
    raw_history = value.get("history") if isinstance(value.get("history"), list) else []
    history = [m for m in raw_history if not (isinstance(m, dict) and m.get("is_demo"))]
    if len(history) < len(raw_history):
        doc.ledger.saw(records=len(raw_history) - len(history))
        doc.ledger.ignore("demonstration messages (is_demo) show the agent an example; not this run", len(raw_history) - len(history))
    trajectory = value.get("trajectory")
    if isinstance(trajectory, list) and trajectory:
        _count_trajectory(doc, history, trajectory)
        steps, problems = _steps_from_trajectory(history, trajectory)
    elif history:
        problems = []
        built = build_steps(history, lambda i, why: problems.append(f"history message {i}: {why}"), doc.ledger)
        steps = list(built.build())
    else:
        yield doc.skip("neither 'trajectory' nor 'history' holds any entries", record)
        return
    for problem in problems:
        yield doc.skip(problem, record)
    info = value.get("info") if isinstance(value.get("info"), dict) else {}
    task_text = next((s.message for s in steps if s.source == "user"), "")
    issue = _ISSUE.search(task_text)
    config = _replay_config(value)
    extra = {k: info[k] for k in ("exit_status", "submission", "model_stats") if k in info}
    if _instance_id(config):
        extra["instance_id"] = _instance_id(config)
    yield Trace(
        id=_trace_id(doc.path, record),
        task=issue.group(1).strip() if issue else task_text,
        agent="swe-agent",
        model=_model_name(config),
        steps=tuple(steps),
        source=SourceRef(path=doc.path, record=record),
        format=NAME,
        extra=extra,
    )


def _steps_from_trajectory(history: list[JSONValue], trajectory: list[JSONValue]) -> tuple[list[Step], list[str]]:
    steps: list[Step] = []
    for source in ("system", "user"):
        text = next((text_of(m.get("content")) for m in history if isinstance(m, dict) and m.get("role") == source), "")
        if text:
            steps.append(Step(index=len(steps), source=source, message=text))
    problems = []
    for n, entry in enumerate(trajectory):
        if not isinstance(entry, dict):
            problems.append(f"trajectory entry {n} is {kind_of(entry)}, expected an object")
            continue
        steps.append(_agent_step(len(steps), entry))
    return steps, problems


def _count_trajectory(doc: Document, history: list[JSONValue], trajectory: list[JSONValue]) -> None:
    """Ledger: each trajectory entry is a record holding one call (its action) and one result;
    the history repeats them as messages, and only its first system and user texts are read."""
    entries = [e for e in trajectory if isinstance(e, dict)]
    calls = sum(bool(text_of(e.get("action")).strip()) for e in entries)
    results = sum(bool(text_of(e.get("observation")) or text_of(e.get("action")).strip()) for e in entries)
    doc.ledger.saw(records=len(trajectory) + len(history), calls=calls, results=results)
    if history:
        doc.ledger.ignore("history messages repeat the trajectory entries (its first system and user texts are read)", len(history))


def _agent_step(index: int, entry: JSONObject) -> Step:
    action = text_of(entry.get("action")).strip()
    observation = text_of(entry.get("observation"))
    calls = (ToolCall(id=f"call-{index}", name=action.split()[0], arguments=action),) if action else ()
    observed = (
        (Observation(call_id=calls[0].id if calls else None, content=observation, is_error=_is_error(observation)),)
        if observation or calls
        else ()
    )
    thought = text_of(entry.get("thought")) or text_of(entry.get("response"))
    extra = {k: entry[k] for k in ("state", "execution_time") if entry.get(k) not in (None, "")}
    return Step(index=index, source="agent", message=thought, tool_calls=calls, observations=observed, extra=extra)


def _is_error(text: str) -> bool:
    return _LINT_REJECTED in text or looks_like_error(text)


def _replay_config(value: JSONObject) -> JSONObject:
    config = value.get("replay_config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except (ValueError, RecursionError):
            return {}
    return config if isinstance(config, dict) else {}


def _model_name(config: JSONObject) -> str | None:
    agent = config.get("agent")
    model = agent.get("model") if isinstance(agent, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


def _instance_id(config: JSONObject) -> str | None:
    problem = config.get("problem_statement")
    found = problem.get("id") if isinstance(problem, dict) else None
    return found if isinstance(found, str) else None


def _trace_id(path: str, record: str | None) -> str:
    name = PurePosixPath(path.replace("\\", "/").rsplit("!", 1)[-1]).name
    for suffix in (".traj", ".json", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}-{record.replace(' ', '')}" if record else name
