"""What a trace reader is, and the document it reads.

The ingest core opens files (folders, `.gz`, `.zip`), decodes them and hands each reader a
`Document`: one JSON value (`kind == "json"`), a stream of JSONL records (`kind == "jsonl"`),
a zip archive read as one log (`kind == "zip"`: Inspect AI `.eval` files, whose members are
read as JSON through `doc.archive()`), or Markdown chat history (`kind == "text"`: Aider and
SpecStory exports, recognised by their signature line) or a SQLite store named on the command
line (`kind == "sqlite"`, a `SQLiteFile`), never the raw bytes, so no reader
deals with compression, encodings or broken lines. A reader module defines:

    NAME: str                                   # the --format name
    def sniff(sample: Sample) -> bool           # does this first value look like my format?
    def read(doc: Document) -> Iterator[Trace | Skip]

`sample` is the whole value for a JSON document, the first parsed record for JSONL, the
`ZipLog` for a zip document, the text for a text document and the `SQLiteFile` for sqlite. A
reader yields a `Skip` with a precise reason for each record it cannot use, and carries on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
import sqlite3
from typing import Literal, Protocol, TypeAlias

from ..types import JSONObject, JSONValue, Skip, Trace


class ArchiveLog(Protocol):
    """A zip document's value (`documents.ZipLog`): member names, and members parsed as JSON."""

    def names(self) -> list[str]: ...

    def json(self, member: str) -> JSONValue | Skip: ...


class SQLiteStore(Protocol):
    """A sqlite document's value (`documents.SQLiteFile`): a trace store opened read-only."""

    path: str

    def connect(self) -> sqlite3.Connection: ...

    def tables(self) -> set[str]: ...


Sample: TypeAlias = JSONValue | ArchiveLog | SQLiteStore
"""What a reader's `sniff` is shown and what `Document.value()` holds: JSON as read (a text
document's value is its text), a zip log or a SQLite store. Protocols stand for the last two
because `documents` imports this module."""


@dataclass
class Ledger:
    """What one document holds and what its reader did with it: the fidelity accounting.

    A reader counts the raw records of its input as it meets them (`saw`), independently of
    what it turns into steps, and explains every record it does not use: `ignore` for records
    left out on purpose (with the rule, e.g. "hook progress events carry no agent action"),
    `drop` for records it could not use (`ingest --check --strict` fails on those). What was
    read (steps, calls, results paired, errors flagged) is counted by the ingest core from the
    traces the reader yields, so the two sides are independent.
    """

    version: str | None = None
    """The format version the file declares or the reader recognised, when known."""
    records: int = 0
    """Raw records in the file: lines, messages, events or spans (the reader's unit)."""
    calls: int = 0
    """Tool calls present in the raw file."""
    results: int = 0
    """Tool results present in the raw file."""
    ignored: Counter[str] = field(default_factory=Counter)
    """Records left out on purpose, by rule."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Records that could not be used, by reason. A `Skip` the reader yields is counted as
    dropped by the ingest core: do not also `drop` the record it names."""
    explained_calls: int = 0
    """Tool calls inside ignored or dropped records (so a call gap they explain is not a loss)."""
    explained_results: int = 0
    """Tool results inside ignored or dropped records."""

    def saw(self, records: int = 0, calls: int = 0, results: int = 0) -> None:
        self.records += records
        self.calls += calls
        self.results += results

    def ignore(self, rule: str, n: int = 1, *, calls: int = 0, results: int = 0) -> None:
        """Leave `n` records out on purpose, by `rule`; `calls`/`results` they held."""
        self.ignored[rule] += n
        self.explained_calls += calls
        self.explained_results += results

    def drop(self, reason: str, n: int = 1, *, calls: int = 0, results: int = 0) -> None:
        """`n` records could not be used, for `reason`; `calls`/`results` they held."""
        self.dropped[reason] += n
        self.explained_calls += calls
        self.explained_results += results


@dataclass
class Document:
    """One decoded input: a JSON value, or a stream of JSONL records."""

    path: str
    """Path shown to users; for archive members `archive.zip!member.jsonl`."""
    kind: Literal["json", "jsonl", "zip", "text", "sqlite"]
    _value: Sample = None
    _records: Callable[[], Iterator[tuple[int, JSONValue] | Skip]] | None = None
    _some_records: Callable[[Collection[int]], Iterator[tuple[int, JSONValue] | Skip]] | None = None
    """`_records` limited to some line numbers, parsing only those (optional)."""
    meta: JSONObject = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    """The reader's accounting for this document (see `Ledger`)."""

    def value(self) -> Sample:
        """The parsed JSON value (json), the `ZipLog` (zip), the text (text) or the `SQLiteFile` (sqlite)."""
        if self.kind == "jsonl":
            raise TypeError(f"{self.path!r} is JSONL; iterate records() instead")
        return self._value

    def records(self, only: Collection[int] | None = None) -> Iterator[tuple[int, JSONValue] | Skip]:
        """Yield `(line_number, value)` for each JSONL line, or a `Skip` for a broken one.

        Re-iterable: each call reads the file again, so readers may make two passes
        (Claude Code sessions need the whole parent graph) without holding the file in memory.
        A second pass that knows which lines it needs passes their numbers as `only`: the
        other lines are not parsed again, and reading stops after the last of them.
        """
        if self.kind != "jsonl" or self._records is None:
            raise TypeError(f"{self.path!r} is JSON; use value() instead")
        if only is None:
            return self._records()
        if self._some_records is not None:
            return self._some_records(only)
        return (entry for entry in self._records() if isinstance(entry, Skip) or entry[0] in only)

    def skip(self, reason: str, record: str | int | None = None) -> Skip:
        return Skip(path=self.path, record=None if record is None else str(record), reason=reason)


def read_each(
    doc: Document, read_one: Callable[[Document, JSONValue, str | None], Iterator[Trace | Skip]], *, split_lists: bool = False,
) -> Iterator[Trace | Skip]:
    """Apply `read_one(doc, value, where)` to the document's value, or to each JSONL line.

    With `split_lists`, a JSON list is read as one record per item (`item N`).
    """
    if doc.kind == "json":
        value = doc.value()
        if split_lists and isinstance(value, list):
            for index, item in enumerate(value):
                yield from read_one(doc, item, f"item {index}")
        else:
            yield from read_one(doc, value, None)
        return
    for entry in doc.records():
        if isinstance(entry, Skip):
            yield entry
        else:
            yield from read_one(doc, entry[1], f"line {entry[0]}")


class Reader(Protocol):
    """A reader module (`ingest/<format>.py`, see the module docstring): modules match it by shape."""

    NAME: str

    def sniff(self, sample: Sample) -> bool: ...

    def read(self, doc: Document) -> Iterator[Trace | Skip]: ...
