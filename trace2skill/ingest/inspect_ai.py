"""Inspect AI evaluation logs: `.eval` (zip) and `.json`; every sample is one trajectory.

A `.json` log is one object `{version, status, eval, plan, results, stats, samples}`; a
`.eval` log is a zip holding `header.json` (the same object without samples) and one
`samples/<id>_epoch_<n>.json` per sample (`inspect_ai/log/_recorders/eval.py`), read here one
sample at a time. A sample (`EvalSample`) keeps the conversation in `messages`
(`ChatMessageSystem/User/Assistant/Tool`): assistant `tool_calls` (`{id, function,
arguments}`) and `tool` messages (`{tool_call_id, function, content, error}`); a tool
message with an `error` (`{type, message}`), or whose text says it failed
(`_steps.looks_like_error`), is flagged as an error. Reasoning parts become the
step's reasoning. The sample's `events` transcript repeats the messages and the zip's
`_journal/`, `summaries.json` and `reductions.json` repeat the scores: they are ignored by
rule (counted in the ledger).

Outcome: from the first scorer in `scores` (by name order in the file). Inspect's own
conversion (`value_to_float`) gives the reward: `C` (correct) 1.0, `I` (incorrect) 0.0,
`P` (partial) 0.5, `N` (no answer) 0.0, `yes`/`true` 1.0, `no`/`false` 0.0, booleans and
numbers as they are. The ingest core then applies `success_threshold` (default 1.0: only a
full score is a success). A dict or list value (several metrics) is not mappable: the
outcome stays `unknown` and the scores are kept in `extra`.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..types import JSONObject, JSONValue, Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, arguments_text, kind_of, looks_like_error, string_id, text_of
from .base import Document, Ledger, Sample
from .documents import ZipLog

NAME = "inspect_ai"

_LETTERS = {"c": 1.0, "i": 0.0, "p": 0.5, "n": 0.0, "yes": 1.0, "true": 1.0, "no": 0.0, "false": 0.0}


def _is_log(value: JSONValue) -> bool:
    return isinstance(value, dict) and isinstance(value.get("eval"), dict) and "task" in value["eval"] and "version" in value


def sniff(sample: Sample) -> bool:
    if isinstance(sample, ZipLog):
        return "header.json" in sample.names()
    return _is_log(sample)


def read(doc: Document) -> Iterator[Trace | Skip]:
    if doc.kind == "zip":
        yield from _read_zip(doc, doc.value())
        return
    log = doc.value() if doc.kind == "json" else None
    if not _is_log(log):
        yield doc.skip(f"expected an Inspect log object, got {kind_of(log)}")
        return
    _note_version(doc.ledger, log)
    samples = log.get("samples")
    if not isinstance(samples, list) or not samples:
        doc.ledger.ignore("a log without samples (header only) holds no trajectory")
        yield doc.skip("Inspect log holds no samples (written with --no-log-samples?)")
        return
    for index, sample in enumerate(samples):
        yield _sample(doc, log, sample, f"sample {index}")


def _read_zip(doc: Document, archive: ZipLog) -> Iterator[Trace | Skip]:
    names = archive.names()
    header = archive.json("header.json")
    if isinstance(header, Skip) or not _is_log(header):
        yield header if isinstance(header, Skip) else doc.skip("header.json is not an Inspect log header")
        return
    _note_version(doc.ledger, header)
    for name in names:
        if name == "header.json":
            continue
        if not (name.startswith("samples/") and name.endswith(".json")):
            doc.ledger.ignore("journal, summaries and reductions repeat the samples' scores")
            continue
        sample = archive.json(name)
        if isinstance(sample, Skip):
            doc.ledger.drop("sample member cannot be read")
            yield sample
        else:
            yield _sample(doc, header, sample, name)


def _note_version(ledger: Ledger, log: JSONObject) -> None:
    packages = log["eval"].get("packages") if isinstance(log["eval"].get("packages"), dict) else {}
    version = f"log v{log.get('version')}"
    ledger.version = f"{version}, inspect_ai {packages['inspect_ai']}" if "inspect_ai" in packages else version


def _sample(doc: Document, log: JSONObject, sample: JSONValue, where: str) -> Trace | Skip:
    if not isinstance(sample, dict) or not isinstance(sample.get("messages"), list):
        doc.ledger.drop("sample without a message list")
        return doc.skip(f"expected an Inspect sample with 'messages', got {kind_of(sample)}", where)
    if sample.get("events"):
        doc.ledger.ignore("sample events (the transcript) repeat its messages", len(sample["events"]))
    steps = _steps(doc, sample["messages"])
    built = steps.build()
    if not built:
        return doc.skip("sample has no messages", where)
    spec = log["eval"]
    reward, scores = _reward(sample.get("scores"))
    sample_id = string_id(sample.get("id")) or where
    extra: JSONObject = {"task_id": sample_id, "epoch": sample.get("epoch"), "inspect_task": spec.get("task")}
    if scores is not None:
        extra["scores"] = scores
    if sample.get("error"):
        extra["error"] = text_of(sample["error"].get("message") if isinstance(sample["error"], dict) else sample["error"])[:2000]
    run = spec.get("eval_id") or spec.get("run_id") or spec.get("task_id") or "run"
    return Trace(
        id=f"{spec.get('task')}-{run}-{sample_id}-epoch-{sample.get('epoch', 1)}",
        task=text_of(sample.get("input")) or steps.first_message("user"),
        agent="Inspect AI",
        model=spec.get("model") if isinstance(spec.get("model"), str) else None,
        steps=built,
        reward=reward,
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


def _steps(doc: Document, messages: list[JSONValue]) -> StepList:
    steps = StepList()
    for message in messages:
        doc.ledger.saw(records=1)
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant", "tool"):
            doc.ledger.drop("message without a known role")
            continue
        if role == "tool":
            doc.ledger.saw(results=1)
            error = message.get("error")
            content = text_of(message.get("content"))
            detail = text_of(error.get("message")) if isinstance(error, dict) else ""
            if detail and detail not in content:
                content = f"{content}\n{detail}".strip()
            steps.attach(Observation(call_id=string_id(message.get("tool_call_id")), content=content, is_error=bool(error) or looks_like_error(content)))
            continue
        text, reasoning = _content(message.get("content"))
        if role != "assistant":
            steps.add(role, text)
            continue
        index = steps.add("agent", text, reasoning=reasoning or None)
        for call in message.get("tool_calls") or []:
            doc.ledger.saw(calls=1)
            if not isinstance(call, dict):
                doc.ledger.drop("tool call is not an object", calls=1)
                continue
            steps.add_call(index, ToolCall(id=string_id(call.get("id")), name=str(call.get("function") or "tool"),
                                           arguments=arguments_text(call.get("arguments"))))
    return steps


def _content(content: JSONValue) -> tuple[str, str]:
    """Visible text and reasoning of a message content (a string or a list of parts)."""
    if not isinstance(content, list):
        return text_of(content), ""
    text = [text_of(p) for p in content if not (isinstance(p, dict) and p.get("type") == "reasoning")]
    reasoning = [str(p.get("reasoning") or p.get("summary") or "") for p in content if isinstance(p, dict) and p.get("type") == "reasoning"]
    return "\n".join(t for t in text if t), "\n\n".join(r for r in reasoning if r)


def _reward(scores: JSONValue) -> tuple[float | None, JSONObject | None]:
    """The reward of the first scorer's value (see the module docstring) and all values."""
    if not isinstance(scores, dict) or not scores:
        return None, None
    values = {name: s.get("value") if isinstance(s, dict) else s for name, s in scores.items()}
    value = next(iter(values.values()))
    if isinstance(value, bool):
        return float(value), values
    if isinstance(value, (int, float)):
        return float(value), values
    if isinstance(value, str):
        if value.strip().lower() in _LETTERS:
            return _LETTERS[value.strip().lower()], values
        try:
            return float(value), values
        except ValueError:
            return None, values
    return None, values
