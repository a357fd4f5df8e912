"""Read whatever trajectories a team has into canonical, labelled, redacted `Trace`s.

`load_traces(paths, config)` is the door the rest of trace2skill uses: it opens files,
folders and archives (`documents`), detects each document's format by shape (or uses the
forced `config.analyse.format`), lets the reader module build traces, joins outcome labels
(`ingest.labels`), and redacts secrets (`trace2skill.redact`) before any trace leaves
this package. `iter_traces` is the streaming form of the same pipeline.

Invariants: a bad file or record never aborts the batch; it becomes a `Skip` naming the file,
the record and what is wrong, and every input record ends up either as a trace or as a skip.
The result is deterministic: traces are sorted by id, and ids that collide across files are
disambiguated by a content digest (an exact duplicate is reported as a skip instead).

Fidelity: each document carries a `Ledger` the reader fills (raw records, calls and results,
what it ignored by rule or dropped); `iter_traces(..., fidelity=rows)` adds the read side and
appends one `FileFidelity` row per file (`ingest.fidelity`), which `IngestResult.fidelity`,
`stream_report` (`ingest --check`/`--json`/`--strict`) and the run summary use.

Readers are tried in `READERS` order, most specific shape first, generic chat messages last.
A reader that raises on some odd input is a bug, but one file must not sink a batch, so the
exception is turned into a `Skip` that names the reader.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import ConfigError, NoInputError
from ..redact import Redactor
from ..types import JSONObject, Skip, Trace
from . import (
    aider,
    anthropic,
    atif,
    claude_code,
    cline,
    codex,
    copilot_otel,
    gemini_cli,
    inspect_ai,
    langfuse,
    mini_swe_agent,
    openai_chat,
    openhands,
    otlp,
    responses,
    specstory,
    swe_agent,
    tau2,
    tau_bench,
)
from . import fidelity as _fidelity
from ._steps import kind_of
from .base import Document, Reader, Sample
from .documents import DEFAULT_MAX_BYTES, Limits, iter_documents, span_document
from .fidelity import FileFidelity

if TYPE_CHECKING:
    from .labels import LabelBook

__all__ = [
    "DEFAULT_MAX_BYTES",
    "READERS",
    "Document",
    "FileFidelity",
    "IngestResult",
    "Reader",
    "detect_format",
    "iter_documents",
    "iter_traces",
    "load_traces",
    "reader_for",
    "settle_ids",
    "require_paths",
]


_DETECTION_ORDER = (
    atif,
    inspect_ai,
    copilot_otel,
    aider,
    specstory,
    openhands,
    mini_swe_agent,
    swe_agent,
    tau2,
    tau_bench,
    gemini_cli,
    claude_code,
    codex,
    otlp,
    langfuse,
    cline,
    responses,
    anthropic,
    openai_chat,
)
READERS: dict[str, Reader] = {module.NAME: module for module in _DETECTION_ORDER}
"""Reader modules by `--format` name, in detection order (most specific shape first)."""


def reader_for(name: str) -> Reader:
    """The reader module for a `--format` name (`-` and `_` are interchangeable).

    Raises:
        ConfigError: no reader has that name.
    """
    wanted = name.strip().lower().replace("-", "_")
    for known, module in READERS.items():
        if known.replace("-", "_") == wanted:
            return module
    raise ConfigError(f"unknown trace format {name!r}; choose one of {sorted(READERS)}")


def detect_format(sample: Sample) -> str | None:
    """Name of the first reader whose `sniff` accepts `sample`, or None for an unknown shape."""
    for name, reader in READERS.items():
        try:
            if reader.sniff(sample):
                return name
        except Exception:  # noqa: BLE001 - a sniffer bug must not hide the other formats
            continue
    return None


def iter_traces(
    paths: Iterable[str | os.PathLike[str]],
    config: Config | None = None,
    *,
    labels: LabelBook | None = None,
    redactor: Redactor | None = None,
    max_bytes: int | None = None,
    fidelity: list[FileFidelity] | None = None,
    span: Span | None = None,
) -> Iterator[Trace | Skip]:
    """Stream labelled, redacted traces and skips from `paths`, one document at a time.

    Args:
        paths: files, folders, `.gz` or `.zip` archives.
        config: supplies `analyse.format`, `analyse.labels`, `analyse.success_threshold`,
            `ingest` (size and expansion limits) and `redact`; defaults to `Config()`.
        labels: a prepared label book; built from `config` and `paths` when None.
        redactor: pass one to read its `counts` afterwards; a new one is made when None.
        max_bytes: cap on a whole-file JSON parse and on one JSONL line (default:
            `config.ingest.max_record_bytes`).
        fidelity: when given, one `FileFidelity` row per input file is appended once that
            file has been read (see `ingest.fidelity`).
        span: read only this byte range of the one plain JSONL file in `paths`, with the
            span's reader (a shard of a large file, `stream.plan_shards`).

    Raises:
        ConfigError: unknown forced format, missing labels file, bad redaction pattern.
        TraceFormatError: the labels file cannot be parsed.
    """
    from .labels import build_label_book

    paths = list(paths)
    config = config or Config()
    forced = reader_for(config.analyse.format) if config.analyse.format else None
    book = labels if labels is not None else build_label_book(paths, config.analyse.labels, config.analyse.success_threshold)
    redactor = redactor or Redactor(config.redact)
    limits = limits_of(config)
    if span is None:
        documents = iter_documents(paths, max_bytes=max_bytes, limits=limits, read_already=book.is_source)
    else:
        [path] = paths
        documents = [span.document(str(path), limits.record_bytes if max_bytes is None else max_bytes)]
        forced = reader_for(span.format)
    for doc in documents:
        row = FileFidelity(file=doc.path)
        items = [doc] if isinstance(doc, Skip) else _read_document(doc, forced, book, config.analyse.sidechains == "keep")
        for item in items:
            out = redactor.redact_skip(item) if isinstance(item, Skip) else _finish(item, book, redactor)
            if isinstance(out, Skip):
                _fidelity.add_skip(row, out)
            else:
                _fidelity.add_trace(row, out)
            yield out
        if fidelity is not None:
            fidelity.append(row if isinstance(doc, Skip) else _fidelity.finish(row, doc.ledger, doc.meta.get("format")))


@dataclass(frozen=True)
class Span:
    """A byte range of a large plain JSONL file whose lines stand alone (`Reader.lines_stand_alone`)."""

    start: int
    """Where its first line starts."""
    end: int | None
    """Where the next span's first line starts; None: the end of the file."""
    line: int
    """Lines before `start` (records keep the file's line numbers)."""
    format: str
    """The reader the whole file was detected as (every span reads with it)."""

    def document(self, path: str, max_bytes: int) -> Document:
        doc = span_document(path, self.start, self.end, self.line, max_bytes)
        doc.meta["lines_stand_alone"] = True
        return doc


def limits_of(config: Config) -> Limits:
    """The file-opening layer's caps, from the `ingest` config section."""
    ingest = config.ingest
    return Limits(record_bytes=ingest.max_record_bytes, file_bytes=ingest.max_file_bytes, ratio=ingest.max_ratio)


def _finish(trace: Trace, book: LabelBook, redactor: Redactor) -> Trace | Skip:
    """Label and redact one trace; a value too deep to serialise becomes a skip, not a crash
    (the digest, cached on the trace, is its JSON serialisation)."""
    try:
        labelled = book.apply(trace)
        try:
            cleaned = redactor.redact_trace(labelled)
            cleaned.digest()
        except UnicodeEncodeError:  # a lone surrogate: replaced and counted, not a lost trace
            cleaned = redactor.redact_trace(redactor.repair_surrogates(labelled))
            cleaned.digest()
        return cleaned
    except (ValueError, RecursionError) as exc:
        reason = f"trace {trace.id!r} cannot be serialised ({type(exc).__name__}: {str(exc)[:200]}); is a value nested too deeply?"
        return Skip(path=trace.source.path, record=trace.source.record, reason=redactor.redact_text(reason))


def _read_document(doc: Document, forced: Reader | None, book: LabelBook, sidechains: bool = True) -> Iterator[Trace | Skip]:
    from .labels import label_document

    if book.is_source(doc.path):
        doc.meta["format"] = "labels"
        return
    if not forced and cline.is_side_file(doc.path):
        doc.meta["format"] = "cline side file"
        return  # a Cline task folder's UI log or settings: the conversation beside it is read
    if doc.kind in ("zip", "text", "sqlite"):
        sample = doc.value()
    elif doc.kind == "json":
        sample = doc.value()
        if not forced and label_document(sample, doc.path) is not None:
            yield doc.skip("a results (labels) file, not a trajectory; pass it with --labels to use it")
            return
        if not forced and is_predictions_file(sample):
            doc.meta["format"] = "predictions"
            return
        if not forced and claude_code.is_checkpoint_metadata(sample):
            doc.meta["format"] = "checkpoint metadata"
            doc.ledger.saw(records=1)
            doc.ledger.ignore("session checkpoint metadata (Entire) beside a Claude Code session: no agent steps")
            return
    else:
        first = openai_chat.first_record(doc)
        if first is None:
            broken = [item for item in doc.records() if isinstance(item, Skip)]
            yield from broken if broken or doc.meta.get("lines_stand_alone") else [doc.skip("no JSON records in file")]
            return
        sample = first[1]
    reader = forced or READERS.get(detect_format(sample) or "")
    if reader is None:
        yield doc.skip(f"unknown trajectory format: {_describe(sample)}; use --format to force one of {sorted(READERS)}")
        return
    doc.meta["format"] = reader.NAME
    produced = 0
    try:
        items = reader.read(doc, include_sidechains=sidechains) if reader is claude_code else reader.read(doc)
        for item in items:
            produced += 1
            yield item
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        yield doc.skip(f"reader {reader.NAME!r} failed after {produced} records: {type(exc).__name__}: {exc}")
        return
    if produced == 0 and not doc.ledger.ignored:
        yield doc.skip(f"reader {reader.NAME!r} found no trajectory in this file")


def is_predictions_file(sample: Sample) -> bool:
    """A SWE-bench predictions file (`preds.json`: instance id -> submitted patch).

    Agent run folders ship one beside the trajectories. It holds no trajectory and no label,
    so it is passed over without counting as a skip (the patches are also in the trajectories).
    """
    if not isinstance(sample, dict) or not sample:
        return False
    return all(isinstance(v, dict) and "model_patch" in v and v.get("instance_id", k) == k for k, v in sample.items())


def _describe(sample: Sample) -> str:
    from .documents import SQLiteFile, ZipLog

    if isinstance(sample, ZipLog):
        return f"a zip log with members {sample.names()[:5]}"
    if isinstance(sample, SQLiteFile):
        return f"a SQLite database with tables {sorted(sample.tables())[:8]}"
    if isinstance(sample, dict):
        return f"an object with keys {sorted(map(str, sample))[:10]}"
    if isinstance(sample, list):
        inner = kind_of(sample[0]) if sample else "nothing"
        return f"an array of {len(sample)} items starting with {inner}"
    return f"a JSON {kind_of(sample)}"


@dataclass(frozen=True)
class IngestResult:
    """Everything `load_traces` read, with the counts the run summary and `--check` report."""

    traces: list[Trace]
    """Sorted by id; ids are unique."""
    skips: list[Skip]
    """In reading order, each with a precise reason."""
    outcomes: dict[str, int]
    """Traces per outcome: `success`, `failure`, `unknown` (all three keys present)."""
    redactions: dict[str, int]
    """Secrets replaced, per type."""
    formats: dict[str, int] = field(default_factory=dict)
    """Traces per reader name."""
    label_sources: list[str] = field(default_factory=list)
    """Labels and results files whose labels were joined."""
    fidelity: list[FileFidelity] = field(default_factory=list)
    """Per input file: what it holds and what was read from it (`ingest.fidelity`)."""


def load_traces(
    paths: Iterable[str | os.PathLike[str]], config: Config | None = None, *, max_bytes: int | None = None
) -> IngestResult:
    """Read every trajectory under `paths` into a deterministic `IngestResult`.

    Nothing readable at all is not an error here: the result is simply empty and the caller
    decides (distill stops, `ingest --check` exits non-zero).

    Raises:
        NoInputError: no paths were given, or a given path does not exist.
        ConfigError, TraceFormatError: as for `iter_traces`.
    """
    from .labels import build_label_book

    paths = [str(p) for p in paths]
    require_paths(paths)
    config = config or Config()
    book = build_label_book(paths, config.analyse.labels, config.analyse.success_threshold)
    redactor = Redactor(config.redact)
    traces: list[Trace] = []
    skips: list[Skip] = []
    rows: list[FileFidelity] = []
    for item in iter_traces(paths, config, labels=book, redactor=redactor, max_bytes=max_bytes, fidelity=rows):
        (skips if isinstance(item, Skip) else traces).append(item)
    traces, duplicates = _unique_ids(traces)
    outcomes = Counter({"success": 0, "failure": 0, "unknown": 0})
    outcomes.update(t.outcome for t in traces)
    return IngestResult(
        traces=traces,
        skips=skips + duplicates,
        outcomes=dict(outcomes),
        redactions=redactor.counts,
        formats=dict(sorted(Counter(t.format for t in traces).items())),
        label_sources=list(book.sources),
        fidelity=rows,
    )


def require_paths(paths: list[str]) -> None:
    """Refuse a run with no input paths, or with a path that does not exist.

    Raises:
        NoInputError: no paths were given, or a given path does not exist.
    """
    if not paths:
        raise NoInputError("no input paths given; pass PATHS or set `sources` in trace2skill.toml")
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        raise NoInputError(f"input path does not exist: {', '.join(repr(p) for p in missing)}")


def _unique_ids(traces: list[Trace]) -> tuple[list[Trace], list[Skip]]:
    """Sort by id; drop exact duplicates (as skips) and suffix colliding ids with a digest."""
    kept, skips, _ = settle_ids([(t.id, t.digest(), t.source.path, t.source.record) for t in traces])
    return [traces[i] if new_id == traces[i].id else traces[i].model_copy(update={"id": new_id}) for i, new_id in kept], skips


def settle_ids(keys: list[tuple[str, str, str, str | None]]) -> tuple[list[tuple[int, str]], list[Skip], dict[tuple[str, str], str]]:
    """The one id rule, over (id, digest, path, record) of each trace: sort by id; an exact
    duplicate (same id and digest, later in (path, record) order) is a skip; ids shared by
    different contents get `~` and eight digest characters. Returns (position in `keys`, id)
    of the kept traces in id order, the skips, and the renames by (id as read, digest)."""
    groups: dict[str, list[int]] = {}
    for at, key in enumerate(keys):
        groups.setdefault(key[0], []).append(at)
    kept: list[tuple[int, str]] = []
    skips: list[Skip] = []
    renamed: dict[tuple[str, str], str] = {}
    for ident in sorted(groups):
        first: dict[str, int] = {}
        for at in sorted(groups[ident], key=lambda i: (keys[i][2], keys[i][3] or "")):
            _, digest, path, record = keys[at]
            if digest in first:
                _, _, where, in_record = keys[first[digest]]
                where += f" ({in_record})" if in_record else ""
                skips.append(Skip(path=path, record=record, reason=f"exact duplicate of trace {ident!r} from {where}"))
            else:
                first[digest] = at
        if len(first) == 1:
            kept.extend((at, ident) for at in first.values())
            continue
        for digest in sorted(first):
            renamed[(ident, digest)] = f"{ident}~{digest[:8]}"
            kept.append((first[digest], renamed[(ident, digest)]))
    kept.sort(key=lambda item: item[1])
    return kept, skips, renamed


def stream_report(paths: Iterable[str | os.PathLike[str]], config: Config | None = None, *, emit_to: Path | None = None) -> JSONObject:
    """Read `paths` one trajectory at a time, optionally writing ATIF, and report counts and skips.

    Nothing is held but counts and skips, so a dump larger than memory can be checked or
    converted.

    Raises:
        NoInputError: a path does not exist.
    """
    from .atif import emit_atif

    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing or not paths:
        raise NoInputError(f"no such file or folder: {', '.join(map(repr, missing))}" if missing
                           else "no input paths given; pass PATHS or set `sources` in trace2skill.toml")
    from .labels import build_label_book

    config = config or Config()
    book = build_label_book(paths, config.analyse.labels, config.analyse.success_threshold)
    redactor = Redactor(config.redact)
    skips: list[Skip] = []
    formats: dict[str, int] = {}
    outcomes = {"success": 0, "failure": 0, "unknown": 0}
    seen: dict[tuple[str, str], str] = {}
    explicit = str(config.analyse.labels) if config.analyse.labels is not None else None
    matched = 0
    rows: list[FileFidelity] = []

    def traces() -> Iterator[Trace]:
        nonlocal matched
        for item in iter_traces(paths, config, labels=book, redactor=redactor, fidelity=rows):
            if not isinstance(item, Skip):
                item = _unless_duplicate(item, seen)
            if isinstance(item, Skip):
                skips.append(item)
                continue
            formats[item.format] = formats.get(item.format, 0) + 1
            outcomes[item.outcome] += 1
            matched += explicit is not None and item.extra.get("label_source") == explicit
            yield item

    if emit_to is not None:
        emit_atif(traces(), emit_to)
    else:
        for _ in traces():
            pass
    return {
        "traces": sum(outcomes.values()), "skipped": len(skips), "formats": formats, "outcomes": outcomes,
        "redactions": dict(redactor.counts), "label_sources": list(book.sources), "labels_matched": matched,
        "skips": [s.model_dump() for s in skips],
        "fidelity": [row.to_dict() for row in rows],
        "fidelity_summary": _fidelity.summary(rows),
    }


def _unless_duplicate(trace: Trace, seen: dict[tuple[str, str], str]) -> Trace | Skip:
    """The streaming form of `_unique_ids`' duplicate rule, so `ingest --check` counts what
    `distill` reads: an exact copy of a trace already seen is a skip (same id and content).
    `seen` keeps only where each (id, digest) was first read, never the traces."""
    key = (trace.id, trace.digest())
    if key not in seen:
        seen[key] = trace.source.path + (f" ({trace.source.record})" if trace.source.record else "")
        return trace
    where = seen[key]
    return Skip(path=trace.source.path, record=trace.source.record, reason=f"exact duplicate of trace {trace.id!r} from {where}")
