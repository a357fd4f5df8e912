"""Behaviours: what resolved runs do that failed runs do not (and the reverse), tested honestly.

Every run is reduced to the behaviours it *showed*, each with the steps and a quote that show
it. The generic ones work for any agent, on tool or command families (`book_reservation`,
`pytest`, `git diff`, `Edit`):

* `uses:X`: the run used X at least once;
* `sequence:A > B`: X = B came right after A (consecutive distinct families);
* `after-edit:X`: X ran after the run's last file write (only runs that wrote files).

Packs add their own (the SWE pack's `behaviour:reproduce-first`, ...), judged on the runs
where the pack applies. The corpus pass (`contrast`) then builds, for each candidate, the 2x2
table of resolved and failed runs that did or did not show it and keeps it only when:

* at least `MIN_RUNS` runs showed it and `MIN_ARGUING` of them are on the side that argues
  for the rule (resolved runs for a `do` rule, failed runs for an `avoid` rule);
* the effect is large enough: the shares differ by at least `MIN_DIFFERENCE`, and one side's
  share is at least `MIN_RATIO` times the other's, for doing it or for not doing it (so 100 %
  vs 80 % counts: 0 % vs 20 % of runs skipped it);
* Fisher's exact test, two-sided, Benjamini-Hochberg-adjusted over every candidate of the
  same source tested, gives q <= `FDR`. The generic candidates are one family of hypotheses
  (hundreds of them, mined from the data); each pack's behaviours, stated in advance, are
  another, so a pack's few hypotheses are not drowned by the generic n-grams.

The direction of the difference decides the polarity, so no rule can argue against its own
numbers; the rule states all four counts, the test and what the evidence lists.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..types import Evidence, Lesson, Outcome
from . import quotes
from .runs import Run
from .stats import benjamini_hochberg, fisher_exact

MIN_RUNS = 5
MIN_ARGUING = 3
MIN_RATIO = 1.5
MIN_DIFFERENCE = 0.05
FDR = 0.05
_SKIPPED_FAMILIES = frozenset({"", "unknown", "shell"})


@dataclass(frozen=True)
class Shown:
    """A behaviour one run showed: its signature, the steps that show it and a quote."""

    signature: str
    steps: tuple[int, ...]
    quote: str


@dataclass(frozen=True)
class Behaviours:
    """What the corpus pass needs of one labelled run: the behaviours it showed and the
    sources (`generic`, pack names) it was judged by. A run keeps it packed (`pack`), about
    1 KB instead of 14 KB of objects, so a large corpus's behaviours fit in memory."""

    shown: tuple[Shown, ...] = ()
    sources: tuple[str, ...] = ()

    def pack(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), 1)

    @staticmethod
    def unpack(blob: bytes) -> "Behaviours":
        value = pickle.loads(zlib.decompress(blob))  # noqa: S301 - packed by this run, never read from input
        assert isinstance(value, Behaviours)
        return value


class Labelled(Protocol):
    """A run as the statistics see it (a `Trace`, or a `stream.IndexEntry`)."""

    @property
    def id(self) -> str: ...

    @property
    def outcome(self) -> Outcome: ...


Tally = dict[str, list[int]]
"""Per behaviour signature (or population source): [resolved runs, failed runs]."""


@dataclass(frozen=True)
class Verdict:
    """The corpus test of one candidate behaviour."""

    signature: str
    population: int
    resolved: tuple[int, int]
    """(resolved runs that showed it, resolved runs in the population)."""
    failed: tuple[int, int]
    """(failed runs that showed it, failed runs in the population)."""
    p: float
    q: float = 1.0
    tested: int = 0

    @property
    def shares(self) -> tuple[float, float]:
        return self.resolved[0] / self.resolved[1], self.failed[0] / self.failed[1]

    @property
    def polarity(self) -> str:
        success_share, failure_share = self.shares
        return "do" if success_share > failure_share else "avoid"


def generic_behaviours(runs: list[Run], writes: list[set[str]]) -> list[Shown]:
    """The generic behaviours one run showed (module docstring), first occurrence of each."""
    shown: dict[str, Shown] = {}
    for run in runs:
        if run.family not in _SKIPPED_FAMILIES:
            shown.setdefault(f"uses:{run.family}", Shown(f"uses:{run.family}", (run.step,), quotes.command_line(_called(run))))
    families = [r for r in runs if r.family not in _SKIPPED_FAMILIES]
    for before, after in zip(families, families[1:]):
        if before.family != after.family:
            signature = f"sequence:{before.family} > {after.family}"
            quote = quotes.joined(quotes.command_line(_called(before)), quotes.command_line(_called(after)))
            shown.setdefault(signature, Shown(signature, (before.step, after.step), quote))
    written = [i for i, targets in enumerate(writes) if targets]
    if written:
        last = runs[written[-1]]
        for run in runs[written[-1] + 1:]:
            if run.family not in _SKIPPED_FAMILIES:
                signature = f"after-edit:{run.family}"
                shown.setdefault(signature, Shown(signature, (last.step, run.step), quotes.command_line(_called(run))))
    return list(shown.values())


def _called(run: Run) -> str:
    return run.command if run.command and run.family != run.tool.lower() else f"{run.tool} {run.arguments}".strip()


def contrast(shown: Mapping[str, Iterable[Shown]], traces: Iterable[Labelled], populations: Mapping[str, set[str]]) -> list[Verdict]:
    """Test every candidate behaviour; return the kept ones (module docstring), by signature.

    Args:
        shown: per trace id, the behaviours it showed.
        traces: the corpus (outcomes are read from it).
        populations: per behaviour-signature prefix source (`generic` or a pack name), the ids
            of the traces it was judged on; a signature's source is `populations` key
            `source_of(signature)`.
    """
    outcome = {t.id: t.outcome for t in traces}
    showed: Tally = {}
    for trace_id, items in shown.items():
        for signature in {item.signature for item in items}:
            count(showed, signature, outcome[trace_id])
    judged: Tally = {}
    for source, ids in populations.items():
        judged[source] = [0, 0]
        for trace_id in ids:
            count(judged, source, outcome[trace_id])
    return tested(showed, judged)


def count(tally: Tally, key: str, outcome: Outcome) -> None:
    """Add one run of `outcome` to `tally[key]` (unlabelled runs are not counted)."""
    if outcome in ("success", "failure"):
        tally.setdefault(key, [0, 0])[outcome == "failure"] += 1


def tested(showed: Tally, judged: Tally) -> list[Verdict]:
    """`contrast` on counts: runs that showed each behaviour, runs each source judged, per side."""
    verdicts = []
    for signature, (did_s, did_f) in sorted(showed.items()):
        resolved, failed = judged.get(source_of(signature), (0, 0))
        if not resolved or not failed or did_s + did_f < MIN_RUNS:
            continue
        p = fisher_exact(did_s, resolved - did_s, did_f, failed - did_f)
        verdicts.append(Verdict(signature, resolved + failed, (did_s, resolved), (did_f, failed), p))
    corrected = []
    for source in sorted({source_of(v.signature) for v in verdicts}):
        family = [v for v in verdicts if source_of(v.signature) == source]
        adjusted = benjamini_hochberg([v.p for v in family])
        corrected += [Verdict(**{**v.__dict__, "q": q, "tested": len(family)}) for v, q in zip(family, adjusted)]
    return [v for v in corrected if _kept(v)]


def _kept(verdict: Verdict) -> bool:
    success_share, failure_share = verdict.shares
    arguing = verdict.resolved[0] if verdict.polarity == "do" else verdict.failed[0]
    low, high = sorted((success_share, failure_share))
    ratio_ok = high >= MIN_RATIO * low or (1 - low) >= MIN_RATIO * (1 - high)
    large = ratio_ok and high - low >= MIN_DIFFERENCE
    return arguing >= MIN_ARGUING and large and verdict.q <= FDR


def source_of(signature: str) -> str:
    """`generic` for the generic behaviours, else the pack's name (`behaviour:*` is the SWE pack's)."""
    return "generic" if signature.split(":", 1)[0] in ("uses", "sequence", "after-edit") else "swe"


def evidence_for(verdict: Verdict, shown: Mapping[str, Iterable[Shown]], traces: Iterable[Labelled]) -> tuple[Evidence, ...]:
    """The evidence of a kept behaviour: the runs on the side that argues for its rule."""
    wanted = "success" if verdict.polarity == "do" else "failure"
    found = []
    for trace in traces:
        if trace.outcome != wanted:
            continue
        item = next((s for s in shown.get(trace.id, ()) if s.signature == verdict.signature), None)
        if item is not None:
            found.append(Evidence(trace_id=trace.id, outcome=trace.outcome, steps=item.steps, quote=item.quote))
    return tuple(found)


def numbers(verdict: Verdict, shown: str) -> str:
    """The sentence that states a behaviour's four counts, the test, and what the evidence lists.

    It names the behaviour (`shown`, what a run that showed it did), so an avoid-rule's counts
    never read as counts of what the rule recommends.
    """
    success_share, failure_share = verdict.shares
    (did_s, n_s), (did_f, n_f) = verdict.resolved, verdict.failed
    listed = f"{did_s} resolved runs" if verdict.polarity == "do" else f"{did_f} failed runs"
    return (f"Runs where {shown}: {did_s} of {n_s} resolved ({success_share:.0%}) and {did_f} of {n_f} failed "
            f"({failure_share:.0%}); two-sided Fisher exact p = {verdict.p:.2g}, Benjamini-Hochberg q = {verdict.q:.2g} "
            f"over the {verdict.tested} candidate behaviours of its kind. The evidence lists those {listed}.")


def as_lesson(verdict: Verdict, wording: dict[str, str], shown: str, evidence: tuple[Evidence, ...]) -> Lesson:
    fields = {**wording, "rule": f"{wording['rule']} {numbers(verdict, shown)}".strip()}
    return Lesson.create(signature=verdict.signature, evidence=evidence, **fields)
