"""What a trace reader is, and the document it reads.

The ingest core opens files (folders, `.gz`, `.zip`), decodes them and hands each reader a
`Document`: either one JSON value (`kind == "json"`) or a stream of JSONL records
(`kind == "jsonl"`), never the raw bytes, so no reader deals with compression, encodings or
broken lines. A reader module defines:

    NAME: str                                   # the --format name
    def sniff(sample: Any) -> bool              # does this first value look like my format?
    def read(doc: Document) -> Iterator[Trace | Skip]

`sample` is the whole value for a JSON document and the first parsed record for JSONL. A
reader yields a `Skip` with a precise reason for each record it cannot use, and carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..types import Skip, Trace


@dataclass
class Document:
    """One decoded input: a JSON value, or a stream of JSONL records."""

    path: str
    """Path shown to users; for archive members `archive.zip!member.jsonl`."""
    kind: Literal["json", "jsonl"]
    _value: Any = None
    _records: Callable[[], Iterator[tuple[int, Any] | Skip]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def value(self) -> Any:
        """The parsed JSON value (json documents only)."""
        if self.kind != "json":
            raise TypeError(f"{self.path!r} is JSONL; iterate records() instead")
        return self._value

    def records(self) -> Iterator[tuple[int, Any] | Skip]:
        """Yield `(line_number, value)` for each JSONL line, or a `Skip` for a broken one.

        Re-iterable: each call reads the file again, so readers may make two passes
        (Claude Code sessions need the whole parent graph) without holding the file in memory.
        """
        if self.kind != "jsonl" or self._records is None:
            raise TypeError(f"{self.path!r} is JSON; use value() instead")
        return self._records()

    def skip(self, reason: str, record: str | int | None = None) -> Skip:
        return Skip(path=self.path, record=None if record is None else str(record), reason=reason)


def read_each(
    doc: Document, read_one: Callable[[Document, Any, str | None], Iterator[Trace | Skip]], *, split_lists: bool = False,
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
    NAME: str

    def sniff(self, sample: Any) -> bool: ...

    def read(self, doc: Document) -> Iterator[Trace | Skip]: ...
