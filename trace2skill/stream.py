"""The map stage, one trajectory at a time: shards in, an index and lesson sets out.

A run never holds its trajectories. The inputs are cut into `Shard`s (one file each, in the
sorted order `ingest.documents.iter_sources` walks them); `run_shard` reads one shard, and for
every trace in it (read, labelled, redacted) records an `IndexEntry` (id, digest, outcome,
where it was read, what the later stages need of it) and, when the job asks for it, the
offline analyst's `LessonSet` and the behaviours the corpus pass tests; then the trace is
released. `run_shard` is a pure top-level function of picklable arguments, so an executor
(`executor/`) may run it in this process, in worker processes or on a cluster; results come
back in shard order, never in completion order, which keeps a run deterministic.

What the later stages need of a trajectory is in its entry: `run_info` (digests, outcomes),
the model analyst's safety hold (task hashes), the leakage audit (task literals), the
offline selection (behaviours, outcomes), the run summary (sources). A stage that needs the
trajectory itself (the model analyst) reads its shard again (`iter_shard`).

Ids that collide across files are settled by `settle_ids` over the index, as `load_traces`
does over traces: an exact duplicate (same id, same digest) is a skip, colliding ids with
different content are suffixed with their digest, and the suffixed traces are analysed again
under their new id (rare, and the only re-read the offline path makes).
"""

from __future__ import annotations

import os
import pickle
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from .config import Config
from .ingest import IngestResult, Span, iter_traces, limits_of
from .ingest import settle_ids as id_rule
from .ingest.documents import JSONL_SUFFIXES, Source, iter_sources, open_regular, span_document
from .ingest.fidelity import FileFidelity, Totals, lossy, merged
from .ingest.fidelity import summary as fidelity_summary
from .ingest.labels import LabelBook, build_label_book
from .redact import Redactor
from .rules import RuleRecord
from .types import JSONObject, LessonSet, Outcome, Skip, Trace, content_hash

if TYPE_CHECKING:
    from .prepare import Prepared

Analysis = Literal["index", "offline", "prompt", "llm"]
"""What `run_shard` does per trace: only index it; index it and run the offline analyst; prepare
the model analyst's prompt (`prepare.prepare`; the model path's second pass, see `prefetch`); or
(remote executors only, see `executor`) index it and run the model analyst where it is read."""


@dataclass(frozen=True)
class Shard:
    """One unit of the map stage: a file (a `.gz` or `.zip` counts as one), or a byte range of
    a large plain JSONL file whose lines are trajectories on their own (`ingest.shard_bytes`)."""

    order: int
    """Position in stream order (the sorted walk of the inputs): results are merged by it."""
    path: str
    span: Span | None = None
    """The byte range of a large JSONL file this shard reads (None: the whole file)."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What a run keeps of one trajectory once it has been read and released."""

    id: str
    digest: str
    outcome: Outcome
    path: str
    """The file it was read from (`archive.zip!member` for an archive member)."""
    record: str | None
    """Where inside the file (a line number, list index or record id), as `SourceRef.record`."""
    shard: int
    """`Shard.order` of the shard it was read from, to read it again."""
    seq: int
    """Position among the traces read from that shard: (shard, seq) is the stream order."""
    task_hash: str
    """Hash of the task statement (whitespace-normalised; the id when there is none)."""
    format: str
    label_source: str | None = None
    """The labels file its outcome came from, when one did."""
    literals: tuple[str, ...] = ()
    """Task-specific literals of its task statement, for the leakage audit (`audit.literals_of`)."""
    tokens: int = 0
    """Prompt tokens of its compressed text, estimated without compressing (`compress.estimated_tokens`),
    for the model path's quote; 0 offline."""
    task_id: str = ""
    """The task it attempted (`task_id`), kept only for held-out folds (`ShardJob.task_ids`)."""
    behaviours: "bytes | SpilledBlob | None" = None
    """The offline corpus pass's view of it (labelled runs of an offline job only), packed
    (`offline.behaviours.Behaviours`): about thirty behaviours a run, 14 KB as objects, 1 KB packed;
    moved to the run's `Spill` file by `gather` (`bytes(entry.behaviours)` reads them back).
    Released (None) by `distill` once the offline selection (`Analyst.finish`) has read them."""

    @property
    def where(self) -> str:
        return self.path + (f" [{self.record}]" if self.record else "")


class CallMeter(Protocol):
    """The run's caps as a model client sees them (`budget.Meter` is one): every request is
    reserved before it is sent and settled after. A remote executor shares one meter across
    its workers by handing them a proxy with these two methods (e.g. to one Ray actor)."""

    def reserve(self, tokens_in: int, tokens_out: int) -> float: ...

    def settle(self, reserved: float, cost: float | None) -> None: ...


@dataclass(frozen=True)
class ShardJob:
    """Everything `run_shard` needs besides the shard; built once per run, sent once per worker."""

    config: Config
    labels: LabelBook
    analysis: Analysis = "index"
    wanted: frozenset[str] | None = None
    """Digests to keep (the refresh job's new trajectories); None keeps every trace."""
    renamed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(original id, digest) -> the id it gets (see `settle_ids`), for a shard read again."""
    count_tokens: bool = False
    """Fill `IndexEntry.tokens` (the model path's quote)."""
    task_ids: bool = False
    """Fill `IndexEntry.task_id` (the held-out gate and evaluation split folds by task)."""
    existing: tuple[RuleRecord, ...] = ()
    """The skill's current rules, which the model analyst sees (analyses `prompt` and `llm`)."""
    recorded: frozenset[str] = frozenset()
    """Digests whose analysis the run's journal already holds: not analysed again, nor their
    prompt prepared (`prompt` and `llm`; the driver fills their lesson sets from the journal)."""


@dataclass(frozen=True, slots=True)
class Packed:
    """A lesson set as the run holds it between stages: compressed, with its sort key.

    Lesson sets carry every evidence quote; as objects they cost about 8 KB per trajectory,
    packed about 1 KB, which is what keeps a large run's memory flat. The driver moves the
    map stage's sets to a `Spill` file (`spilled`), leaving about 150 bytes each in memory."""

    key: str
    """`LessonSet.key()` of the set, which the merge tree sorts by."""
    blob: bytes
    """The compressed set; empty once spilled."""
    spill: "Spill | None" = None
    at: int = 0
    size: int = 0

    @classmethod
    def of(cls, lessons: LessonSet) -> "Packed":
        return cls(lessons.key(), zlib.compress(pickle.dumps(lessons, protocol=pickle.HIGHEST_PROTOCOL), 1))

    def spilled(self, spill: "Spill") -> "Packed":
        """This set with its blob in `spill` instead of memory (read back by `unpack`)."""
        return self if self.spill is not None else Packed(self.key, b"", spill, spill.put(self.blob), len(self.blob))

    def unpack(self) -> LessonSet:
        blob = self.blob if self.spill is None else self.spill.get(self.at, self.size)
        value = pickle.loads(zlib.decompress(blob))  # noqa: S301 - written by this run, never read from input
        assert isinstance(value, LessonSet)
        return value


class Spill:
    """An anonymous temporary file of blobs the driver holds for a later stage (the map
    stage's packed lesson sets, which consolidation reads once): memory keeps their offsets.
    The file has no name (removed by the system when closed, or when the run dies) and lives
    in the system's temporary folder, never in the skill or state folder."""

    def __init__(self) -> None:
        import tempfile

        self.file = tempfile.TemporaryFile(prefix="trace2skill-spill-")
        self.end = 0
        self.lock = threading.Lock()
        """One seek-and-read or seek-and-write at a time (merges may unpack in worker threads)."""

    def put(self, blob: bytes) -> int:
        with self.lock:
            at = self.end
            self.file.seek(at)
            self.file.write(blob)
            self.end += len(blob)
        return at

    def get(self, at: int, size: int) -> bytes:
        with self.lock:
            self.file.seek(at)
            blob = self.file.read(size)
        if len(blob) != size:
            raise OSError(f"the run's spill file lost data (read {len(blob)} of {size} bytes at {at})")
        return blob


@dataclass(frozen=True, slots=True)
class SpilledBlob:
    """A blob the driver moved to its `Spill` file; `bytes(blob)` reads it back."""

    spill: Spill
    at: int
    size: int

    def __bytes__(self) -> bytes:
        return self.spill.get(self.at, self.size)


@dataclass
class ShardResult:
    """What one shard gave: its index entries and, aligned with them, lesson sets (when the
    job analysed), every skip, its files' fidelity rows and the secrets redacted in it."""

    shard: Shard
    entries: list[IndexEntry] = field(default_factory=list)
    lessons: list[Packed] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    fidelity: list[FileFidelity] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    failed: list[Skip] = field(default_factory=list)
    """Analyses that failed (model path on a remote executor); their traces are still indexed."""
    prompts: list[Prepared] = field(default_factory=list)
    """The prepared prompts of a `prompt` job, in reading order (no index entries then)."""


def plan_shards(paths: Iterable[str | os.PathLike[str]], config: Config) -> tuple[list[Shard], list[Skip]]:
    """The shards of `paths` in stream order, and the paths that cannot be read at all.

    Folders are walked and files reached twice read once, exactly as `iter_sources` does;
    archive members stay in their archive's shard.
    """
    shards: list[Shard] = []
    skips: list[Skip] = []
    seen: set[str] = set()
    for source in iter_sources([str(p) for p in paths], limits_of(config)):
        if isinstance(source, Skip):
            skips.append(source)
            continue
        path = source.path.split("!", 1)[0]
        if path not in seen:
            seen.add(path)
            for span in spans(source, config) or [None]:
                shards.append(Shard(order=len(shards), path=path, span=span))
    return shards, skips


def spans(source: Source, config: Config) -> list[Span]:
    """The byte ranges a plain JSONL file is read in: about `ingest.shard_bytes` each, cut at
    line starts, when its reader reads each line on its own (`lines_stand_alone` of the file's
    first record). An empty list: read it whole (small, compressed, an archive member, or a
    format whose lines belong together, such as a session log)."""
    size = config.ingest.shard_bytes
    path = source.path
    if "!" in path or source.name != Path(path).name or not source.name.lower().endswith(JSONL_SUFFIXES):
        return []
    try:
        total = os.stat(path).st_size
        if total <= size:
            return []
        reader = _line_reader(path, config)
        return [] if reader is None else _cut(path, total, size, reader)
    except OSError:
        return []  # the shard's own read reports it


def _line_reader(path: str, config: Config) -> str | None:
    """The reader of a JSONL file whose lines stand alone, from its first record; None otherwise."""
    from .ingest import detect_format, reader_for
    from .ingest.openai_chat import first_record

    first = first_record(span_document(path, 0, None, 0, config.ingest.max_record_bytes))
    if first is None:
        return None
    name = config.analyse.format or detect_format(first[1])
    reader = reader_for(name) if name else None
    stands_alone = getattr(reader, "lines_stand_alone", None)
    return reader.NAME if stands_alone is not None and stands_alone(first[1]) else None


def _cut(path: str, total: int, size: int, reader: str) -> list[Span]:
    """Spans of about `size` bytes, each starting at a line start, with the lines before it
    counted (one pass over the file, counting newlines a buffer at a time)."""
    starts, lines = [0], [0]
    with open_regular(path) as stream:
        while starts[-1] + size < total:
            stream.seek(starts[-1] + size - 1)
            stream.readline()  # to the first line start at or after the target
            at = stream.tell()
            if at >= total:
                break
            stream.seek(starts[-1])
            count, left = 0, at - starts[-1]
            while left:
                chunk = stream.read(min(left, 1 << 20))
                count, left = count + chunk.count(b"\n"), left - len(chunk)
            starts.append(at)
            lines.append(lines[-1] + count)
    ends = [*starts[1:], None]
    return [Span(start, end, line, reader) for start, end, line in zip(starts, ends, lines)]


def label_book(paths: Iterable[str | os.PathLike[str]], config: Config) -> LabelBook:
    """The run's labels, read once on the driver and shipped with the job."""
    return build_label_book([str(p) for p in paths], config.analyse.labels, config.analyse.success_threshold)


def iter_shard(shard: Shard, job: ShardJob, into: ShardResult) -> Iterator[Trace]:
    """The traces of one shard, renamed where `job.renamed` says and filtered by `job.wanted`;
    skips, fidelity rows and redaction counts go to `into`."""
    redactor = Redactor(job.config.redact)
    for item in iter_traces([shard.path], job.config, labels=job.labels, redactor=redactor, fidelity=into.fidelity,
                            span=shard.span):
        if isinstance(item, Skip):
            into.skips.append(item)
            continue
        digest = item.digest()
        if job.wanted is not None and digest not in job.wanted:
            continue
        new_id = job.renamed.get((item.id, digest))
        yield item.model_copy(update={"id": new_id}) if new_id else item
    for kind, count in redactor.counts.items():
        into.redactions[kind] = into.redactions.get(kind, 0) + count


def run_shard(shard: Shard, job: ShardJob) -> ShardResult:
    """Read one shard and release its traces, keeping their index entries (and, for an
    offline job, their lesson sets). Pure: the result depends only on the arguments."""
    result = ShardResult(shard)
    if job.analysis == "llm":
        raise ValueError("the model analysis runs in the driver on the local executors (see executor)")
    if job.analysis == "prompt":
        from .prepare import Prepared, prepare

        for trace in iter_shard(shard, job, result):
            result.prompts.append(Prepared(trace.id, trace.digest(), trace.outcome, None) if trace.digest() in job.recorded
                                  else prepare(trace, job.config, job.existing, redo=False))
        return result
    for trace in iter_shard(shard, job, result):
        entry, lessons = entry_and_lessons(trace, shard.order, len(result.entries), job)
        result.entries.append(entry)
        if lessons is not None:
            result.lessons.append(lessons)
    return result


def entry_and_lessons(trace: Trace, shard: int, seq: int, job: ShardJob) -> tuple[IndexEntry, Packed | None]:
    """One trace's index entry and, for an offline job, its packed lesson set."""
    entry = index_entry(trace, shard, seq, job)
    if job.analysis != "offline":
        return entry, None
    lessons, behaviours = analyse_offline_entry(trace)
    if behaviours is not None:
        entry = replace(entry, behaviours=behaviours)
    return entry, Packed.of(lessons)


def index_entry(trace: Trace, shard: int, seq: int, job: ShardJob) -> IndexEntry:
    """The entry of one trace (its digest is computed here, once)."""
    from .audit import literals_of

    tokens = 0
    if job.count_tokens:
        from .compress import estimated_tokens

        tokens = estimated_tokens(trace, job.config.analyse.token_budget)  # compressed once, by its analyst
    label = trace.extra.get("label_source")
    return IndexEntry(
        id=trace.id, digest=trace.digest(), outcome=trace.outcome, path=trace.source.path, record=trace.source.record,
        shard=shard, seq=seq, task_hash=task_hash(trace), format=trace.format,
        label_source=label if isinstance(label, str) else None, literals=literals_of(trace.task), tokens=tokens,
        task_id=task_id(trace) if job.task_ids else "",
    )


def task_hash(trace: Trace) -> str:
    """The task a trace worked on, as a hash (the safety hold counts distinct tasks)."""
    return content_hash(" ".join(trace.task.split()) or trace.id)


def task_id(trace: Trace) -> str:
    """The task a trajectory attempted: SWE-bench `instance_id`, tau-bench `task_id`, else its id
    (held-out folds never split a task)."""
    for key in ("instance_id", "task_id"):
        value = trace.extra.get(key)
        if value is not None and str(value):
            return f"{key}:{value}"
    return f"trace:{trace.id}"


def analyse_offline_entry(trace: Trace) -> tuple[LessonSet, bytes | None]:
    """The offline analyst's lesson set of one trace, and its packed behaviours (labelled runs)."""
    from .offline import mine

    lessons, behaviours = mine(trace)
    return LessonSet(lessons=tuple(sorted(lessons, key=lambda l: l.id)), sources=(trace.id,), level=0), behaviours


@dataclass
class Corpus:
    """The whole map stage's output: the index (sorted by id, ids unique), packed lesson sets by
    id (offline), skips in reading order (duplicates last), fidelity rows and redaction counts,
    and what it takes to read the traces again (inputs, shards, labels, renamed ids)."""

    entries: list[IndexEntry]
    lessons: dict[str, Packed]
    """Offline: each trajectory's lesson set, taken out (the dict emptied) by consolidation,
    which reads each once; about 300 bytes a trajectory that would otherwise stay to the end."""
    skips: list[Skip]
    fidelity: list[FileFidelity]
    """The rows of files that lost calls (`ingest.fidelity.lossy`); the rest are only counted in
    `fidelity_totals` (a row per file would grow with the corpus)."""
    fidelity_totals: JSONObject
    """`ingest.fidelity.summary` over every file read."""
    redactions: dict[str, int]
    labels: LabelBook
    inputs: list[str]
    shards: list[Shard]
    renamed: dict[tuple[str, str], str] = field(default_factory=dict)
    """(id as read, digest) -> the id the run gives it (`settle_ids`)."""
    failed: list[Skip] = field(default_factory=list)
    held: list[Trace] | None = None
    """The traces themselves when they were given in memory (`corpus_of`), read instead of the shards."""

    @property
    def outcomes(self) -> dict[str, int]:
        counts = Counter({"success": 0, "failure": 0, "unknown": 0})
        counts.update(e.outcome for e in self.entries)
        return dict(counts)

    @property
    def formats(self) -> dict[str, int]:
        return dict(sorted(Counter(e.format for e in self.entries).items()))

    @property
    def label_sources(self) -> list[str]:
        return list(self.labels.sources)

    def subset(self, keep: Callable[[IndexEntry], bool]) -> "Corpus":
        """The corpus of the entries `keep` accepts, read again from the same shards (a held-out
        fold: its traces stream from disk, its offline lesson sets and behaviours are these)."""
        entries = [e for e in self.entries if keep(e)]
        return replace(self, entries=entries, lessons={e.id: self.lessons[e.id] for e in entries if e.id in self.lessons})

    def shards_of(self, entries: Iterable[IndexEntry]) -> list[Shard]:
        """The shards that hold `entries`, in reading order (what reading them again opens)."""
        used = {e.shard for e in entries}
        return [s for s in self.shards if s.order in used]

    def in_stream_order(self) -> list[IndexEntry]:
        """Entries in the order they were read (shard, then position in it)."""
        return sorted(self.entries, key=lambda e: (e.shard, e.seq))


def gather(results: Iterable[ShardResult], shards: list[Shard], path_skips: list[Skip], labels: LabelBook,
           inputs: list[str]) -> Corpus:
    """Fold shard results (in shard order) into one `Corpus`, settling colliding ids.

    Traces renamed by `settle_ids` have no lesson set yet: they must be analysed again under
    their new id (`with_renamed`) before the lesson sets are used.
    """
    entries: list[IndexEntry] = []
    lessons: dict[tuple[str, str], Packed] = {}
    spill = Spill()
    skips, fidelity, failed = list(path_skips), [], []
    totals = Totals()
    pending: FileFidelity | None = None
    """The row of the file being read: a large JSONL file's byte ranges come in consecutive shards."""
    redactions: Counter[str] = Counter()
    shared: dict[object, object] = {shard.path: shard.path for shard in shards}
    for result in results:
        entries.extend(_compact(entry, spill, shared) for entry in result.entries)
        for entry, packed in zip(result.entries, result.lessons):
            if (entry.id, entry.digest) not in lessons:
                lessons[(entry.id, entry.digest)] = packed.spilled(spill)
        skips.extend(result.skips)
        for row in result.fidelity:
            if pending is not None and row.file == pending.file and result.shard.span and result.shard.span.start:
                pending = merged(pending, row)  # the next byte range of the same file
                continue
            if pending is not None:
                _count(pending, totals, fidelity)
            pending = row
        failed.extend(result.failed)
        redactions.update(result.redactions)
    if pending is not None:
        _count(pending, totals, fidelity)
    kept, duplicates, renamed = settle_ids(entries)
    by_id = {e.id: lessons[(e.id, e.digest)] for e in kept if (e.id, e.digest) in lessons}
    return Corpus(kept, by_id, skips + duplicates, fidelity, totals.as_json(), dict(redactions), labels, inputs, shards, renamed, failed)


def _compact(entry: IndexEntry, spill: Spill, shared: dict[object, object]) -> IndexEntry:
    """`entry` as the run keeps it: its packed behaviours in `spill` (about 1 KB a trajectory
    that would otherwise wait in memory for the offline selection), and its values that
    repeat across entries held once (`shared`: equal value -> the one kept): the file it
    was read from is its shard's path, the labels file is one per run, and a task's hash,
    literals and id are the same for every attempt at it. About 600 of an entry's 900 bytes are
    those values, each a new object per trajectory as read."""
    behaviours = entry.behaviours
    if isinstance(behaviours, bytes):
        behaviours = SpilledBlob(spill, spill.put(behaviours), len(behaviours))
    return replace(entry, behaviours=behaviours, path=shared.setdefault(entry.path, entry.path),
                   label_source=shared.setdefault(entry.label_source, entry.label_source),
                   task_hash=shared.setdefault(entry.task_hash, entry.task_hash),
                   literals=shared.setdefault(entry.literals, entry.literals),
                   task_id=shared.setdefault(entry.task_id, entry.task_id))


def _count(row: FileFidelity, totals: Totals, lossy_rows: list[FileFidelity]) -> None:
    totals.add(row)
    if lossy(row):
        lossy_rows.append(row)


def with_renamed(corpus: Corpus, results: Iterable[ShardResult]) -> Corpus:
    """`corpus` with its renamed traces read again under their new id (their shards run with
    `ShardJob(renamed=corpus.renamed, wanted=their digests)`): the entry (a trace's digest
    covers its id) and, offline, the lesson set."""
    new_ids = set(corpus.renamed.values())
    fresh: dict[str, IndexEntry] = {}
    for result in results:
        for n, entry in enumerate(result.entries):
            if entry.id in new_ids and entry.id not in fresh:
                fresh[entry.id] = entry
                if n < len(result.lessons):
                    corpus.lessons[entry.id] = result.lessons[n]
    corpus.entries = [fresh.get(e.id, e) for e in corpus.entries]
    return corpus


def renamed_shards(corpus: Corpus) -> list[Shard]:
    """The shards that hold a renamed trace."""
    new_ids = set(corpus.renamed.values())
    return corpus.shards_of(e for e in corpus.entries if e.id in new_ids)


def settle_ids(entries: list[IndexEntry]) -> tuple[list[IndexEntry], list[Skip], dict[tuple[str, str], str]]:
    """`ingest.settle_ids`, the id rule `load_traces` applies, over index entries. Returns the
    kept entries (renamed where their id collided), the skips and the renames."""
    kept, skips, renamed = id_rule([(e.id, e.digest, e.path, e.record) for e in entries])
    return [entries[at] if new_id == entries[at].id else replace(entries[at], id=new_id) for at, new_id in kept], skips, renamed


def paths_of(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [str(Path(p)) for p in paths]


def corpus_of(ingested: IngestResult, job: ShardJob) -> Corpus:
    """The corpus of traces already in memory, as the map stage would give it: the refresh
    job, previews and held-out folds read and filter before they distil (ids already unique)."""
    shard = Shard(order=0, path="<memory>")
    entries, lessons = [], {}
    for seq, trace in enumerate(ingested.traces):
        entry, packed = entry_and_lessons(trace, shard.order, seq, job)
        entries.append(entry)
        if packed is not None:
            lessons[entry.id] = packed
    labels = LabelBook(sources=tuple(ingested.label_sources), threshold=job.labels.threshold)
    return Corpus(entries, lessons, list(ingested.skips), [r for r in ingested.fidelity if lossy(r)],
                  fidelity_summary(ingested.fidelity), dict(ingested.redactions), labels, [], [shard],
                  held=list(ingested.traces))


def reread(corpus: Corpus, config: Config) -> Iterator[Trace]:
    """The corpus's traces again, in stream order, one at a time (the model analysts and the
    held-out gate need them whole): its shards read again (or the traces it holds), kept only if
    the index kept them, each id once."""
    wanted = {e.id: e.digest for e in corpus.entries}
    if corpus.held is not None:
        yield from (t for t in corpus.held if wanted.pop(t.id, None) == t.digest())
        return
    job = ShardJob(config, corpus.labels, "index", renamed=corpus.renamed)
    for shard in corpus.shards_of(corpus.entries):
        for trace in iter_shard(shard, job, ShardResult(shard)):
            if wanted.pop(trace.id, None) == trace.digest():
                yield trace
