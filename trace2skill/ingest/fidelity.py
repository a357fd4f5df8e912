"""Per-file fidelity: what each input file holds, and what was read from it.

Two independent sides meet here. The reader fills the document's `Ledger` as it meets raw
records (lines, messages, events, spans; the tool calls and tool results inside them) and
names every record it leaves out (`ignored`, by rule) or cannot use (`dropped`, by reason).
This module counts what was *read* from the traces the reader yielded: steps, tool calls
(sub-agent sidechains included), tool results, results paired with a call, results flagged as
errors. A file loses calls when it holds more than were read and no ignored or dropped record
explains the gap; `ingest --check --strict` fails on that, and on any dropped record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..types import JSONObject, JSONValue, Skip, Trace
from .base import Ledger

LOSS_WARNING = 0.01
"""A file that lost more than this share of its tool calls is named in `distill`'s warnings."""


@dataclass
class FileFidelity:
    """One input file's accounting (one row of `ingest --check`)."""

    file: str
    format: str | None = None
    version: str | None = None
    records: int = 0
    steps: int = 0
    calls_in_file: int = 0
    calls_read: int = 0
    results_in_file: int = 0
    results_read: int = 0
    results_paired: int = 0
    errors: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    explained_calls: int = 0
    explained_results: int = 0
    counted: bool = False
    """False when the reader kept no ledger (the file side is then unknown, not zero)."""

    @property
    def unexplained_calls(self) -> int:
        return max(0, self.calls_in_file - self.calls_read - self.explained_calls) if self.counted else 0

    @property
    def unexplained_results(self) -> int:
        return max(0, self.results_in_file - self.results_read - self.explained_results) if self.counted else 0

    @property
    def calls_lost(self) -> float:
        """Share of the file's calls not read (explained or not); 0 when nothing was counted."""
        return (self.calls_in_file - self.calls_read) / self.calls_in_file if self.counted and self.calls_in_file else 0.0

    @property
    def clean(self) -> bool:
        """Every record read or explained by a rule: what `--strict` requires."""
        return not self.dropped and not self.unexplained_calls and not self.unexplained_results

    def to_dict(self) -> JSONObject:
        out = {k: v for k, v in self.__dict__.items()}
        out.update(unexplained_calls=self.unexplained_calls, unexplained_results=self.unexplained_results, clean=self.clean)
        return out


def add_trace(row: FileFidelity, trace: Trace) -> None:
    """Count what was read from one trace (its sub-agent sidechains too).

    The trace's own steps are read as objects; a sidechain's steps are the plain dicts kept
    in `extra["sidechains"]`. Both give the same `(call ids, result pairs)` view."""
    row.format = row.format or trace.format
    row.steps += len(trace.steps)
    calls: list[object] = [c.id for s in trace.steps for c in s.tool_calls]
    results: list[tuple[object, object]] = [(o.call_id, o.is_error) for s in trace.steps for o in s.observations]
    sidechains = trace.extra.get("sidechains") if isinstance(trace.extra.get("sidechains"), list) else []
    for side in sidechains:
        if isinstance(side, dict) and isinstance(side.get("steps"), list):
            for step in (s for s in side["steps"] if isinstance(s, dict)):
                calls += [c.get("id") for c in step.get("tool_calls") or () if isinstance(c, dict)]
                row.calls_read += sum(not isinstance(c, dict) for c in step.get("tool_calls") or ())
                results += [(o.get("call_id"), o.get("is_error")) if isinstance(o, dict) else (None, None)
                            for o in step.get("observations") or ()]
    row.calls_read += len(calls)
    known = set(calls)
    row.results_read += len(results)
    row.results_paired += sum(call_id is not None and call_id in known for call_id, _ in results)
    row.errors += sum(is_error is True for _, is_error in results)


def add_skip(row: FileFidelity, skip: Skip) -> None:
    row.dropped[skip.reason] = row.dropped.get(skip.reason, 0) + 1


def finish(row: FileFidelity, ledger: Ledger, format_name: str | None) -> FileFidelity:
    """Copy the reader's side of the accounting into the row."""
    row.format = format_name or row.format
    row.version = ledger.version
    row.counted = ledger.records > 0
    row.records = ledger.records
    row.calls_in_file, row.results_in_file = ledger.calls, ledger.results
    row.explained_calls, row.explained_results = ledger.explained_calls, ledger.explained_results
    row.ignored = dict(sorted(ledger.ignored.items()))
    merged = Counter(row.dropped)
    merged.update(ledger.dropped)
    row.dropped = dict(sorted(merged.items()))
    return row


def merged(first: FileFidelity, then: FileFidelity) -> FileFidelity:
    """One file's row from the rows of two consecutive byte ranges of it (`stream.plan_shards`):
    counts add up, the version is the later one's when it read a record (a whole-file read keeps the
    last record's)."""
    def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        both = Counter(a)
        both.update(b)
        return dict(sorted(both.items()))

    return FileFidelity(
        file=first.file, format=first.format or then.format, version=then.version if then.records else first.version,
        records=first.records + then.records, steps=first.steps + then.steps,
        calls_in_file=first.calls_in_file + then.calls_in_file, calls_read=first.calls_read + then.calls_read,
        results_in_file=first.results_in_file + then.results_in_file, results_read=first.results_read + then.results_read,
        results_paired=first.results_paired + then.results_paired, errors=first.errors + then.errors,
        ignored=add(first.ignored, then.ignored), dropped=add(first.dropped, then.dropped),
        explained_calls=first.explained_calls + then.explained_calls,
        explained_results=first.explained_results + then.explained_results, counted=first.counted or then.counted,
    )


def summary(rows: Iterable[FileFidelity]) -> JSONObject:
    """Totals over files, and the files that lost more than `LOSS_WARNING` of their calls."""
    totals = Totals()
    for row in rows:
        totals.add(row)
    return totals.as_json()


@dataclass
class Totals:
    """`summary`'s totals, folded in one file at a time: a run adds each file as it reads it
    instead of keeping a row per file."""

    files: int = 0
    files_counted: int = 0
    calls_in_files: int = 0
    calls_read: int = 0
    results_in_files: int = 0
    results_read: int = 0
    errors_flagged: int = 0
    unexplained_calls: int = 0
    dropped: int = 0
    lossy_files: list[str] = field(default_factory=list)

    def add(self, row: FileFidelity) -> None:
        self.files += 1
        self.errors_flagged += row.errors
        self.unexplained_calls += row.unexplained_calls
        self.dropped += sum(row.dropped.values())
        if row.counted:
            self.files_counted += 1
            self.calls_in_files += row.calls_in_file
            self.calls_read += row.calls_read
            self.results_in_files += row.results_in_file
            self.results_read += row.results_read
            if lossy(row):
                self.lossy_files.append(row.file)

    def as_json(self) -> JSONObject:
        return {"files": self.files, "files_counted": self.files_counted, "calls_in_files": self.calls_in_files,
                "calls_read": self.calls_read, "results_in_files": self.results_in_files, "results_read": self.results_read,
                "errors_flagged": self.errors_flagged, "unexplained_calls": self.unexplained_calls, "dropped": self.dropped,
                "lossy_files": list(self.lossy_files)}


def lossy(row: FileFidelity) -> bool:
    """Whether `loss_warnings` says something about this file."""
    return row.counted and row.calls_lost > LOSS_WARNING


def summary_line(totals: Mapping[str, JSONValue]) -> str:
    """The one-line fidelity summary `distill` and `refresh` print."""
    line = (f"fidelity: {totals['calls_read']}/{totals['calls_in_files']} tool calls and "
            f"{totals['results_read']}/{totals['results_in_files']} results read from {totals['files_counted']} counted "
            f"file(s) of {totals['files']}; {totals['errors_flagged']} errors flagged; {totals['dropped']} record(s) dropped")
    if totals["unexplained_calls"]:
        line += f"; {totals['unexplained_calls']} call(s) lost without a reason"
    return line


def loss_warnings(rows: Iterable[FileFidelity]) -> list[str]:
    """A warning per file that lost more than 1 % of its calls, with the reasons it gives."""
    out = []
    for row in rows:
        if lossy(row):
            why = ", ".join(sorted(set(row.ignored) | set(row.dropped))[:3]) or "no reason given"
            out.append(f"{row.file}: read {row.calls_read} of {row.calls_in_file} tool calls "
                       f"({row.calls_lost:.0%} not read; {why}); see `trace2skill ingest --check`")
    return out
