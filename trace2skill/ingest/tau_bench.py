"""tau-bench style result records: `[{task_id, trial, reward, info, traj}]`.

Each record is one trajectory: `traj` is an OpenAI chat conversation (policy prompt, the
simulated user, the agent's tool calls and the tool replies), `reward` is the environment's
score and `info.task.instruction` the user's goal. The records come as a JSON list or as
JSONL, one record per line.

The reader keeps the reward and leaves the outcome `unknown`; the ingest core turns a reward
into success or failure with `config.analyse.success_threshold`, the same rule for every
format. The trace id is `task-<task_id>-trial-<trial>`, so trials of one task stay apart.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..types import JSONObject, JSONValue, Skip, SourceRef, Trace
from ._steps import kind_of
from .base import Document, Sample, read_each
from .openai_chat import build_steps

NAME = "tau_bench"


def is_record(value: JSONValue) -> bool:
    return isinstance(value, dict) and isinstance(value.get("traj"), list) and ("task_id" in value or "reward" in value)


def sniff(sample: Sample) -> bool:
    if isinstance(sample, list):
        return bool(sample) and is_record(sample[0])
    return is_record(sample)


def lines_stand_alone(first: JSONValue) -> bool:
    """Each JSONL line is read on its own, so a large file may be cut into byte ranges (`stream.plan_shards`)."""
    return True


def read(doc: Document) -> Iterator[Trace | Skip]:
    return read_each(doc, _read_record, split_lists=True)


def _read_record(doc: Document, record: JSONValue, where: str | None) -> Iterator[Trace | Skip]:
    if not is_record(record):
        yield doc.skip(f"expected a record with a 'traj' message list, got {_describe(record)}", where)
        return
    problems: list[Skip] = []
    built = build_steps(record["traj"], lambda i, why: problems.append(doc.skip(f"traj message {i}: {why}", where)), doc.ledger)
    yield from problems
    steps = built.build()
    if not steps:
        yield doc.skip("'traj' holds no usable messages", where)
        return
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    task = info.get("task") if isinstance(info.get("task"), dict) else {}
    instruction = task.get("instruction")
    reward = record.get("reward")
    extra: JSONObject = {"task_id": record.get("task_id"), "trial": record.get("trial")}
    if "reward_info" in info:
        extra["reward_info"] = info["reward_info"]
    yield Trace(
        id=f"task-{record.get('task_id')}-trial-{record.get('trial', 0)}",
        task=instruction if isinstance(instruction, str) else built.first_message("user"),
        agent="tau-bench",
        steps=steps,
        reward=float(reward) if isinstance(reward, (int, float)) and not isinstance(reward, bool) else None,
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra=extra,
    )


def _describe(value: JSONValue) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:8]}"
    return kind_of(value)
