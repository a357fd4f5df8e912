"""Reader for Claude Code session logs (`~/.claude/projects/<cwd>/<session>.jsonl`).

Each line is an event `{type, uuid, parentUuid, isSidechain, sessionId, timestamp, cwd,
gitBranch, version, message, toolUseResult}`. The file is a tree, not a list: edits and
retries fork it, so the conversation is rebuilt by following `parentUuid` back from the last
main-chain leaf (and across a compaction through `logicalParentUuid`). Sub-agent
conversations (`isSidechain`) are kept apart in `extra["sidechains"]` or dropped, never mixed
into the main chain. One API response may be split over several lines sharing `message.id`;
those extend one agent step.

There is no published schema and it drifts, so parsing is defensive: unknown line types
(`summary`, `file-history-snapshot`, ...) are ignored, and a message line without a `uuid`
is skipped with a reason. Reading makes two passes over `Document.records()`: a light index
first, then one session at a time, so memory holds one session's events. Claude Code logs
carry no task outcome: outcome stays `unknown`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..types import Observation, Skip, SourceRef, Trace
from ._steps import StepList, as_int, derived_id, kind_of, text_of
from .anthropic import add_message, result_observation
from .base import Document

NAME = "claude_code"

_MESSAGE_TYPES = ("user", "assistant", "system")
_EXIT_CODE = re.compile(r"^Exit code (-?\d+)")
_META_PREFIXES = ("<command-", "<local-command-", "Caveat: The messages below")


def sniff(sample: Any) -> bool:
    """True for a Claude Code event line (or a JSON list of them)."""
    if isinstance(sample, list):
        return bool(sample) and isinstance(sample[0], dict) and sniff(sample[0])
    if not isinstance(sample, dict) or not isinstance(sample.get("type"), str):
        return False
    if "payload" in sample:
        return False
    return any(k in sample for k in ("sessionId", "parentUuid", "leafUuid")) or (
        sample["type"] == "file-history-snapshot" and "messageId" in sample
    )


@dataclass
class _Node:
    line: int
    parent: str | None
    sidechain: bool


def read(doc: Document, *, include_sidechains: bool = True) -> Iterator[Trace | Skip]:
    """Yield one trajectory per session in the file.

    Args:
        doc: a JSONL document (a JSON list of events is accepted too).
        include_sidechains: keep sub-agent conversations in `extra["sidechains"]` (default)
            or drop them.
    """
    records = _records_of(doc)
    if records is None:
        yield doc.skip(f"expected Claude Code JSONL events, got a JSON {kind_of(doc.value())}")
        return
    sessions: dict[str, dict[str, _Node]] = {}
    summaries: dict[str, str] = {}
    for entry in records():
        if isinstance(entry, Skip):
            yield entry
            continue
        line, event = entry
        if (reason := _index(event, sessions, summaries, line)) is not None:
            yield doc.skip(reason, f"line {line}")
    for session_id, nodes in sessions.items():
        record = None if len(sessions) == 1 else f"session {session_id}"
        events = {
            e["uuid"]: e
            for e in (_event(entry) for entry in records())
            if e is not None
            and e.get("sessionId", "") == session_id
            and isinstance(e.get("uuid"), str)
            and e["uuid"] in nodes
        }
        yield from _session_traces(doc, session_id, record, nodes, events, summaries, include_sidechains)


def _records_of(doc: Document):
    if doc.kind == "jsonl":
        return doc.records
    value = doc.value()
    if isinstance(value, list):
        return lambda: iter(list(enumerate(value, start=1)))
    return None


def _event(entry: Any) -> dict | None:
    if isinstance(entry, Skip):
        return None
    event = entry[1]
    return event if isinstance(event, dict) and event.get("type") in _MESSAGE_TYPES else None


def _index(event: Any, sessions: dict[str, dict[str, _Node]], summaries: dict[str, str], line: int) -> str | None:
    if not isinstance(event, dict):
        return f"expected an event object, got {kind_of(event)}"
    kind = event.get("type")
    if kind == "summary" and isinstance(event.get("leafUuid"), str):
        summaries[event["leafUuid"]] = text_of(event.get("summary"))
    if kind not in _MESSAGE_TYPES:
        return None
    uuid = event.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        return f"{kind} event has no uuid"
    session = event.get("sessionId", "")
    if not isinstance(session, str):
        return f"sessionId must be a string, got {kind_of(session)}"
    parent = event.get("parentUuid") or event.get("logicalParentUuid")
    sessions.setdefault(session, {})[uuid] = _Node(
        line, parent if isinstance(parent, str) else None, event.get("isSidechain") is True
    )
    return None


def _session_traces(
    doc: Document,
    session_id: str,
    record: str | None,
    nodes: dict[str, _Node],
    events: dict[str, dict],
    summaries: dict[str, str],
    include_sidechains: bool,
) -> Iterator[Trace | Skip]:
    main_leaf = _last_leaf(nodes, sidechain=False)
    side_chains = [_chain(leaf, nodes) for leaf in _sidechain_leaves(nodes)]
    if main_leaf is None and not side_chains:
        return
    if main_leaf is None:
        main, side_chains = side_chains[-1], side_chains[:-1]
    else:
        main = _chain(main_leaf, nodes)
    steps, problems = _steps_of([events[u] for u in main])
    for uuid, reason in problems:
        yield doc.skip(reason, f"line {nodes[uuid].line}")
    built = steps.build()
    if not built:
        yield doc.skip(f"session {session_id!r} has no usable messages", record)
        return
    first, last = events[main[0]], events[main[-1]]
    extra = _trace_extra(events, main, nodes, summaries)
    if main_leaf is None:
        extra["sidechain"] = True
    if include_sidechains and side_chains:
        extra["sidechains"] = []
        for chain in side_chains:
            summary, side_problems = _sidechain_summary(chain, events)
            extra["sidechains"].append(summary)
            yield from (doc.skip(reason, f"line {nodes[uuid].line}") for uuid, reason in side_problems)
    agent_id = first.get("agentId") if main_leaf is None else None
    version = last.get("version") or first.get("version")
    yield Trace(
        id=(f"{session_id}/{agent_id}" if isinstance(agent_id, str) else session_id) or derived_id(NAME, built),
        task=steps.first_message("user"),
        agent=f"claude-code {version}" if isinstance(version, str) else "claude-code",
        model=_model(events[u] for u in main),
        steps=built,
        source=SourceRef(path=doc.path, record=record),
        format=NAME,
        extra=extra,
    )


def _last_leaf(nodes: dict[str, _Node], *, sidechain: bool) -> str | None:
    candidates = [(n.line, u) for u, n in nodes.items() if n.sidechain == sidechain]
    return max(candidates)[1] if candidates else None


def _sidechain_leaves(nodes: dict[str, _Node]) -> list[str]:
    """The newest leaf of each sub-agent conversation, in file order."""
    parents = {n.parent for n in nodes.values()}
    newest: dict[str, tuple[int, str]] = {}
    for uuid, node in nodes.items():
        if node.sidechain and uuid not in parents:
            root = _chain(uuid, nodes)[0]
            newest[root] = max(newest.get(root, (-1, "")), (node.line, uuid))
    return [uuid for _, uuid in sorted(newest.values())]


def _chain(leaf: str, nodes: dict[str, _Node]) -> list[str]:
    """Uuids from the root to `leaf`, staying within the leaf's chain kind, cycle-safe."""
    chain, seen, current = [], set(), leaf
    sidechain = nodes[leaf].sidechain
    while current is not None and current in nodes and current not in seen and nodes[current].sidechain == sidechain:
        seen.add(current)
        chain.append(current)
        current = nodes[current].parent
    return chain[::-1]


def _steps_of(events: list[dict]) -> tuple[StepList, list[tuple[str, str]]]:
    """Steps of one chain, and `(uuid, reason)` for each unusable event or block."""
    steps, problems = StepList(), []
    previous_response = None
    for event in events:
        kind, message = event["type"], event.get("message")
        extra = {k: event[k] for k in ("timestamp", "uuid") if isinstance(event.get(k), str)}
        if kind == "system":
            extra.update({"subtype": event["subtype"]} if isinstance(event.get("subtype"), str) else {})
            steps.add("system", text_of(event.get("content")) or f"[{event.get('subtype', 'system')}]", extra=extra)
            previous_response = None
            continue
        if not isinstance(message, dict):
            problems.append((event["uuid"], f"{kind} event has no message object"))
            continue
        response_id = message.get("id") if kind == "assistant" else None
        if kind == "user" and (
            event.get("isMeta") or event.get("isCompactSummary") or _looks_meta(message.get("content"))
        ):
            extra["meta"] = True
        reasons = add_message(
            steps,
            message.get("role", kind),
            message.get("content"),
            extra=extra,
            continues_turn=response_id is not None and response_id == previous_response,
            read_result=_result_reader(event.get("toolUseResult")),
        )
        problems.extend((event["uuid"], reason) for reason in reasons)
        previous_response = response_id
    return steps, problems


def _result_reader(tool_use_result: Any):
    """Read a `tool_result` block, adding what Claude Code's `toolUseResult` says."""

    def read_result(block: dict) -> Observation:
        observation = result_observation(block)
        structured = tool_use_result if isinstance(tool_use_result, dict) else {}
        code = as_int(structured.get("exitCode", structured.get("returnCode")))
        if code is None and (match := _EXIT_CODE.match(observation.content)):
            code = int(match.group(1))
        failed = (
            observation.is_error
            or structured.get("interrupted") is True
            or (isinstance(tool_use_result, str) and tool_use_result.startswith("Error"))
            or code not in (None, 0)
        )
        return observation.model_copy(update={"is_error": failed, "exit_code": code})

    return read_result


def _looks_meta(content: Any) -> bool:
    text = text_of(content).lstrip()
    return text.startswith(_META_PREFIXES)


def _model(events: Iterator[dict]) -> str | None:
    for event in events:
        message = event.get("message")
        model = message.get("model") if isinstance(message, dict) else None
        if isinstance(model, str) and model and not model.startswith("<"):
            return model
    return None


def _trace_extra(
    events: dict[str, dict], main: list[str], nodes: dict[str, _Node], summaries: dict[str, str]
) -> dict[str, Any]:
    first = events[main[0]]
    extra: dict[str, Any] = {}
    for key, name in (("cwd", "cwd"), ("gitBranch", "git_branch")):
        if isinstance(first.get(key), str):
            extra[name] = first[key]
    titles = [summaries[u] for u in main if u in summaries]
    if titles:
        extra["summary"] = titles[-1]
    off_chain = sum(1 for u, n in nodes.items() if not n.sidechain and u not in set(main))
    if off_chain:
        extra["off_chain_messages"] = off_chain
    root_parent = nodes[main[0]].parent
    if root_parent is not None and root_parent not in nodes:
        extra["chain_break"] = root_parent
    return extra


def _sidechain_summary(chain: list[str], events: dict[str, dict]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A sub-agent conversation as plain data for `extra`, and its problems."""
    steps, problems = _steps_of([events[u] for u in chain])
    agent_id = events[chain[0]].get("agentId")
    summary = {
        "root_uuid": chain[0],
        "agent_id": agent_id if isinstance(agent_id, str) else None,
        "task": steps.first_message("user"),
        "steps": [s.model_dump(mode="json") for s in steps.build()],
    }
    return summary, problems
