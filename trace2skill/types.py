"""The canonical data model shared by every stage.

A `Trace` is close to ATIF (Harbor's Agent Trajectory Interchange Format) with the outcome
label kept beside the steps, because most formats store the label elsewhere. Lessons carry
their evidence as trace ids and step indices; support counts are *derived* from that evidence,
never claimed by a model, so they stay exact through every merge level.

All models are frozen: stages return new objects instead of mutating shared ones, which is
what lets LangGraph run analysts in parallel and replay them from a checkpoint.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import pickle
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Literal, TypeAlias

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - a dependency; without it digests are computed by json.dumps alone
    _orjson = None

from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema, JsonValue, WrapSerializer, WrapValidator
from pydantic_core import core_schema

Outcome = Literal["success", "failure", "unknown"]
StepSource = Literal["system", "user", "agent", "tool"]
LessonKind = Literal["pitfall", "procedure", "fact", "heuristic"]
ConflictStatus = Literal["resolved", "needs-review"]

JSONValue: TypeAlias = JsonValue
"""Any value JSON can hold (null, bool, number, string, list, object), recursively: what a trace
file, a state file or a model reply holds before a reader has checked its shape. One alias, so
"JSON as read" is one type everywhere (pydantic's, which it can also validate)."""
JSONObject: TypeAlias = dict[str, JSONValue]
"""A JSON object: string keys, JSON values."""
JSONFields: TypeAlias = Annotated[JSONObject, GetPydanticSchema(
    lambda _source, _handler: core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema()))]
"""A `JSONObject` field of a pydantic model, which pydantic checks only as an object with string
keys: the values were read from JSON already, and checking each one again costs about nine times
as much per model (measured on 50 nested records); same JSON schema and output as before."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, defer_build=True)


def content_hash(payload: object) -> str:
    """A short, stable hash of any JSON-able value (sorted keys, no whitespace; any other value
    is hashed by its `str`)."""
    return hashlib.sha256(_canonical_json(payload)).hexdigest()[:16]


def _canonical_json(payload: object) -> bytes:
    """The UTF-8 bytes every content hash is taken over: `json.dumps` with sorted keys, no
    whitespace, non-ASCII kept, anything else as `str`. Hashes are persisted (state, journal,
    provenance), so these bytes must never change."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


class _StreamedObject:
    """A JSON object hashed a member at a time: `plain` values whole, `streamed` ones
    (`_StreamedList`, `_StreamedObject`) piece by piece."""

    def __init__(self, plain: Mapping[str, object], streamed: Mapping[str, object]):
        self.plain, self.streamed = plain, streamed


class _StreamedList:
    """A JSON list hashed an item at a time (its items may be streamed objects too)."""

    def __init__(self, items: Iterable[object]):
        self.items = items


def _hash_value(digest: "hashlib._Hash", value: object) -> None:
    """Feed `digest` the bytes `_canonical_json` gives `value`, streamed parts one piece at a
    time: the same bytes, without holding a long list's items as dicts, or their text, at once."""
    if isinstance(value, _StreamedList):
        digest.update(b"[")
        for n, item in enumerate(value.items):
            if n:
                digest.update(b",")
            _hash_value(digest, item)
        digest.update(b"]")
    elif isinstance(value, _StreamedObject):
        for n, key in enumerate(sorted([*value.plain, *value.streamed])):
            digest.update((("," if n else "{") + json.dumps(key, ensure_ascii=False) + ":").encode("utf-8"))
            _hash_value(digest, value.streamed[key] if key in value.streamed else value.plain[key])
        digest.update(b"}" if value.plain or value.streamed else b"{}")
    else:
        digest.update(_canonical_json(value))


def _fast_canonical_json(payload: object, floats: Iterable[object]) -> bytes:
    """`_canonical_json(payload)`, several times faster, for a payload of JSON types only (str
    keys) whose floats are all in `floats`. orjson writes the same bytes as `json.dumps` for
    those, except for floats in exponent notation (`1e-07` / `1e-7`), non-finite floats (`NaN`
    / `null`), integers beyond 64 bits and lone surrogates; the first two are checked here,
    orjson refuses the last two, and in every such case `json.dumps` is used."""
    if _orjson is None or not all(type(f) is float and _orjson.dumps(f) == float.__repr__(f).encode() for f in floats):
        return _canonical_json(payload)
    try:
        return _orjson.dumps(payload, option=_orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate, a non-str key
        return _canonical_json(payload)


def _floats(value: object) -> list[object]:
    """Every float (and anything that is not a plain JSON value) inside `value`; iterative, so
    a hostile nesting depth costs no recursion."""
    found: list[object] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not (item is None or type(item) in (str, int, bool)):
            found.append(item)
    return found


LOCATION_KEYS = frozenset({"label_source"})
"""`Trace.extra` keys that record where something was read from, not what was read."""


class ToolCall(_Frozen):
    id: str | None = None
    """The call id used to pair the call with its observation, when the format has one."""
    name: str
    """Tool or function name; `bash` for shell commands written in message text."""
    arguments: str = ""
    """Arguments as the agent wrote them: a JSON string or raw command text."""


class Observation(_Frozen):
    call_id: str | None = None
    """The id of the tool call this result answers, when known."""
    content: str = ""
    """What the environment returned."""
    is_error: bool = False
    """True when the tool reported an error (non-zero exit, exception, timeout, error flag)."""
    exit_code: int | None = None
    """Process exit status, when the format records one."""


class Step(_Frozen):
    index: int
    """Position in the trajectory, from 0."""
    source: StepSource
    """Who produced the step."""
    message: str = ""
    """Visible text of the step."""
    reasoning: str | None = None
    """Hidden or separate reasoning text, when the format keeps it apart."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls the agent made in this step."""
    observations: tuple[Observation, ...] = ()
    """Results that came back for this step's tool calls (or environment feedback)."""
    extra: JSONFields = Field(default_factory=dict)
    """Format-specific fields we do not model."""


class SourceRef(_Frozen):
    path: str
    """File the trajectory was read from, as given on the command line."""
    record: str | None = None
    """Where inside the file: a line number, list index or record id."""


class Trace(_Frozen):
    id: str
    """Stable trajectory id (task or session id from the file, else derived from its content)."""
    task: str = ""
    """The task statement the agent was given."""
    agent: str | None = None
    """Agent name and version, when known."""
    model: str | None = None
    """Model that drove the agent, when known."""
    steps: tuple[Step, ...] = ()
    """Ordered steps."""
    outcome: Outcome = "unknown"
    """Binary label from the trace, a results file or a labels file."""
    reward: float | None = None
    """Scalar reward when the source has one."""
    source: SourceRef
    """Pointer back to the original file and record."""
    format: str = "unknown"
    """Name of the reader that produced this trace."""
    extra: JSONFields = Field(default_factory=dict)
    """Format-specific fields we do not model."""

    def digest(self) -> str:
        """Content hash of the trace, used for canonical ordering and incremental refresh.

        Where the trace or its label was read from is left out, so the same trajectory gives
        the same digest whichever path it was given by; the label itself counts. The value is
        `content_hash` of the JSON dump (persisted in state, run ids and provenance, so it must
        not change); it is computed once per trace object and kept beside its fields.
        """
        cached = self.__dict__.get("_digest")
        if cached is None:
            data = self._plain_json()
            if data is None:
                payload = self._payload("json")
                # Only `reward` and the `extra` dicts can hold floats; the other fields are typed str, int, bool.
                floats = _floats([payload["reward"], payload["extra"], [step["extra"] for step in payload["steps"]]])
                data = _fast_canonical_json(payload, floats)
            cached = hashlib.sha256(data).hexdigest()[:16]
            self.__dict__["_digest"] = cached
        return cached

    def _payload(self, mode: str) -> dict[str, object]:
        """The dump a digest is taken over: every field but `source`, location keys left out."""
        payload = self.model_dump(mode=mode, exclude={"source"})
        payload["extra"] = {k: v for k, v in payload["extra"].items() if k not in LOCATION_KEYS}
        return payload

    def _plain_json(self) -> bytes | None:
        """The digest's bytes written by orjson from the fields themselves, each nested step,
        call and observation through `_fields_of` (its own field dict): what orjson writes
        for the Python-mode dump, without building that dump (which cost as much as the
        hash). Or None when they might differ from the JSON-mode dump's: that dump differs
        from the fields only in tuples, which orjson writes as arrays, and in non-JSON values
        inside the `extra` dicts, so any such value, a float orjson would write differently,
        or anything orjson refuses sends the digest down the JSON-mode path."""
        if _orjson is None:
            return None
        fields = self.__dict__
        payload = {name: fields[name] for name in _DIGEST_FIELDS}
        payload["extra"] = {k: v for k, v in payload["extra"].items() if k not in LOCATION_KEYS}
        floats = _floats([payload["reward"], payload["extra"], [step.extra for step in self.steps]])
        if not all(type(f) is float and _orjson.dumps(f) == float.__repr__(f).encode() for f in floats):
            return None
        try:
            return _orjson.dumps(payload, default=_fields_of, option=_orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate, a non-str key
            return None

    def model_copy(self, *, update: Mapping[str, object] | None = None, deep: bool = False) -> "Trace":
        """A copy; one with fields changed does not keep the original's cached digest."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            copied.__dict__.pop("_digest", None)
        return copied


_DIGEST_FIELDS = tuple(name for name in Trace.model_fields if name != "source")
"""`Trace`'s fields but `source`: what a digest is taken over."""
_PART_FIELDS = {model: len(model.model_fields) for model in (Step, ToolCall, Observation)}


def _fields_of(value: object) -> dict[str, object]:
    """For orjson's `default`: a step's, call's or observation's fields (its `__dict__`, which
    holds exactly its fields: what the Python-mode dump gives for it). Anything else is
    refused, as orjson refuses what it cannot write."""
    count = _PART_FIELDS.get(type(value))
    if count is not None and count == len(value.__dict__):
        return value.__dict__
    raise TypeError(f"not a trace part: {type(value).__name__}")


class Skip(_Frozen):
    """A file or record that could not be read, with the precise reason."""

    path: str
    record: str | None = None
    reason: str


class Evidence(_Frozen):
    trace_id: str
    """Trajectory the lesson was observed in."""
    outcome: Outcome
    """That trajectory's label, copied here so support counts need no lookup."""
    steps: tuple[int, ...] = ()
    """Step indices the lesson is grounded in."""
    quote: str = ""
    """A short verbatim excerpt from those steps."""


PACK_EVIDENCE_FROM = 16
"""A lesson's or rule's evidence of at least this many items is held packed (`PackedEvidence`)."""

EVIDENCE_CHUNK = 1024
"""Rows per compressed chunk of `PackedEvidence`: reading packed evidence holds one chunk at a time."""

EvidenceRow: TypeAlias = tuple[str, str, tuple[int, ...], str]
"""An evidence item as plain values, `(trace_id, outcome, steps, quote)`: what packed evidence
holds, and what merges, the author and provenance.json's encoder read, without an `Evidence`
object per item (about 600 bytes each; the top rule of 50,000 trajectories has 51,000 items)."""


def row_key(row: EvidenceRow) -> tuple[str, tuple[int, ...], str]:
    """The order evidence is kept in (`Lesson.create`): trace id, steps, quote."""
    return row[0], row[2], row[3]


def row_json(row: EvidenceRow) -> dict[str, object]:
    """`Evidence.model_dump(mode="json")` of the item `row` holds."""
    return {"trace_id": row[0], "outcome": row[1], "steps": list(row[2]), "quote": row[3]}


def evidence_rows(evidence: Iterable[Evidence]) -> Iterator[EvidenceRow]:
    """The items of `evidence` (a tuple of `Evidence` or `PackedEvidence`) as rows, in order."""
    if isinstance(evidence, PackedEvidence):
        return evidence.rows()
    return ((e.trace_id, e.outcome, e.steps, e.quote) for e in evidence)


def sorted_rows(evidence: Iterable[Evidence]) -> Iterator[EvidenceRow]:
    """The rows of `evidence` in `row_key` order; equal keys keep their order (a stable sort).
    Packed evidence that is in that order already is streamed a chunk at a time."""
    if isinstance(evidence, PackedEvidence) and evidence.ordered:
        return evidence.rows()
    return iter(sorted(evidence_rows(evidence), key=row_key))


def key_runs(streams: Iterable[Iterable[EvidenceRow]]) -> Iterator[list[EvidenceRow]]:
    """Rows of several streams, each in `row_key` order (`sorted_rows`), merged in that order (a
    k-way merge), a run of rows with one key at a time; within a run, rows come in the order of
    `streams`, then in their own order. Holds one chunk of each packed input, never the union."""
    run: list[EvidenceRow] = []
    for row in heapq.merge(*streams, key=row_key):
        if run and row_key(run[-1]) != row_key(row):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def union_evidence(groups: Iterable[Iterable[Evidence]]) -> "PackedEvidence | tuple[Evidence, ...]":
    """The evidence of several lessons as one merged lesson holds it: one item per `row_key`
    (the last one, as `{key: item for group in groups for item in group}` keeps), sorted by
    it; packed from `PACK_EVIDENCE_FROM` items on. Streamed (`key_runs`)."""
    return evidence_of_rows(run[-1] for run in key_runs(sorted_rows(g) for g in groups))


def evidence_of_rows(rows: Iterable[EvidenceRow]) -> "PackedEvidence | tuple[Evidence, ...]":
    """`rows` as a lesson or record holds its evidence: packed from `PACK_EVIDENCE_FROM` items on."""
    return _small_as_tuple(PackedEvidence.of_rows(rows))


def _small_as_tuple(packed: "PackedEvidence") -> "PackedEvidence | tuple[Evidence, ...]":
    return packed if packed.count >= PACK_EVIDENCE_FROM else packed.items()


def distinct_trace_ids(evidence: Iterable[Evidence]) -> Iterator[str]:
    """The sorted distinct trace ids of `evidence` (`Supported.trace_ids`), streamed when it is
    packed in order (its rows are then grouped by trace id)."""
    if isinstance(evidence, PackedEvidence) and evidence.ordered:
        last = None
        for row in evidence.rows():
            if row[0] != last:
                last = row[0]
                yield last
        return
    yield from sorted({row[0] for row in evidence_rows(evidence)})


class RowPacker:
    """Packs rows as they come: compressed chunks of `EVIDENCE_CHUNK` rows, and the counts
    (distinct traces, failing, succeeding) worked out on the way when the rows come in
    `row_key` order (then grouped by trace id), else recounted from the chunks at the end."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.buffer: list[EvidenceRow] = []
        self.count = self.support = self.failing = self.succeeding = 0
        self.ordered = True
        self.last: EvidenceRow | None = None
        self.outcomes: set[str] = set()
        """Outcomes of the trace whose rows are coming (the current group)."""

    def add(self, row: EvidenceRow) -> None:
        last = self.last
        if last is None or row[0] != last[0]:
            self._close_trace()
            self.support += 1
        if last is not None and row_key(row) < row_key(last):
            self.ordered = False
        self.outcomes.add(row[1])
        self.last = row
        self.count += 1
        self.buffer.append(row)
        if len(self.buffer) >= EVIDENCE_CHUNK:
            self._flush()

    def _close_trace(self) -> None:
        self.failing += "failure" in self.outcomes
        self.succeeding += "success" in self.outcomes
        self.outcomes = set()

    def _flush(self) -> None:
        if self.buffer:
            self.chunks.append(zlib.compress(pickle.dumps(self.buffer, protocol=pickle.HIGHEST_PROTOCOL), 1))
            self.buffer = []

    def packed(self) -> "PackedEvidence":
        self._close_trace()
        self._flush()
        packed = PackedEvidence(tuple(self.chunks), self.count, self.support, self.failing, self.succeeding, self.ordered)
        if not self.ordered:  # counted per run of equal trace ids: recount over distinct ids
            rows = list(packed.rows())
            packed.support = len({row[0] for row in rows})
            packed.failing = len({row[0] for row in rows if row[1] == "failure"})
            packed.succeeding = len({row[0] for row in rows if row[1] == "success"})
        return packed


class PackedEvidence(Sequence[Evidence]):
    """A long evidence tuple held compressed, with its support counts worked out once.

    Every rule lists every trajectory that supports it, so the consolidated lessons of a large
    corpus carry the whole corpus's evidence: about 600 bytes an item as objects, some 250,000
    items at 50,000 trajectories. Held packed (the items as plain tuples, `EvidenceRow`, pickled
    and compressed in chunks of `EVIDENCE_CHUNK`), they cost a few dozen bytes an item, and are
    read a chunk at a time (`rows`) by whatever reads them: a merge (`union_evidence`), the
    author, provenance.json's encoder. It reads, compares, hashes and serialises as the tuple it
    holds, so nothing downstream can tell the difference but memory: `EvidenceTuple` fields
    pack what they validate from `PACK_EVIDENCE_FROM` items on. `ordered` says the rows are in
    `row_key` order, which lets merges and readers stream them."""

    __slots__ = ("chunks", "count", "support", "failing", "succeeding", "ordered")

    def __init__(self, chunks: "tuple[bytes, ...] | bytes", count: int, support: int, failing: int, succeeding: int,
                 ordered: bool = False):
        self.chunks = (chunks,) if isinstance(chunks, bytes) else tuple(chunks)
        self.count, self.support, self.failing, self.succeeding, self.ordered = count, support, failing, succeeding, ordered

    @classmethod
    def of(cls, evidence: Iterable[Evidence]) -> "PackedEvidence":
        return cls.of_rows(evidence_rows(evidence))

    @classmethod
    def of_rows(cls, rows: Iterable[EvidenceRow]) -> "PackedEvidence":
        packer = RowPacker()
        for row in rows:
            packer.add(row)
        return packer.packed()

    def rows(self) -> Iterator[EvidenceRow]:
        """The items as rows, in order, one chunk in memory at a time."""
        for chunk in self.chunks:
            yield from pickle.loads(zlib.decompress(chunk))  # noqa: S301 - packed by this process, never read from input

    def items(self) -> tuple[Evidence, ...]:
        return tuple(self)

    def __reduce__(self) -> tuple[type["PackedEvidence"], tuple[object, ...]]:
        return PackedEvidence, (self.chunks, self.count, self.support, self.failing, self.succeeding, self.ordered)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Evidence]:
        """The items one at a time (a reader that streams them never holds them all as objects)."""
        return (Evidence(trace_id=t, outcome=o, steps=st, quote=q) for t, o, st, q in self.rows())

    def __getitem__(self, index):  # type: ignore[no-untyped-def] - int or slice, as a tuple's
        return self.items()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedEvidence):
            return self.chunks == other.chunks or (
                self.count == other.count and all(a == b for a, b in zip(self.rows(), other.rows())))
        return self.items() == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.items())

    def __repr__(self) -> str:
        return f"PackedEvidence({self.count} items)"


def _pack_long(value: object, handler: core_schema.ValidatorFunctionWrapHandler) -> object:
    if isinstance(value, PackedEvidence):
        return _small_as_tuple(value)
    validated = handler(value)
    return PackedEvidence.of(validated) if len(validated) >= PACK_EVIDENCE_FROM else validated


def _dump_items(value: object, handler: core_schema.SerializerFunctionWrapHandler) -> object:
    return handler(value.items() if isinstance(value, PackedEvidence) else value)


EvidenceTuple: TypeAlias = Annotated[tuple[Evidence, ...], WrapValidator(_pack_long), WrapSerializer(_dump_items)]
"""A lesson's or rule's evidence: a tuple, held as `PackedEvidence` from `PACK_EVIDENCE_FROM` items on."""


class Supported:
    """Support counts derived from `evidence`, shared by lessons and written rules.

    Counts are distinct trajectories, so two quotes from one trajectory count once. Packed
    evidence carries its counts (`PackedEvidence`), worked out the same way when it was packed.
    """

    evidence: tuple[Evidence, ...]

    @property
    def trace_ids(self) -> tuple[str, ...]:
        return tuple(distinct_trace_ids(self.evidence))

    @property
    def failing_support(self) -> int:
        evidence = self.evidence
        if isinstance(evidence, PackedEvidence):
            return evidence.failing
        return len({e.trace_id for e in evidence if e.outcome == "failure"})

    @property
    def succeeding_support(self) -> int:
        evidence = self.evidence
        if isinstance(evidence, PackedEvidence):
            return evidence.succeeding
        return len({e.trace_id for e in evidence if e.outcome == "success"})

    @property
    def support(self) -> int:
        evidence = self.evidence
        if isinstance(evidence, PackedEvidence):
            return evidence.support
        return len({e.trace_id for e in evidence})


class Lesson(Supported, _Frozen):
    """One transferable rule, with the evidence behind it."""

    id: str
    """Content-derived id (stable across runs for the same lesson and evidence)."""
    title: str
    """Short, specific name of the rule."""
    rule: str
    """The rule, in the imperative."""
    when: str
    """When the rule applies."""
    kind: LessonKind
    """pitfall (from failures), procedure, fact or heuristic."""
    signature: str
    """Normalised key that groups lessons about the same thing (e.g. `timeout:pytest`)."""
    polarity: Literal["do", "avoid"] = "do"
    """Whether the rule recommends or forbids its subject; used to spot contradictions."""
    subject: str = ""
    """The tool, command or concept the rule is about (normalised), for conflict checks."""
    evidence: EvidenceTuple
    """Every observation that backs the rule, through every merge level."""
    merged_from: tuple[str, ...] = ()
    """Ids of the lessons this one was merged from (empty for a leaf)."""
    cause: str = ""
    """For a failure lesson: why the run failed, as the error analyst diagnosed it (empty otherwise)."""

    @classmethod
    def create(cls, **fields: object) -> "Lesson":
        """Build a lesson whose id is derived from its content (signature, wording, evidence)."""
        evidence = fields.get("evidence", ())
        if not (isinstance(evidence, PackedEvidence) and evidence.ordered):  # packed in order: sorted already
            evidence = tuple(sorted(evidence, key=lambda e: (e.trace_id, e.steps, e.quote)))
        fields["evidence"] = evidence
        fields.setdefault("merged_from", ())
        fields["merged_from"] = tuple(sorted(fields["merged_from"]))
        basis = {k: v for k, v in fields.items() if k != "id"}
        probe = cls.model_construct(id="", **basis)
        unhashed = {"id"} if fields.get("cause") else {"id", "cause"}  # ids of lessons without a cause stay as they were
        fields["id"] = "L-" + _evidence_streamed_hash(probe, unhashed)[:12]
        return cls.model_validate(fields)


def _evidence_streamed_hash(lesson: "Lesson", exclude: set[str]) -> str:
    """`content_hash(lesson.model_dump(mode="json", exclude=exclude))`, its evidence hashed one
    item at a time (the same bytes without the whole list as dicts: at the top of a large merge
    tree one lesson may hold the evidence of tens of thousands of trajectories)."""
    digest = hashlib.sha256()
    _hash_value(digest, _streamed_lesson(lesson, exclude))
    return digest.hexdigest()[:16]


def _streamed_lesson(lesson: "Lesson", exclude: set[str] = frozenset()) -> "_StreamedObject | dict":
    """`lesson.model_dump(mode="json", exclude=exclude)` for hashing, its evidence read a row at
    a time when it is packed (16 items or more); a short list is dumped with the rest, which
    hashes to the same bytes several times faster."""
    if not isinstance(lesson.evidence, PackedEvidence):
        return lesson.model_dump(mode="json", exclude=exclude)
    return _StreamedObject(lesson.model_dump(mode="json", exclude={*exclude, "evidence"}),
                           {"evidence": _StreamedList(row_json(row) for row in evidence_rows(lesson.evidence))})


def _streamed_conflict(conflict: "Conflict") -> "_StreamedObject":
    """`conflict.model_dump(mode="json")` for hashing, its two lessons as `_streamed_lesson` gives them."""
    return _StreamedObject(conflict.model_dump(mode="json", exclude={"a", "b"}),
                           {"a": _streamed_lesson(conflict.a), "b": _streamed_lesson(conflict.b)})


class Conflict(_Frozen):
    """Two lessons that disagree, recorded rather than silently settled."""

    id: str
    a: Lesson
    b: Lesson
    reason: str
    """Why they contradict (model judgement or programmatic signal)."""
    detected_by: Literal["polarity", "llm", "existing-skill", "safety"]
    status: ConflictStatus
    resolution: str | None = None
    """Which rule settled it (stronger support, narrower scope, newer evidence), if resolved."""
    winner: str | None = None
    """Id of the lesson kept in SKILL.md when resolved."""


class LessonSet(_Frozen):
    """The unit the merge tree works on: lessons plus the conflicts found so far."""

    lessons: tuple[Lesson, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    level: int = 0
    """Merge level that produced this set (0 = straight from an analyst)."""
    sources: tuple[str, ...] = ()
    """Trace ids whose analysis fed this set (including those that yielded no lesson)."""

    def key(self) -> str:
        """`content_hash(self.model_dump(mode="json"))`, hashed one lesson and one conflict at a
        time: the same bytes without the whole set's dump, which at the top of a large merge tree
        is every evidence item of the corpus as dicts and then as one string."""
        plain = {"level": self.level, "sources": list(self.sources)}
        lists = {"conflicts": _StreamedList(_streamed_conflict(c) for c in self.conflicts),
                 "lessons": _StreamedList(_streamed_lesson(lesson) for lesson in self.lessons)}
        assert {*plain, *lists} == set(type(self).model_fields), "LessonSet.key must hash every field"
        digest = hashlib.sha256()
        _hash_value(digest, _StreamedObject(plain, lists))
        return digest.hexdigest()[:16]


class Usage(_Frozen):
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    """US dollars, when the provider's price is known."""

    def __add__(self, other: "Usage") -> "Usage":
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost=cost,
        )


class RunResult(_Frozen):
    """What a distil run did, for the summary, the PR body and tests."""

    skill_dir: str
    run_id: str
    """Derived from the inputs, configuration and prompt versions; names the checkpoint thread."""
    mode: Literal["offline", "llm"]
    model: str
    traces_read: int
    skipped: tuple[Skip, ...]
    analysed: int
    outcomes: dict[str, int]
    lessons: int
    rules_written: int
    conflicts: tuple[Conflict, ...]
    merge_levels: int
    version: str
    previous_version: str | None
    changed: bool
    usage: Usage
    seconds: float
    redactions: dict[str, int] = Field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """Things a reviewer should look at, such as lessons quoting task-specific literals."""
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)
    """Trajectory id -> the file (and record) it was read from, for the report; not in `--json`."""
    gate: JSONFields | None = None
    """The gate's decision on this candidate (`gate.GateDecision.as_dict()`), when a gate ran."""
    fidelity: JSONFields = Field(default_factory=dict)
    """What the input files held and what was read from them, in total (`ingest.fidelity.summary`)."""
