"""Turn input paths into decoded `Document`s, streaming, without trusting a single byte.

Inputs are files, folders (walked recursively in sorted order, hidden entries left out),
`.gz` files and `.zip` archives (members in name order). Inside folders and archives only
names ending in `.json`, `.jsonl`, `.ndjson`, `.traj`, `.gz` or `.zip` are considered, since
READMEs and logs sit beside real dumps; a file named explicitly is always read. A file is JSONL when its name says
so (`.jsonl`, `.ndjson`) or when its content is several JSON values on separate lines;
otherwise it is one JSON value. JSONL is read line by line, so a dump of any size costs
memory for one line at a time; a whole-file JSON parse, and any single JSONL line, is capped
at `Limits.record_bytes` (64 MiB by default) so a huge file becomes a `Skip` instead of a memory spike.

Hostile inputs are refused before they cost time or memory (`Limits`, set from the `ingest`
config section): only regular files are opened (a FIFO named `x.json` would block forever, a
device may have side effects), symlinks are followed only to regular files (loops and broken
links are reported), a file above `file_bytes` is not read, and a `.gz` file or zip member
stops being read once it has expanded beyond `ratio` times its compressed size or beyond
`file_bytes` (zip and gzip bombs). Encrypted zip members and compression methods Python
cannot decode are reported by name. Runs of blank lines are skipped a buffer at a time, so a
gigabyte of newlines costs a fraction of a second per hundred megabytes, not a Python loop
per line.

Everything that cannot be decoded (missing path, bad archive, binary or non-UTF-8 bytes,
empty file, truncated or invalid JSON, nesting deep enough to hit Python's recursion
limit, an integer longer than Python's 4,300-digit conversion limit, an over-long line) is
yielded as a `Skip` naming the file, the line when there is one, and what is wrong. Nothing
here raises for bad input.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..types import Skip
from .base import Document

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024 * 1024
DEFAULT_MAX_RATIO = 200
JSONL_SUFFIXES = (".jsonl", ".ndjson")
WALKED_SUFFIXES = (".json", ".jsonl", ".ndjson", ".traj", ".gz", ".zip")
_BINARY_PROBE = 8192
_BUFFER = 1 << 16
_RATIO_FLOOR = 16 * 1024 * 1024
"""Any compressed input may expand to this much whatever its ratio (tiny files compress well)."""
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile, NotImplementedError)


@dataclass(frozen=True)
class Limits:
    """Caps that keep one hostile or unlucky input from stalling or exhausting a batch."""

    record_bytes: int = DEFAULT_MAX_BYTES
    """A whole-file JSON value, or one JSONL line (`ingest.max_record_bytes`)."""
    file_bytes: int = DEFAULT_MAX_FILE_BYTES
    """A file on disk, or what one compressed input expands to (`ingest.max_file_bytes`)."""
    ratio: int = DEFAULT_MAX_RATIO
    """Expanded size over compressed size (`ingest.max_ratio`); real traces compress 3-25x."""

    def expansion(self, compressed: int) -> int:
        """Bytes a compressed input of `compressed` bytes may expand to."""
        return min(self.file_bytes, max(self.ratio * compressed, _RATIO_FLOOR))

    def too_big(self, compressed: int) -> str:
        """Which limit a compressed input of `compressed` bytes went past."""
        if self.expansion(compressed) == self.file_bytes:
            return f"more than ingest.max_file_bytes ({self.file_bytes:,} bytes)"
        return (f"more than {self.ratio}x its {compressed:,} compressed bytes (ingest.max_ratio); "
                "a zip or gzip bomb?")


class _LimitExceeded(Exception):
    """A compressed stream expanded beyond its `Limits`; the message says which."""


@dataclass(frozen=True)
class Source:
    """One readable byte stream: a plain file, a gzip file or an archive member."""

    path: str
    """Path shown to users (`archive.zip!member.json` for members)."""
    name: str
    """File name with any `.gz` removed, used to recognise JSONL by its suffix."""
    open: Callable[[], IO[bytes]]


def iter_sources(paths: Iterable[str | os.PathLike[str]], limits: Limits | None = None) -> Iterator[Source | Skip]:
    """Expand paths into byte sources: folders walked, archives opened, order deterministic.

    A file reached twice (the same path given twice, a file inside a folder also given, or a
    symlink to a file also read) is read once: its records would otherwise all come back as
    duplicates of themselves. Anything that is not a regular file is a `Skip`, never opened.
    """
    limits = limits or Limits()
    seen: set[tuple[int, int]] = set()
    for raw in paths:
        path = Path(raw)
        if not os.path.lexists(path):
            yield Skip(path=str(path), reason="path does not exist")
            continue
        for file in walk_folder(path) if path.is_dir() else [path]:
            if isinstance(file, Skip):
                yield file
                continue
            info, problem = _regular_file(file, limits)
            if problem:
                yield Skip(path=str(file), reason=problem)
            elif (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                yield from _file_sources(file, info.st_size, limits)


def walk_folder(folder: Path) -> Iterator[Path | Skip]:
    """Files under `folder` that may hold traces, in sorted order, hidden entries skipped.

    Symlinked folders are not followed (they can loop or lead anywhere) and unreadable
    folders cannot be listed; both are reported as skips rather than silently missed.
    """
    errors: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=errors.append):
        for name in sorted(d for d in dirs if not d.startswith(".") and os.path.islink(os.path.join(root, d))):
            yield Skip(path=os.path.join(root, name), reason="symlinked folder not followed; give its target as an input path")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(WALKED_SUFFIXES):
                yield Path(root) / name
    for exc in errors:
        yield Skip(path=str(exc.filename or folder), reason=f"cannot list folder: {exc.strerror or exc}")


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _regular_file(path: Path, limits: Limits) -> tuple[os.stat_result, str | None]:
    """`stat` of the file a path leads to, or why it must not be opened."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symlink loop (too many levels of symbolic links); not read"  # type: ignore[return-value]
        if os.path.islink(path):
            return None, f"broken symlink (its target {os.readlink(path)!r} does not exist)"  # type: ignore[return-value]
        return None, f"cannot read: {exc.strerror or exc}"  # type: ignore[return-value]
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        return info, f"{kind}, not a regular file; not opened"
    if info.st_size > limits.file_bytes:
        return info, f"file is {info.st_size:,} bytes, above ingest.max_file_bytes ({limits.file_bytes:,}); not read"
    return info, None


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a regular file for reading; anything else raises OSError without blocking.

    `O_NONBLOCK` makes opening a FIFO return at once (a plain open waits for a writer that may
    never come); the type is checked on the open descriptor, so a file swapped for a FIFO
    after `_regular_file` looked at it is still refused.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file; not read", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=_BUFFER)
    except BaseException:
        os.close(fd)
        raise


class _Capped(io.RawIOBase):
    """A decompressing stream that raises `_LimitExceeded` once it has produced `limit` bytes."""

    def __init__(self, inner: IO[bytes], limit: int, why: Callable[[], str], *owned: IO[bytes]):
        self._inner, self._limit, self._why, self._owned = inner, limit, why, owned
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)
        self._total += n
        if self._total > self._limit:
            raise _LimitExceeded(self._why())
        return n

    def close(self) -> None:
        if not self.closed:
            for stream in (self._inner, *self._owned):
                stream.close()
        super().close()


def _gunzip(raw: IO[bytes], compressed: int, limits: Limits, *owned: IO[bytes]) -> IO[bytes]:
    limit = limits.expansion(compressed)
    inner = gzip.GzipFile(fileobj=raw, mode="rb")
    return io.BufferedReader(_Capped(inner, limit, lambda: f"expands to {limits.too_big(compressed)}; stopped after {limit:,} bytes", raw, *owned), _BUFFER)


def _file_sources(path: Path, size: int, limits: Limits) -> Iterator[Source | Skip]:
    lower = path.name.lower()
    if lower.endswith(".zip"):
        yield from _zip_sources(path, limits)
    elif lower.endswith(".gz"):
        yield Source(str(path), path.name[:-3], lambda: _gunzip(open_regular(path), size, limits))
    else:
        yield Source(str(path), path.name, lambda: open_regular(path))


def _zip_sources(path: Path, limits: Limits) -> Iterator[Source | Skip]:
    archive = _Archive(path)
    try:
        members = archive.members()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        yield Skip(path=str(path), reason=f"not a readable zip archive: {exc}")
        archive.close()
        return
    try:
        for info in members:
            name = info.filename
            base = name.rsplit("/", 1)[-1]
            if base.startswith(".") or "__MACOSX/" in name or not base.lower().endswith(WALKED_SUFFIXES):
                continue
            shown = f"{path}!{name}"
            problem = _member_problem(info, limits)
            if problem:
                yield Skip(path=shown, reason=problem)
            elif base.lower().endswith(".gz"):
                yield Source(shown, base[:-3], lambda n=name, c=info.compress_size: _gunzip(archive.open(n), c, limits))
            else:
                yield Source(shown, base, lambda n=name: archive.open(n))
    finally:
        archive.close()


def _member_problem(info: zipfile.ZipInfo, limits: Limits) -> str | None:
    """Why a zip member must not be opened, judged from its directory entry alone."""
    if info.filename.rsplit("/", 1)[-1].lower().endswith(".zip"):
        return "nested zip archives are not read; extract the inner archive first"
    if info.flag_bits & 0x1:
        return "encrypted zip member (password protected); extract it and pass the file instead"
    if info.compress_type not in _ZIP_METHODS:
        method = zipfile.compressor_names.get(info.compress_type, "unknown")
        return f"zip compression method {info.compress_type} ({method}) is not supported; re-zip with deflate"
    allowed = limits.expansion(info.compress_size)
    if info.file_size > allowed:
        return f"declares {info.file_size:,} bytes, {limits.too_big(info.compress_size)}; not read"
    return None


class _Archive:
    """One open zip file shared by all its members while they are read in order.

    Re-opening the archive per member would re-read its whole central directory each time
    (quadratic in the member count); a member re-read after the walk reopens it on demand.
    """

    def __init__(self, path: Path):
        self._path = path
        self._zip: zipfile.ZipFile | None = None
        self._raw: IO[bytes] | None = None

    def _file(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._raw = open_regular(self._path)
            try:
                self._zip = zipfile.ZipFile(self._raw)
            except BaseException:
                self.close()
                raise
        return self._zip

    def members(self) -> list[zipfile.ZipInfo]:
        return sorted((info for info in self._file().infolist() if not info.is_dir()), key=lambda info: info.filename)

    def open(self, member: str) -> IO[bytes]:
        return self._file().open(member)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None


def iter_documents(
    paths: Iterable[str | os.PathLike[str]], *, max_bytes: int | None = None, limits: Limits | None = None
) -> Iterator[Document | Skip]:
    """Yield one `Document` per readable input, or a `Skip` saying why it is not readable.

    Args:
        paths: files, folders, `.gz` or `.zip` files, in the order given.
        max_bytes: cap on a whole-file JSON parse and on any single JSONL line; overrides
            `limits.record_bytes` when given.
        limits: size and expansion caps (defaults: `Limits()`).

    Returns:
        An iterator; JSONL documents are read lazily when their records are iterated.
    """
    limits = limits or Limits()
    record_bytes = limits.record_bytes if max_bytes is None else max_bytes
    for source in iter_sources(paths, limits):
        if isinstance(source, Skip):
            yield source
        else:
            yield open_document(source, max_bytes=record_bytes)


def open_document(source: Source, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document | Skip:
    """Decode one source as JSON or JSONL (see the module docstring for the rules)."""
    is_jsonl = source.name.lower().endswith(JSONL_SUFFIXES)
    try:
        with source.open() as stream:
            head = stream.read(_BINARY_PROBE)
            if not is_jsonl:
                head += stream.read(max_bytes + 1 - len(head))
    except _LimitExceeded as exc:
        return Skip(path=source.path, reason=str(exc))
    except _READ_ERRORS as exc:
        return Skip(path=source.path, reason=f"cannot read: {exc}")
    problem = _bytes_problem(head[:_BINARY_PROBE])
    if problem:
        return Skip(path=source.path, reason=problem)
    if not head.strip() and (not is_jsonl or len(head) < _BINARY_PROBE):
        return Skip(path=source.path, reason="empty file" if not head else "empty file (whitespace only)")
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
    except ValueError as exc:
        return Skip(path=source.path, reason=_number_error(exc))
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
                if not line.strip():
                    line_no += _skip_blank_lines(stream)
                    continue
                if len(line) > max_bytes and not line.endswith(b"\n"):
                    dropped = len(line) + _discard_rest_of_line(stream)
                    yield Skip(
                        path=source.path,
                        record=f"line {line_no}",
                        reason=f"line is {dropped:,} bytes, above the {_mib(max_bytes)} cap for one record",
                    )
                    continue
                yield _parse_line(source.path, line_no, line)
    except _LimitExceeded as exc:
        yield Skip(path=source.path, reason=f"{exc}; the records before that point were read")
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
    except ValueError as exc:
        return Skip(path=path, record=f"line {line_no}", reason=_number_error(exc))


def _number_error(exc: ValueError) -> str:
    """Python refuses to convert integers of more than 4,300 digits (a denial-of-service guard);
    `json.loads` raises that as a plain ValueError."""
    return f"a number too big to parse: {str(exc).split(';')[0]}"


def _skip_blank_lines(stream: IO[bytes]) -> int:
    """Consume the whitespace-only lines ahead, a buffer at a time; return how many there were.

    Reading them one `readline` at a time costs a Python iteration per newline: a gzip of
    newlines expanding to 200 MB would take minutes.
    """
    peek = getattr(stream, "peek", None)
    skipped = 0
    while peek is not None:
        ahead = peek(_BUFFER)
        blank = len(ahead) - len(ahead.lstrip())
        cut = ahead.rfind(b"\n", 0, blank) + 1
        if cut == 0:
            break
        stream.read(cut)
        skipped += ahead.count(b"\n", 0, cut)
        if blank < len(ahead):
            break
    return skipped


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
