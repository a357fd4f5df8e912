"""Outcome labels: join each trajectory to whether it succeeded.

Most formats store the verdict outside the trajectory, so a label can come from three
places, and when they disagree the more deliberate one wins:

1. an explicit labels file (`--labels FILE`): JSON (a mapping `{id: verdict}`, a list of
   `{id, outcome|resolved|reward}` objects, or any results shape below) or CSV with an id
   column and an outcome, resolved or reward column;
2. results files found next to the inputs: mini-swe-agent `results_summary.json`
   (`instances: [{instance_id, resolved}]`), SWE-bench `report.json` (per instance, or one
   keyed by instance id) and sb-cli / harness reports (`resolved_ids`, `unresolved_ids`);
3. the trajectory itself: an outcome the reader found, else its reward.

A reward becomes success when it is at or above `success_threshold`, wherever it comes from.
Labels join on the trace id, then on `extra["instance_id"]` and `extra["task_id"]`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, TraceFormatError
from .base import Document
from .documents import Source, iter_sources, open_document, open_regular
from ..types import JSONObject, JSONValue, Outcome, Trace

RESULT_FILE_NAMES = ("results_summary.json", "report.json")
_ID_COLUMNS = ("id", "trace_id", "trajectory_id", "instance_id", "task_id")
_VERDICT_KEYS = ("outcome", "label", "status", "resolved", "success", "passed", "reward", "score")
_SUCCESS = {"success", "succeeded", "pass", "passed", "resolved", "true", "yes"}
_FAILURE = {"failure", "failed", "fail", "unresolved", "false", "no", "error"}
_ANCESTOR_LEVELS = 3


@dataclass(frozen=True)
class Label:
    outcome: Outcome
    reward: float | None = None
    origin: str = ""
    """File the label came from."""


@dataclass(frozen=True)
class LabelBook:
    """Labels by trace id, in two ranks: an explicit labels file over discovered results files."""

    explicit: Mapping[str, Label] = field(default_factory=dict)
    discovered: Mapping[str, Label] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    threshold: float = 1.0

    def __post_init__(self) -> None:
        plain = {Path(s).resolve() for s in self.sources if "!" not in s}
        object.__setattr__(self, "_known", frozenset(self.sources) | frozenset(map(str, plain)))

    def is_source(self, path: str) -> bool:
        """Whether `path` is one of the label files already read (so not a trajectory)."""
        known: frozenset[str] = self._known  # type: ignore[attr-defined]
        return path in known or ("!" not in path and str(Path(path).resolve()) in known)

    def lookup(self, trace: Trace) -> Label | None:
        keys = [trace.id] + [str(trace.extra[k]) for k in ("instance_id", "task_id") if trace.extra.get(k) is not None]
        for rank in (self.explicit, self.discovered):
            for key in keys:
                if key in rank:
                    return rank[key]
        return None

    def apply(self, trace: Trace) -> Trace:
        """The trace with its outcome (and reward) set by the highest-ranked label source."""
        label = self.lookup(trace)
        if label is not None:
            reward = label.reward if label.reward is not None else trace.reward
            extra = {**trace.extra, "label_source": label.origin}
            return trace.model_copy(update={"outcome": label.outcome, "reward": reward, "extra": extra})
        if trace.outcome == "unknown" and trace.reward is not None:
            return trace.model_copy(update={"outcome": _by_threshold(trace.reward, self.threshold)})
        return trace


def build_label_book(
    paths: Iterable[str | os.PathLike[str]], labels_file: Path | None = None, threshold: float = 1.0
) -> LabelBook:
    """Collect labels from `labels_file` (if any) and from results files near `paths`.

    Raises:
        ConfigError: the labels file does not exist.
        TraceFormatError: the labels file cannot be parsed or has rows without a verdict.
    """
    paths = list(paths)
    explicit = read_labels_file(labels_file, threshold) if labels_file is not None else {}
    discovered: dict[str, Label] = {}
    sources: list[str] = [str(labels_file)] if labels_file is not None else []
    for source in discover_result_files(paths):
        doc = open_document(source)
        found = label_document(doc.value(), source.path, threshold) if isinstance(doc, Document) and doc.kind == "json" else None
        if found:
            discovered.update(found)
            sources.append(source.path)
    return LabelBook(explicit, discovered, tuple(sources), threshold)


def discover_result_files(paths: list[str | os.PathLike[str]]) -> list[Source]:
    """Results files inside the inputs (by name) and `results_summary.json` just above them."""
    found: dict[str, Source] = {}
    seen: set[Path] = set()
    for source in iter_sources(paths):
        if isinstance(source, Source) and _is_result_name(source.path):
            found.setdefault(source.path, source)
            if Path(source.path).is_file():
                seen.add(Path(source.path).resolve())
    for raw in paths:
        here = Path(os.path.realpath(raw)).parent  # never raises, even on a symlink loop
        for _ in range(_ANCESTOR_LEVELS):
            candidate = here / "results_summary.json"
            if candidate not in seen and candidate.is_file():
                seen.add(candidate)
                found[str(candidate)] = Source(str(candidate), candidate.name, lambda c=candidate: open_regular(c))
            here = here.parent
    return [found[key] for key in sorted(found)]


def _is_result_name(path: str) -> bool:
    member = PurePosixPath(path.replace("\\", "/").rsplit("!", 1)[-1])
    return member.name in RESULT_FILE_NAMES or member.parent.name == "sb-cli-reports"


def label_document(value: JSONValue, path: str, threshold: float = 1.0) -> dict[str, Label] | None:
    """Labels from a results-file shape, or None when `value` is not one."""
    if not isinstance(value, dict):
        return None
    instances = value.get("instances")
    if isinstance(instances, list) and instances and all(isinstance(i, dict) and "instance_id" in i for i in instances[:3]):
        return _from_rows(instances, path, threshold)
    if isinstance(value.get("resolved_ids"), list) and isinstance(value.get("unresolved_ids"), list):
        labels = {str(i): Label("success", origin=path) for i in value["resolved_ids"]}
        labels.update({str(i): Label("failure", origin=path) for i in value["unresolved_ids"]})
        return labels
    if isinstance(value.get("resolved"), bool) and ("tests_status" in value or "patch_successfully_applied" in value):
        instance = PurePosixPath(path.replace("\\", "/")).parent.name
        return {instance: Label("success" if value["resolved"] else "failure", origin=path)}
    entries = list(value.values())[:3]
    if entries and all(isinstance(e, dict) and isinstance(e.get("resolved"), bool) for e in entries):
        return {
            str(k): Label("success" if v["resolved"] else "failure", origin=path)
            for k, v in value.items()
            if isinstance(v, dict) and isinstance(v.get("resolved"), bool)
        }
    return None


def read_labels_file(path: Path, threshold: float = 1.0) -> dict[str, Label]:
    """Parse an explicit labels file (JSON or CSV; see the module docstring)."""
    if not path.is_file():
        problem = "is a folder, not a JSON or CSV file" if path.is_dir() else "does not exist"
        raise ConfigError(f"labels file {str(path)!r} {problem}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"cannot read labels file {str(path)!r}: {exc}") from None
    if path.suffix.lower() == ".csv":
        return _from_rows(list(csv.DictReader(text.splitlines())), str(path), threshold, strict=True)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TraceFormatError(f"labels file {str(path)!r} is neither CSV nor valid JSON: {exc}") from None
    known = label_document(value, str(path), threshold)
    if known is not None:
        return known
    if isinstance(value, list):
        return _from_rows(value, str(path), threshold, strict=True)
    if isinstance(value, dict):
        return _from_mapping(value, str(path), threshold)
    raise TraceFormatError(f"labels file {str(path)!r} must hold an object or a list, not {type(value).__name__}")


def _from_mapping(value: JSONObject, origin: str, threshold: float) -> dict[str, Label]:
    labels, problems = {}, []
    for key, verdict in value.items():
        label = to_label(verdict, threshold, origin)
        if label is None:
            problems.append(f"{key!r}: cannot read a verdict from {verdict!r}")
        else:
            labels[str(key)] = label
    _raise_problems(origin, problems)
    return labels


def _from_rows(rows: list[JSONValue], origin: str, threshold: float, strict: bool = False) -> dict[str, Label]:
    labels, problems = {}, []
    for n, row in enumerate(rows, start=1):
        ident = next((row[c] for c in _ID_COLUMNS if isinstance(row, dict) and row.get(c) not in (None, "")), None)
        verdict = {k: row[k] for k in _VERDICT_KEYS if isinstance(row, dict) and row.get(k) not in (None, "")}
        label = to_label(verdict, threshold, origin) if ident is not None else None
        if label is None:
            problems.append(f"row {n}: needs an id column {_ID_COLUMNS} and one of {_VERDICT_KEYS}, got {row!r}")
        else:
            labels[str(ident)] = label
    if strict:
        _raise_problems(origin, problems)
    return labels


def _raise_problems(origin: str, problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise TraceFormatError(f"labels file {origin!r}: {shown}")


def to_label(value: JSONValue, threshold: float = 1.0, origin: str = "") -> Label | None:
    """A label from a verdict: bool, reward number, word, or an object holding one of those."""
    if isinstance(value, bool):
        return Label("success" if value else "failure", origin=origin)
    if isinstance(value, (int, float)):
        return Label(_by_threshold(float(value), threshold), float(value), origin)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _SUCCESS or word in _FAILURE or word == "unknown":
            return Label("success" if word in _SUCCESS else "failure" if word in _FAILURE else "unknown", origin=origin)
        try:
            return to_label(float(word), threshold, origin)
        except ValueError:
            return None
    if isinstance(value, dict):
        for key in _VERDICT_KEYS:
            if key in value:
                found = to_label(value[key], threshold, origin)
                if found is not None:
                    return found
    return None


def _by_threshold(reward: float, threshold: float) -> Outcome:
    return "success" if reward >= threshold else "failure"
