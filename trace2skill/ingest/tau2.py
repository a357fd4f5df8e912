"""tau2-bench simulation results: `{timestamp, info, tasks, simulations: [SimulationRun]}`.

Distinct from tau-bench v1 (`tau_bench.py`, `[{task_id, reward, traj}]`). Each simulation is
one trajectory (`tau2/data_model/simulation.py`). Two schemas are read:
- half duplex (all versions): `messages`, a list of `{role, content, tool_calls, ...}` where a
  tool call is `{id, name, arguments, requestor}` and a result is a `tool` message `{id,
  content, requestor, error}` (`error: true`, or words such as `Error:`, flag it);
- full duplex (newer versions, with `ticks`, `review`, `mode`): `messages` is empty and the
  conversation is in `ticks`, each `{agent_chunk, agent_tool_calls, agent_tool_results,
  user_chunk, user_tool_calls, user_tool_results}`; streamed chunks of one speaker are joined.

The agent's calls (`requestor: "assistant"`) are tool calls. In dual-control domains
(telecom) the simulated user also calls tools on their own device (`requestor: "user"`):
those are not agent actions, so they are written into the user's step as text
(`[user tool] name(args) -> result`) and counted in the ledger as ignored calls.

Outcome: `reward_info.reward` is the reward; the ingest core applies `success_threshold`
(tau2 counts a task passed only at reward 1.0, the default). `termination_reason` and the
LLM `review` (newer schema) are kept in `extra`. The task is the user scenario's
instructions from the file's `tasks`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, kind_of, looks_like_error, string_id, text_of
from .base import Document, Sample

NAME = "tau2"

_USER_CALLS = "simulated-user tool calls (requestor 'user') act on the user's device; kept as user-step text"


def sniff(sample: Sample) -> bool:
    if not isinstance(sample, dict) or not isinstance(sample.get("simulations"), list):
        return False
    sims = sample["simulations"]
    first = sims[0] if sims else None
    return ("tasks" in sample or "info" in sample) and (first is None or (isinstance(first, dict) and "task_id" in first))


def read(doc: Document) -> Iterator[Trace | Skip]:
    value = doc.value() if doc.kind == "json" else None
    if not sniff(value):
        yield doc.skip(f"expected a tau2-bench results object with 'simulations', got {kind_of(value)}")
        return
    info = value.get("info") if isinstance(value.get("info"), dict) else {}
    raw_tasks = value.get("tasks") if isinstance(value.get("tasks"), list) else []
    tasks = {str(t.get("id")): t for t in raw_tasks if isinstance(t, dict)}
    mode = "full duplex (ticks)" if any(isinstance(s, dict) and s.get("ticks") for s in value["simulations"]) else "half duplex"
    commit = info.get("git_commit")
    doc.ledger.version = f"{mode}, tau2 git {commit[:10]}" if isinstance(commit, str) else mode
    for index, sim in enumerate(value["simulations"]):
        yield _simulation(doc, sim, f"simulation {index}", info, tasks)


def _simulation(doc: Document, sim: JSONValue, where: str, info: JSONObject, tasks: JSONObject) -> Trace | Skip:
    if not isinstance(sim, dict):
        doc.ledger.drop("simulation is not an object")
        return doc.skip(f"expected a simulation object, got {kind_of(sim)}", where)
    messages = sim.get("messages") if isinstance(sim.get("messages"), list) else []
    if not messages and isinstance(sim.get("ticks"), list):
        doc.ledger.saw(records=len(sim["ticks"]))
        messages = _join_chunks([m for tick in sim["ticks"] if isinstance(tick, dict) for m in _tick_messages(tick)])
    else:
        doc.ledger.saw(records=len(messages))
    steps = _steps(doc, messages)
    built = steps.build()
    if not built:
        return doc.skip("simulation has no messages", where)
    reward_info = sim.get("reward_info") if isinstance(sim.get("reward_info"), dict) else {}
    reward = reward_info.get("reward")
    agent = info.get("agent_info") if isinstance(info.get("agent_info"), dict) else {}
    extra: JSONObject = {"task_id": sim.get("task_id"), "trial": sim.get("trial")}
    for key in ("termination_reason", "mode", "review"):
        if sim.get(key) is not None:
            extra[key] = sim[key]
    if reward_info:
        extra["reward_info"] = reward_info
    return Trace(
        id=string_id(sim.get("id")) or f"task-{sim.get('task_id')}-trial-{sim.get('trial', 0)}",
        task=_task_text(tasks.get(str(sim.get("task_id")))) or steps.first_message("user"),
        agent=f"tau2-bench {agent.get('implementation')}" if agent.get("implementation") else "tau2-bench",
        model=agent.get("llm") if isinstance(agent.get("llm"), str) else None,
        steps=built,
        reward=float(reward) if isinstance(reward, (int, float)) and not isinstance(reward, bool) else None,
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


def _tick_messages(tick: JSONObject) -> list[JSONObject]:
    """The messages of one full-duplex tick, in tau2's own order (agent, its results, user, its results)."""
    out: list[JSONObject] = []
    for who, role in (("agent", "assistant"), ("user", "user")):
        chunk = tick.get(f"{who}_chunk") if isinstance(tick.get(f"{who}_chunk"), dict) else {}
        calls = tick.get(f"{who}_tool_calls") if isinstance(tick.get(f"{who}_tool_calls"), list) else []
        if chunk or calls:
            out.append({"role": role, "content": chunk.get("content"), "tool_calls": calls, "chunk": True})
        results = tick.get(f"{who}_tool_results")
        out.extend(r for r in results if isinstance(r, dict)) if isinstance(results, list) else None
    return out


def _join_chunks(messages: list[JSONObject]) -> list[JSONObject]:
    """Streamed chunks of one speaker, one after another, joined into one message (as tau2 does)."""
    joined: list[JSONObject] = []
    for message in messages:
        last = joined[-1] if joined else None
        if last is not None and message.get("chunk") and last.get("chunk") and last["role"] == message["role"] and not last["tool_calls"]:
            joined[-1] = {**message, "content": (last.get("content") or "") + (message.get("content") or "")}
        else:
            joined.append(message)
    return joined


def _steps(doc: Document, messages: list[JSONValue]) -> StepList:
    steps = StepList()
    user_calls: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
            doc.ledger.drop("message without a known role")
            continue
        role, text = message["role"], text_of(message.get("content"))
        raw_calls = message.get("tool_calls")
        calls = [c for c in raw_calls if isinstance(c, dict)] if isinstance(raw_calls, list) else []
        doc.ledger.saw(calls=len(calls), results=role == "tool")
        if role == "tool":
            _result(doc, steps, message, user_calls)
        elif role == "assistant":
            index = steps.open_agent_step(after_calls=True) if message.get("chunk") else steps.add("agent")
            steps.append_text(index, text)
            for call in calls:
                steps.add_call(index, ToolCall(id=string_id(call.get("id")), name=str(call.get("name") or "tool"),
                                               arguments=arguments_text(call.get("arguments"))))
        else:
            for call in calls:
                doc.ledger.ignore(_USER_CALLS, calls=1)
                user_calls[str(call.get("id"))] = f"[user tool] {call.get('name')}({json.dumps(call.get('arguments'), sort_keys=True)})"
            last = steps.last()
            if message.get("chunk") and last is not None and last.source == role and not calls:
                steps.append_text(len(steps) - 1, text)
            else:
                steps.add("system" if role == "system" else "user", text)
    return steps


def _result(doc: Document, steps: StepList, message: JSONObject, user_calls: dict[str, str]) -> None:
    call_id = string_id(message.get("id"))
    content = text_of(message.get("content"))
    if message.get("requestor") == "user" or (call_id is not None and call_id in user_calls):
        doc.ledger.ignore(_USER_CALLS, results=1)
        line = f"{user_calls.pop(str(call_id), '[user tool]')} -> {content}"
        last = steps.last()
        if last is not None and last.source == "user":
            steps.append_text(len(steps) - 1, line)
        else:
            steps.add("user", line)
        return
    steps.attach(Observation(call_id=call_id, content=content, is_error=message.get("error") is True or looks_like_error(content)))


def _task_text(task: JSONValue) -> str:
    """The user scenario's instructions (what the simulated user wants), else the description."""
    if not isinstance(task, dict):
        return ""
    scenario = task.get("user_scenario") if isinstance(task.get("user_scenario"), dict) else {}
    instructions = scenario.get("instructions")
    if isinstance(instructions, dict):
        parts = [f"{k}: {v}" for k, v in instructions.items() if isinstance(v, str) and v and k != "domain"]
        if parts:
            return "\n".join(parts)
    if isinstance(instructions, str) and instructions:
        return instructions
    return text_of(task.get("ticket")) or text_of(task.get("description"))
