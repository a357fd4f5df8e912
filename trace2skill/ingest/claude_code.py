"""Reader for Claude Code session logs (`~/.claude/projects/<cwd>/<session>.jsonl`).

Each line is an event `{type, uuid, parentUuid, isSidechain, sessionId, timestamp, cwd,
gitBranch, version, message, toolUseResult}`. The file is a tree, not a list, and every line
type with a `uuid` sits in it: messages (`user`, `assistant`, `system`), but also `progress`
(hooks, bash output, sub-agent streaming) and `attachment` lines (2.1.2xx), and types not
seen yet. The conversation is rebuilt per tree (a compaction is crossed through
`logicalParentUuid`) by following the parents back from its newest message through *any*
line type, then adding the branches parallel tool calls make: Claude Code writes several
`tool_use` lines and answers each with a `tool_result` line whose parent is its call, so all
but one answer hang off the chain. Those answers (and further lines of the same API
response) are taken back; what remains off the chain is a rewound or retried branch, left
out with that rule. The kept messages are read in file order.

Every line is accounted for in the document's `Ledger`: read, or ignored with a rule
(`hook progress lines carry no agent action`, ...). A line type the reader does not know is
passed through (the chain continues across it) and counted; if it holds a message, that is
reported as dropped, so `ingest --check --strict` fails rather than lose a tool call quietly.

Sub-agents. A session's `<session>/subagents/agent-*.jsonl` files are read with it and kept
in `extra["sidechains"]` (or left out with `--drop-sidechains`, counted); read on their own,
beside their parent, they are ignored as already read. Without those files, the sub-agent's
messages streamed in `agent_progress` lines are rebuilt into the sidechain instead; with
them, those lines are repeats. `agent-acompact-*` files are the compaction request and the
summary the parent continues from (its `isCompactSummary` message): ignored, with that rule.
A sub-agent file read without its parent is its own trace (`extra["sidechain"]`).

Claude Code logs carry no task outcome: outcome stays `unknown`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, Trace
from ._steps import StepList, as_int, derived_id, exit_code_in, kind_of, text_of
from .anthropic import add_message, result_observation
from .base import Document, Ledger, Sample

NAME = "claude_code"

_MESSAGE_TYPES = ("user", "assistant", "system")
_META_PREFIXES = ("<command-", "<local-command-", "Caveat: The messages below")
_RULES = {
    "hook_progress": "hook progress lines report hooks running; they carry no agent action",
    "bash_progress": "bash progress lines stream output that the tool result repeats",
    "attachment": "attachment lines are context Claude Code adds to the prompt (reminders, listings, memory)",
    "file-history-snapshot": "file-history snapshots back up edited files; no agent action",
    "queue-operation": "queue operations record prompts typed while the agent worked; each reaches the chain as a user message",
    "last-prompt": "last-prompt lines repeat the latest user prompt",
    "custom-title": "custom-title lines name the session (kept in extra.title)",
    "summary": "summary lines title a conversation (kept in extra.summary)",
}
_ABANDONED = "messages on an abandoned branch: the conversation was rewound or retried from an earlier message"
_REPEATED = "repeated line: same uuid as an earlier line"
_DROPPED_SIDE = "sub-agent messages left out (--drop-sidechains)"
_AGENT_REPEATS = "agent progress lines repeat a subagents/agent-*.jsonl file (counted in that file or read with the session)"
_WITH_PARENT = "sub-agent session: read with its parent session file (its calls are counted there)"
_COMPACTION = "compaction sub-agent: the request and the summary the parent session continues from"


def is_checkpoint_metadata(sample: Sample) -> bool:
    """Entire's `*_metadata.json`, written beside each checkpointed session transcript: ids,
    branch, files touched and attribution, but no message, so nothing to read as a trajectory."""
    return (isinstance(sample, dict) and {"checkpoint_id", "session_id", "files_touched"} <= sample.keys()
            and not any(key in sample for key in ("messages", "type", "uuid")))


def sniff(sample: Sample) -> bool:
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
    kind: str
    parent: str | None
    sidechain: bool
    message_id: str | None = None
    calls: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    text: bool = False
    counts: tuple[int, int] = (0, 0)


@dataclass
class _Index:
    """What the first pass learns: the line graph per session, titles, sub-agent streams."""

    sessions: dict[str, dict[str, _Node]] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    agents: dict[str, set[str]] = field(default_factory=dict)
    """Sub-agent ids streamed in `agent_progress` lines, per session."""
    message_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    """The first line of each message (`user`/`assistant`/`system` with a uuid), by (session, uuid)."""
    progress_lines: dict[str, list[int]] = field(default_factory=dict)
    """The `agent_progress` lines, per session: with `message_lines`, what the second pass parses."""


def read(doc: Document, *, include_sidechains: bool = True) -> Iterator[Trace | Skip]:
    """Yield one trajectory per session in the file, accounting every line in `doc.ledger`.

    Args:
        doc: a JSONL document (a JSON list of events is accepted too).
        include_sidechains: keep sub-agent conversations in `extra["sidechains"]` (default)
            or leave them out (counted as ignored).
    """
    records = _records_of(doc)
    if records is None:
        yield doc.skip(f"expected Claude Code JSONL events, got a JSON {kind_of(doc.value())}")
        return
    if (rule := _read_elsewhere(doc.path, include_sidechains)) is not None:
        _ignore_file(records, doc.ledger, rule, with_calls=rule != _WITH_PARENT)
        return
    agent_files = _subagent_files(doc.path)
    index = _Index()
    for entry in records():
        if isinstance(entry, Skip):
            yield entry
            continue
        if (reason := _index(entry[1], entry[0], index, doc.ledger, agent_files, include_sidechains)) is not None:
            yield doc.skip(reason, f"line {entry[0]}")
    for session_id, nodes in index.sessions.items():
        yield from _session(doc, session_id, nodes, index, records, agent_files, include_sidechains)


def _records_of(doc: Document) -> Callable[[], Iterator[JSONValue]] | None:
    if doc.kind == "jsonl":
        return doc.records
    value = doc.value()
    if isinstance(value, list):
        return lambda only=None: iter([(n, item) for n, item in enumerate(value, start=1) if only is None or n in only])
    return None


def _blocks(message: JSONValue) -> tuple[list[str], list[str], bool, int, int]:
    """Tool-use ids, answered ids, whether there is text, and raw call/result counts."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return [], [], isinstance(content, str) and bool(content), 0, 0
    calls, answers, text, n_calls, n_results = [], [], False, 0, 0
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use":
            n_calls += 1
            calls += [block["id"]] if isinstance(block.get("id"), str) else []
        elif kind == "tool_result":
            n_results += 1
            answers += [block["tool_use_id"]] if isinstance(block.get("tool_use_id"), str) else []
        elif kind in ("text", "image", "document"):
            text = True
    return calls, answers, text, n_calls, n_results


def _index(
    event: JSONValue, line: int, index: _Index, ledger: Ledger, agent_files: dict[str, Path], sidechains: bool
) -> str | None:
    """Account one line and add it to the graph; return a skip reason for an unusable one."""
    if not isinstance(event, dict):
        ledger.saw(records=1)
        return f"expected an event object, got {kind_of(event)}"
    kind = event.get("type")
    calls, answers, text, n_calls, n_results = _blocks(event.get("message"))
    ledger.saw(records=1, calls=n_calls, results=n_results)
    if isinstance(event.get("version"), str):
        ledger.version = event["version"]
    session = event.get("sessionId", "")
    if not isinstance(session, str):
        return f"sessionId must be a string, got {kind_of(session)}"
    uuid = event.get("uuid")
    if kind in _MESSAGE_TYPES and (not isinstance(uuid, str) or not uuid):
        return f"{kind} event has no uuid"
    _account_line(event, kind, session, index, ledger, agent_files, sidechains, (n_calls, n_results))
    if kind == "progress" and isinstance(event.get("data"), dict) and event["data"].get("type") == "agent_progress":
        index.progress_lines.setdefault(session, []).append(line)
    if not isinstance(uuid, str) or not uuid:
        return None
    if kind in _MESSAGE_TYPES:
        index.message_lines.setdefault((session, uuid), line)
    nodes = index.sessions.setdefault(session, {})
    if uuid in nodes:
        if kind in _MESSAGE_TYPES:
            ledger.ignore(_REPEATED, calls=n_calls, results=n_results)
        return None
    parent = event.get("parentUuid") or event.get("logicalParentUuid")
    message = event.get("message")
    message_id = message.get("id") if isinstance(message, dict) and kind == "assistant" else None
    nodes[uuid] = _Node(
        line, kind if isinstance(kind, str) else "?", parent if isinstance(parent, str) else None,
        event.get("isSidechain") is True, message_id if isinstance(message_id, str) else None,
        tuple(calls), tuple(answers), text, (n_calls, n_results),
    )
    return None


def _account_line(
    event: dict, kind: JSONValue, session: str, index: _Index, ledger: Ledger,
    agent_files: dict[str, Path], sidechains: bool, counts: tuple[int, int],
) -> None:
    """Count a line that is not a message by its rule (messages are counted per conversation)."""
    if kind in _MESSAGE_TYPES:
        return
    if kind == "summary" and isinstance(event.get("leafUuid"), str):
        index.summaries[event["leafUuid"]] = text_of(event.get("summary"))
    if kind == "custom-title" and isinstance(event.get("customTitle"), str):
        index.titles[session] = event["customTitle"]
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    progress = data.get("type") if kind == "progress" else None
    if progress == "agent_progress":
        agent = data.get("agentId")
        if isinstance(agent, str) and agent in agent_files:
            ledger.ignore(_AGENT_REPEATS)
        elif isinstance(agent, str):
            index.agents.setdefault(session, set()).add(agent)
        else:
            ledger.ignore("agent progress lines without an agentId carry no readable sub-agent message")
        return
    rule = _RULES.get(progress or kind) if isinstance(progress or kind, str) else None
    if kind == "progress" and rule is None:
        rule = f"progress lines of type {progress!r} carry no agent action"
    if rule is not None:
        ledger.ignore(rule)
    elif isinstance(event.get("message"), dict):
        ledger.drop(f"line type {kind!r} is not known and holds a message; not read", calls=counts[0], results=counts[1])
    else:
        ledger.ignore(f"line type {kind!r} is not known; it holds no message (passed through)")


# ---------------------------------------------------------------- conversations


def _root(uuid: str, nodes: dict[str, _Node], roots: dict[str, str]) -> str:
    """The first line of the tree `uuid` belongs to (same sidechain flag), cycle-safe."""
    path, seen, current = [], set(), uuid
    sidechain = nodes[uuid].sidechain
    while True:
        if current in roots:
            root = roots[current]
            break
        path.append(current)
        seen.add(current)
        parent = nodes[current].parent
        if parent is None or parent not in nodes or parent in seen or nodes[parent].sidechain != sidechain:
            root = current
            break
        current = parent
    for node in path:
        roots[node] = root
    return root


def _chain(leaf: str, nodes: dict[str, _Node]) -> set[str]:
    chain, current = set(), leaf
    sidechain = nodes[leaf].sidechain
    while current is not None and current in nodes and current not in chain and nodes[current].sidechain == sidechain:
        chain.add(current)
        current = nodes[current].parent
    return chain


def _conversations(nodes: dict[str, _Node]) -> list[tuple[bool, list[str], list[str]]]:
    """`(sidechain, kept message uuids in file order, abandoned uuids)` per tree, in file order."""
    roots: dict[str, str] = {}
    trees: dict[str, list[str]] = {}
    for uuid, node in sorted(nodes.items(), key=lambda item: item[1].line):
        if node.kind in _MESSAGE_TYPES:
            trees.setdefault(_root(uuid, nodes, roots), []).append(uuid)
    out = []
    for members in trees.values():
        kept = _chain(members[-1], nodes) & set(members)
        _take_parallel_branches(members, kept, nodes)
        out.append((nodes[members[0]].sidechain, [u for u in members if u in kept], [u for u in members if u not in kept]))
    return out


def _take_parallel_branches(members: list[str], kept: set[str], nodes: dict[str, _Node]) -> None:
    """Add the off-chain lines of parallel tool calls: further lines of a kept API response,
    answers to kept calls not answered on the chain, and system notes hanging off kept lines."""
    responses = {nodes[u].message_id for u in kept if nodes[u].message_id}
    for uuid in members:
        if uuid not in kept and nodes[uuid].message_id in responses:
            kept.add(uuid)
    called = {c for u in kept for c in nodes[u].calls}
    answered = {a for u in kept for a in nodes[u].answers}
    for uuid in members:
        node = nodes[uuid]
        if uuid in kept:
            continue
        if node.kind == "user" and node.answers and not node.text and called.issuperset(node.answers) and answered.isdisjoint(node.answers):
            kept.add(uuid)
            answered.update(node.answers)
        elif node.kind == "system" and _message_parent(uuid, nodes) in kept:
            kept.add(uuid)


def _message_parent(uuid: str, nodes: dict[str, _Node]) -> str | None:
    seen, current = {uuid}, nodes[uuid].parent
    while current is not None and current in nodes and current not in seen:
        if nodes[current].kind in _MESSAGE_TYPES:
            return current
        seen.add(current)
        current = nodes[current].parent
    return None


def _session(
    doc: Document, session_id: str, nodes: dict[str, _Node], index: _Index, records: Callable[[], Iterator[JSONValue]],
    agent_files: dict[str, Path], include_sidechains: bool,
) -> Iterator[Trace | Skip]:
    ledger = doc.ledger
    record = None if len(index.sessions) == 1 else f"session {session_id}"
    conversations = _conversations(nodes)
    if not conversations:
        return
    for _side, _kept, abandoned in conversations:
        if abandoned:
            ledger.ignore(_ABANDONED, len(abandoned), calls=sum(nodes[u].counts[0] for u in abandoned),
                          results=sum(nodes[u].counts[1] for u in abandoned))
    main = [u for side, kept, _ in conversations if not side for u in kept]
    sides = [kept for side, kept, _ in conversations if side]
    is_subagent = not main
    if is_subagent:
        main = sides.pop()
    wanted = set(main) | {u for kept in sides for u in kept}
    lines = _message_lines(index, session_id, wanted) | set(index.progress_lines.get(session_id, ()))
    events, streams = _load(records, session_id, wanted, index.agents.get(session_id, set()), lines)
    main = sorted(main, key=lambda u: nodes[u].line)
    steps, problems = _steps_of([events[u] for u in main if u in events])
    for uuid, reason in problems:
        yield doc.skip(reason, f"line {nodes[uuid].line}")
    built = steps.build()
    if not built:
        yield doc.skip(f"session {session_id!r} has no usable messages", record)
        return
    abandoned = sum(len(lost) for side, _, lost in conversations if not side)
    extra = _trace_extra(events, main, nodes, index, session_id, abandoned)
    if is_subagent:
        extra["sidechain"] = True
    side_summaries, side_problems = _sidechains(doc, sides, events, streams, nodes, agent_files, include_sidechains)
    yield from side_problems
    if side_summaries:
        extra["sidechains"] = side_summaries
    first, last = events[main[0]], events[main[-1]]
    agent_id = first.get("agentId") if is_subagent else None
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


def _message_lines(index: _Index, session_id: str, uuids: Iterable[str]) -> set[int]:
    """The first line of each of `uuids`' messages in `session_id`: what a second pass parses of them."""
    return {index.message_lines[(session_id, u)] for u in uuids if (session_id, u) in index.message_lines}


def _load(
    records: Callable[..., Iterator[JSONValue]], session_id: str, wanted: set[str], agents: set[str],
    lines: set[int] | None = None,
) -> tuple[dict[str, dict], dict[str, JSONObject]]:
    """One pass: the wanted message events, and each streamed sub-agent's prompt and messages.
    `lines`, when the first pass knows them, are the only lines that can hold either (the
    first line of each wanted message, every `agent_progress` line): the others are not parsed
    again, which was half the time of reading a session."""
    events: dict[str, dict] = {}
    streams: dict[str, JSONObject] = {}
    for entry in records() if lines is None else records(lines):
        if isinstance(entry, Skip) or not isinstance(entry[1], dict) or entry[1].get("sessionId", "") != session_id:
            continue
        event = entry[1]
        uuid = event.get("uuid")
        if event.get("type") in _MESSAGE_TYPES and uuid in wanted and uuid not in events:
            events[uuid] = event
        data = event.get("data") if event.get("type") == "progress" else None
        if isinstance(data, dict) and data.get("type") == "agent_progress" and data.get("agentId") in agents:
            stream = streams.setdefault(data["agentId"], {"prompt": data.get("prompt"), "events": {}, "tool": event.get("parentToolUseID")})
            inner = data.get("message")
            if isinstance(inner, dict) and isinstance(inner.get("uuid"), str) and inner.get("type") in ("user", "assistant"):
                stream["events"].setdefault(inner["uuid"], inner)
    return events, streams


# ---------------------------------------------------------------- steps


def _steps_of(events: list[dict]) -> tuple[StepList, list[tuple[str, str]]]:
    """Steps of one conversation, and `(uuid, reason)` for each unusable event or block."""
    steps, problems = StepList(), []
    previous_response = None
    for event in events:
        kind, message = event.get("type"), event.get("message")
        extra = {k: event[k] for k in ("timestamp", "uuid") if isinstance(event.get(k), str)}
        if kind == "system":
            extra.update({"subtype": event["subtype"]} if isinstance(event.get("subtype"), str) else {})
            steps.add("system", text_of(event.get("content")) or f"[{event.get('subtype', 'system')}]", extra=extra)
            previous_response = None
            continue
        if not isinstance(message, dict):
            problems.append((event.get("uuid", "?"), f"{kind} event has no message object"))
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
        problems.extend((event.get("uuid", "?"), reason) for reason in reasons)
        previous_response = response_id
    return steps, problems


def _result_reader(tool_use_result: JSONValue):
    """Read a `tool_result` block, adding what Claude Code's `toolUseResult` says.

    The block's `is_error`, `toolUseResult.interrupted`, a non-zero exit code (structured, or
    stated as `Exit code N` in the text) and an `Error...` result string mark a failure.
    """

    def read_result(block: dict) -> Observation:
        observation = result_observation(block)
        structured = tool_use_result if isinstance(tool_use_result, dict) else {}
        code = as_int(structured.get("exitCode", structured.get("returnCode")))
        if code is None:
            code = exit_code_in(observation.content)
        failed = (
            observation.is_error
            or structured.get("interrupted") is True
            or (isinstance(tool_use_result, str) and tool_use_result.lstrip().lower().startswith("error"))
            or code not in (None, 0)
        )
        return observation.model_copy(update={"is_error": failed, "exit_code": code})

    return read_result


def _looks_meta(content: JSONValue) -> bool:
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
    events: dict[str, dict], main: list[str], nodes: dict[str, _Node], index: _Index, session_id: str, abandoned: int
) -> JSONObject:
    first = events[main[0]]
    extra: JSONObject = {}
    for key, name in (("cwd", "cwd"), ("gitBranch", "git_branch")):
        if isinstance(first.get(key), str):
            extra[name] = first[key]
    if session_id in index.titles:
        extra["title"] = index.titles[session_id]
    titles = [index.summaries[u] for u in main if u in index.summaries]
    if titles:
        extra["summary"] = titles[-1]
    if abandoned:
        extra["off_chain_messages"] = abandoned
    root_parent = nodes[main[0]].parent
    if root_parent is not None and root_parent not in nodes:
        extra["chain_break"] = root_parent
    return extra


# ---------------------------------------------------------------- sub-agents


def _sidechains(
    doc: Document, sides: list[list[str]], events: dict[str, dict], streams: dict[str, JSONObject],
    nodes: dict[str, _Node], agent_files: dict[str, Path], include: bool,
) -> tuple[list[JSONObject], list[Skip]]:
    """The session's sub-agent conversations: in-file sidechains, streamed sub-agents with no
    file of their own, and `subagents/agent-*.jsonl` files; counted as ignored when left out."""
    ledger, summaries, problems = doc.ledger, [], []
    for chain in sides:
        if not include:
            ledger.ignore(_DROPPED_SIDE, len(chain), calls=sum(nodes[u].counts[0] for u in chain),
                          results=sum(nodes[u].counts[1] for u in chain))
            continue
        chain = sorted(chain, key=lambda u: nodes[u].line)
        summary, side_problems = _summary([events[u] for u in chain if u in events], events[chain[0]].get("agentId"))
        summaries.append(summary)
        problems += [doc.skip(reason, f"line {nodes[uuid].line}") for uuid, reason in side_problems]
    for agent, stream in streams.items():
        inner = list(stream["events"].values())
        counts = [_blocks(e.get("message"))[3:] for e in inner]
        calls, results = sum(c for c, _ in counts), sum(r for _, r in counts)
        ledger.saw(calls=calls, results=results)
        if not include:
            ledger.ignore(_DROPPED_SIDE, len(inner), calls=calls, results=results)
            continue
        prompt = stream["prompt"]
        head = [{"type": "user", "message": {"role": "user", "content": prompt}}] if isinstance(prompt, str) and prompt else []
        summary, side_problems = _summary(head + inner, agent)
        summary["streamed"] = True
        summaries.append(summary)
        problems += [doc.skip(f"agent {agent}: {reason}") for _, reason in side_problems]
    if include:
        for agent, path in agent_files.items():
            summaries += _attach_file(doc, agent, path, problems)
    return summaries, problems


def _summary(events: list[dict], agent_id: JSONValue) -> tuple[JSONObject, list[tuple[str, str]]]:
    """A sub-agent conversation as plain data for `extra`, and its problems."""
    steps, problems = _steps_of(events)
    summary = {
        "root_uuid": events[0].get("uuid") if events else None,
        "agent_id": agent_id if isinstance(agent_id, str) else None,
        "task": steps.first_message("user"),
        "steps": [s.model_dump(mode="json") for s in steps.build()],
    }
    return summary, problems


def _attach_file(doc: Document, agent: str, path: Path, problems: list[Skip]) -> list[JSONObject]:
    """Read `subagents/agent-<agent>.jsonl` into sidechain summaries, counted in `doc.ledger`."""
    from .documents import iter_documents  # documents imports the readers' package

    found = []
    for sub in iter_documents([path]):
        if isinstance(sub, Skip) or sub.kind != "jsonl":
            problems.append(sub if isinstance(sub, Skip) else doc.skip(f"{path.name} is not JSONL"))
            continue
        index = _Index()
        for entry in sub.records():
            if isinstance(entry, Skip):
                problems.append(entry)
            elif (reason := _index(entry[1], entry[0], index, doc.ledger, {}, True)) is not None:
                problems.append(sub.skip(reason, f"line {entry[0]}"))
        for session_id, nodes in index.sessions.items():
            for _side, kept, abandoned in _conversations(nodes):
                if abandoned:
                    doc.ledger.ignore(_ABANDONED, len(abandoned), calls=sum(nodes[u].counts[0] for u in abandoned),
                                      results=sum(nodes[u].counts[1] for u in abandoned))
                events, _ = _load(sub.records, session_id, set(kept), set(), _message_lines(index, session_id, kept))
                summary, side_problems = _summary([events[u] for u in sorted(kept, key=lambda u: nodes[u].line)], agent)
                summary["file"] = path.name
                found.append(summary)
                problems += [sub.skip(reason, f"line {nodes[u].line}") for u, reason in side_problems]
    return found


def _subagent_files(path: str) -> dict[str, Path]:
    """`agent-<id>.jsonl` files in `<session>/subagents/` beside a session file (not compactions)."""
    if "!" in path or not path.endswith(".jsonl"):
        return {}
    folder = Path(path[: -len(".jsonl")]) / "subagents"
    if not folder.is_dir() or folder.is_symlink():
        return {}
    return {
        f.name[len("agent-"):-len(".jsonl")]: f
        for f in sorted(folder.glob("agent-*.jsonl"))
        if f.is_file() and not f.is_symlink() and not f.name.startswith("agent-acompact-")
    }


def _read_elsewhere(path: str, include_sidechains: bool) -> str | None:
    """The rule for a sub-agent file that is not read on its own: a compaction file, or a
    sub-agent whose parent session file is beside it (the parent reads it, or leaves it out
    with `--drop-sidechains`)."""
    if "!" in path:
        return None
    file = Path(path)
    if file.parent.name != "subagents" or not file.name.startswith("agent-"):
        return None
    if file.name.startswith("agent-acompact-"):
        return _COMPACTION
    if not Path(str(file.parent.parent) + ".jsonl").is_file():
        return None
    return _WITH_PARENT if include_sidechains else _DROPPED_SIDE


def _ignore_file(records: Callable[[], Iterator[JSONValue]], ledger: Ledger, rule: str, *, with_calls: bool) -> None:
    """Count every line of a file left out by `rule`; its calls too unless its parent's
    ledger counts them."""
    for entry in records():
        event = entry[1] if not isinstance(entry, Skip) and isinstance(entry[1], dict) else {}
        _, _, _, calls, results = _blocks(event.get("message")) if with_calls else (0, 0, 0, 0, 0)
        ledger.saw(records=1, calls=calls, results=results)
        ledger.ignore(rule, calls=calls, results=results)
