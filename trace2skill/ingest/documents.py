"""Turn input paths into decoded `Document`s, streaming, without trusting a single byte.

Inputs are files, folders (walked recursively in sorted order, hidden entries left out),
`.gz` files and `.zip` archives (members in name order). Inside folders and archives only
names ending in `.json`, `.jsonl`, `.ndjson`, `.traj`, `.gz` or `.zip` are considered, since
READMEs and logs sit beside real dumps; a file named explicitly is always read. A file is JSONL when its name says
so (`.jsonl`, `.ndjson`) or when its content is several JSON values on separate lines;
otherwise it is one JSON value. JSONL is read line by line, so a dump of any size costs
memory for one line at a time; a whole-file JSON parse, and any single JSONL line, is capped
at `max_bytes` (64 MiB by default) so a huge file becomes a `Skip` instead of a memory spike.

Everything that cannot be decoded (missing path, bad archive, binary or non-UTF-8 bytes,
empty file, truncated or invalid JSON, nesting deep enough to hit Python's recursion
limit, an over-long line) is yielded as a `Skip` naming the file, the line when there is
one, and what is wrong. Nothing here raises for bad input.
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..types import Skip
from .base import Document

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
JSONL_SUFFIXES = (".jsonl", ".ndjson")
WALKED_SUFFIXES = (".json", ".jsonl", ".ndjson", ".traj", ".gz", ".zip")
_BINARY_PROBE = 8192
_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile)


@dataclass(frozen=True)
class Source:
    """One readable byte stream: a plain file, a gzip file or an archive member."""

    path: str
    """Path shown to users (`archive.zip!member.json` for members)."""
    name: str
    """File name with any `.gz` removed, used to recognise JSONL by its suffix."""
    open: Callable[[], IO[bytes]]


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Source | Skip]:
    """Expand paths into byte sources: folders walked, archives opened, order deterministic.

    A file reached twice (the same path given twice, or a file inside a folder also given) is
    read once: its records would otherwise all come back as duplicates of themselves.
    """
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            yield Skip(path=str(path), reason="path does not exist")
            continue
        for file in walk_folder(path) if path.is_dir() else [path]:
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                yield from _file_sources(file)


def walk_folder(folder: Path) -> Iterator[Path]:
    """Files under `folder` that may hold traces, in sorted order, hidden entries skipped."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(WALKED_SUFFIXES):
                yield Path(root) / name


def _file_sources(path: Path) -> Iterator[Source | Skip]:
    lower = path.name.lower()
    if lower.endswith(".zip"):
        yield from _zip_sources(path)
    elif lower.endswith(".gz"):
        yield Source(str(path), path.name[:-3], lambda: gzip.open(path, "rb"))
    else:
        yield Source(str(path), path.name, lambda: open(path, "rb"))


def _zip_sources(path: Path) -> Iterator[Source | Skip]:
    archive = _Archive(path)
    try:
        names = archive.member_names()
    except (zipfile.BadZipFile, OSError) as exc:
        yield Skip(path=str(path), reason=f"not a readable zip archive: {exc}")
        return
    try:
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.startswith(".") or "__MACOSX/" in name or not base.lower().endswith(WALKED_SUFFIXES):
                continue
            shown = f"{path}!{name}"
            if base.lower().endswith(".zip"):
                yield Skip(path=shown, reason="nested zip archives are not read; extract the inner archive first")
            elif base.lower().endswith(".gz"):
                yield Source(shown, base[:-3], lambda n=name: gzip.GzipFile(fileobj=archive.open(n), mode="rb"))
            else:
                yield Source(shown, base, lambda n=name: archive.open(n))
    finally:
        archive.close()


class _Archive:
    """One open zip file shared by all its members while they are read in order.

    Re-opening the archive per member would re-read its whole central directory each time
    (quadratic in the member count); a member re-read after the walk reopens it on demand.
    """

    def __init__(self, path: Path):
        self._path = path
        self._zip: zipfile.ZipFile | None = None

    def _file(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self._path)
        return self._zip

    def member_names(self) -> list[str]:
        return sorted(info.filename for info in self._file().infolist() if not info.is_dir())

    def open(self, member: str) -> IO[bytes]:
        return self._file().open(member)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def iter_documents(
    paths: Iterable[str | os.PathLike[str]], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[Document | Skip]:
    """Yield one `Document` per readable input, or a `Skip` saying why it is not readable.

    Args:
        paths: files, folders, `.gz` or `.zip` files, in the order given.
        max_bytes: cap on a whole-file JSON parse and on any single JSONL line.

    Returns:
        An iterator; JSONL documents are read lazily when their records are iterated.
    """
    for source in iter_sources(paths):
        if isinstance(source, Skip):
            yield source
        else:
            yield open_document(source, max_bytes=max_bytes)


def open_document(source: Source, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document | Skip:
    """Decode one source as JSON or JSONL (see the module docstring for the rules)."""
    is_jsonl = source.name.lower().endswith(JSONL_SUFFIXES)
    try:
        with source.open() as stream:
            head = stream.read(_BINARY_PROBE)
            if not is_jsonl:
                head += stream.read(max_bytes + 1 - len(head))
    except _READ_ERRORS as exc:
        return Skip(path=source.path, reason=f"cannot read: {exc}")
    problem = _bytes_problem(head[:_BINARY_PROBE])
    if problem:
        return Skip(path=source.path, reason=problem)
    if not head.strip() and (not is_jsonl or len(head) < _BINARY_PROBE):
        return Skip(path=source.path, reason="empty file")
    if is_jsonl:
        return _jsonl_document(source, max_bytes)
    if len(head) > max_bytes:
        if _looks_like_jsonl(head, max_bytes):
            return _jsonl_document(source, max_bytes)
        return Skip(
            path=source.path,
            reason=f"file is larger than the {_mib(max_bytes)} cap for a single JSON value; "
            "write it as JSONL (one trajectory per line) or raise the cap",
        )
    return _json_document(source, head, max_bytes)


def _json_document(source: Source, data: bytes, max_bytes: int) -> Document | Skip:
    text, problem = _decode(data)
    if problem:
        return Skip(path=source.path, reason=problem)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _looks_like_jsonl(data, max_bytes):
            return _jsonl_document(source, max_bytes)
        return Skip(path=source.path, record=f"line {exc.lineno}", reason=_json_error(exc, text))
    except RecursionError:
        return Skip(path=source.path, reason="JSON is nested too deeply to parse (recursion limit)")
    return Document(path=source.path, kind="json", _value=value)


def _jsonl_document(source: Source, max_bytes: int) -> Document:
    return Document(path=source.path, kind="jsonl", _records=lambda: _jsonl_records(source, max_bytes))


def _jsonl_records(source: Source, max_bytes: int) -> Iterator[tuple[int, Any] | Skip]:
    line_no = 0
    try:
        with source.open() as stream:
            while True:
                line = stream.readline(max_bytes + 1)
                if not line:
                    return
                line_no += 1
                if len(line) > max_bytes and not line.endswith(b"\n"):
                    dropped = len(line) + _discard_rest_of_line(stream)
                    yield Skip(
                        path=source.path,
                        record=f"line {line_no}",
                        reason=f"line is {dropped:,} bytes, above the {_mib(max_bytes)} cap for one record",
                    )
                    continue
                if line.strip():
                    yield _parse_line(source.path, line_no, line)
    except _READ_ERRORS as exc:
        yield Skip(path=source.path, record=f"line {line_no + 1}", reason=f"stream ended early: {exc}")


def _parse_line(path: str, line_no: int, line: bytes) -> tuple[int, Any] | Skip:
    text, problem = _decode(line)
    if problem:
        return Skip(path=path, record=f"line {line_no}", reason=problem)
    try:
        return line_no, json.loads(text)
    except json.JSONDecodeError as exc:
        return Skip(path=path, record=f"line {line_no}", reason=f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}")
    except RecursionError:
        return Skip(path=path, record=f"line {line_no}", reason="JSON is nested too deeply to parse (recursion limit)")


def _discard_rest_of_line(stream: IO[bytes]) -> int:
    dropped = 0
    while True:
        chunk = stream.readline(1 << 20)
        dropped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return dropped


def _looks_like_jsonl(data: bytes, max_bytes: int) -> bool:
    """True when the first non-blank line is a JSON value by itself, or too long to be anything
    but a single-line record (a pretty-printed document breaks lines long before the cap)."""
    for line in data.split(b"\n", 64)[:64]:
        if line.strip():
            if len(line) > max_bytes:
                return True
            try:
                json.loads(line)
            except (ValueError, RecursionError):
                return False
            return True
    return False


def _bytes_problem(probe: bytes) -> str | None:
    if probe.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 encoded text; convert the file to UTF-8"
    nul = probe.find(b"\x00")
    if nul >= 0:
        return f"binary data, not JSON text (NUL byte at offset {nul})"
    return None


def _decode(data: bytes) -> tuple[str, str | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        return "", f"not UTF-8: byte 0x{bad} at offset {exc.start} (line {line})"


def _json_error(exc: json.JSONDecodeError, text: str) -> str:
    if exc.msg.startswith("Unterminated string") or exc.pos >= len(text.rstrip()):
        return f"truncated JSON: input ends before the value is complete ({exc.msg}, line {exc.lineno})"
    return f"invalid JSON: {exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"
