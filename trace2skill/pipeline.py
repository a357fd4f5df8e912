"""The whole distil run, top to bottom.

ingest -> choose the analyst -> quote and cap (preflight) -> check the model -> analyse +
consolidate (the graph) -> finish (selection, safety holds) -> author -> validate -> gate (when
configured) -> write.
Everything the run decides is derived from its inputs: the run id hashes the trace digests,
the settings that shape the model's answers and the prompt versions, so the same inputs give
the same skill, and a rerun of the same command finds the work already paid for in the journal.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .version import __version__
from .analyse import Analyst, analyst_for, is_offline
from .audit import leakage
from .author import RunInfo, SkillBuild, author_skill, validate_build, write_skill_dir
from .budget import Quote, preflight
from .config import Config
from .consolidate import merge_count
from .errors import Interrupted, LLMError, NoInputError, NothingLearned, SkillValidationError
from .fsguard import no_symlinks
from .executor import Executor, map_executor
from .fleet import DrainSwitch, Work, analyse_stream, merge_ready
from .ingest import IngestResult, require_paths
from .ingest.labels import LabelBook
from .ingest.fidelity import loss_warnings
from .journal import AnalysisJournal, journal_path
from .llm import LLMClient, close_clients, sent_sampling
from .prompts import version as prompt_version
from .rules import RuleRecord
from .skill import READY_MARK, check_skill_target, recover_write, staging_dir
from .stream import (Analysis, Corpus, Packed, ShardJob, ShardResult, corpus_of, gather, label_book, plan_shards,
                     renamed_shards, reread, with_renamed)
from .types import LessonSet, RunResult, Skip, Trace, content_hash

if TYPE_CHECKING:
    from langgraph.runtime import RunControl

    from .prepare import Prepared

warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning, module=r"langgraph\.")
"""LangGraph leaves coroutines of cancelled tasks unawaited when a run stops on an error or Ctrl-C;
the stop itself is reported, so the warning is noise."""

Progress = Callable[..., None]
"""Called as `progress(stage, done, total, failed=N, cost=DOLLARS_OR_NONE)`."""
PROMPTS = ("system.md", "analyse_failure.md", "analyse_success.md", "merge.md")
ANSWER_SETTINGS = {"llm": {"model", "api_base", "temperature", "seed", "max_tokens", "structured"},
                   "analyse": {"token_budget", "format", "labels", "success_threshold", "sidechains"},
                   "consolidate": {"fan_in"}, "redact": {"emails", "patterns"}}
"""Settings that change what the analysts and merger answer: these, and only these, are in the run id."""


@dataclass
class Plan:
    """What a run will do before it does it: its analyst, identity, journal and quote."""

    analyst: Analyst
    run: RunInfo
    journal: AnalysisJournal | None
    quote: Quote | None


def plan(config: Config, llm: LLMClient | None, corpus: Corpus, checkpoint: Path | None,
         check: bool = True, source: Path | None = None, quoted: Quote | None = None) -> Plan:
    """Choose the analyst, check the model (when `check` and work is left), quote the work left,
    and refuse a run the caps cannot cover. The check comes first: it is one tiny request and
    fails fast on a wrong key or model, before anything is spent. `quoted` is a quote an
    earlier `plan` of the same run already made and checked (the refresh job quotes before
    touching git), used as it is instead of being made again.

    Raises:
        ProviderRejected: the model, key or structured output does not work (exit 78).
        ConfigError: `--budget` with an unknown price and no `llm.price_in` / `llm.price_out`.
        BudgetRefused: the quote is above `--budget`, or above `budget.approve_above` without `--yes`.
    """
    analyst = analyst_for(config, llm, existing_rules(config, source))
    run = run_info(config, analyst, corpus)
    journal = None
    if checkpoint is not None and analyst.mode == "llm" and config.llm.cache:
        journal = AnalysisJournal(journal_path(checkpoint), run.run_id, analysis_scope(config, analyst))
    estimate = None
    if analyst.mode == "llm":
        analysed = journal.analysed() & {e.digest for e in corpus.entries} if journal is not None else set()
        merges = journal.merges_done() if journal is not None else 0
        if check and len(analysed) < len(corpus.entries):
            asyncio.run(_check(analyst))
        estimate = quoted if quoted is not None else preflight(corpus.entries, config, analyst.model, analysed=analysed, merges_done=merges)
    return Plan(analyst, run, journal, estimate)


def read_corpus(config: Config, offline: bool, paths: list[Path] | None = None, *, ingested: IngestResult | None = None,
                executor: Executor | None = None, progress: Progress | None = None,
                wanted: frozenset[str] | None = None, index_only: bool = False,
                renamed: dict[tuple[str, str], str] | None = None, task_ids: bool | None = None,
                stop: threading.Event | None = None) -> Corpus:
    """The map stage: every trajectory read, indexed and (offline) analysed, one at a time
    (`stream`), by `executor` (default: the one `analyse.executor` names). `wanted` keeps only
    those digests (the refresh job's new trajectories); `index_only` neither analyses nor counts
    prompt tokens (the refresh job's first look); `renamed` applies the ids an earlier look at
    the same inputs settled (`stream.settle_ids`), so a filtered read names traces alike;
    `task_ids` keeps each trajectory's task for held-out folds (default: when the held-out gate
    is configured).
    Setting `stop` ends the read after the shard being read (the CLI's background read).

    Raises:
        NoInputError: no paths were given, or a given path does not exist.
        Interrupted: `stop` was set.
        ConfigError, TraceFormatError: a bad labels file, format or redaction pattern.
    """
    analysis: Analysis = "index" if index_only or not offline else "offline"
    count_tokens = not offline and not index_only
    task_ids = config.gate.mode == "heldout" if task_ids is None else task_ids
    if ingested is not None:
        labels = LabelBook(threshold=config.analyse.success_threshold)
        return corpus_of(ingested, ShardJob(config, labels, analysis, count_tokens=count_tokens, task_ids=task_ids))
    inputs = [str(p) for p in (paths or [Path(p) for p in config.sources])]
    require_paths(inputs)
    shards, path_skips = plan_shards(inputs, config)
    job = ShardJob(config, label_book(inputs, config), analysis, wanted=wanted, renamed=renamed or {},
                   count_tokens=count_tokens, task_ids=task_ids)
    own = executor is None
    executor = executor or map_executor(config, offline)
    try:
        corpus = gather(_counted(executor.map(shards, job), len(shards), progress, stop), shards, path_skips, job.labels, inputs)
        if corpus.renamed:
            again = replace(job, renamed=corpus.renamed, wanted=frozenset(d for _, d in corpus.renamed))
            corpus = with_renamed(corpus, executor.map(renamed_shards(corpus), again))
    finally:
        if own:
            executor.close()
    return corpus


def _counted(results: Iterator[ShardResult], shards: int, progress: Progress | None,
             stop: threading.Event | None = None) -> Iterator[ShardResult]:
    for done, result in enumerate(results, start=1):
        if stop is not None and stop.is_set():
            raise Interrupted("the read was stopped")
        if progress is not None:
            progress("read", done, shards)
        yield result


def distill(
    config: Config,
    llm: LLMClient | None,
    paths: list[Path] | None = None,
    *,
    progress: Progress | None = None,
    checkpoint: Path | None = None,
    write: bool = True,
    control: RunControl | DrainSwitch | None = None,
    rejected: dict[str, int] | None = None,
    on_quote: Callable[[Quote], None] | None = None,
    corpus: Corpus | None = None,
    quoted: Quote | None = None,
    executor: Executor | None = None,
) -> tuple[RunResult, SkillBuild]:
    """Distil trajectories into the skill folder `config.skill_dir()`.

    Args:
        llm: the model client, or None for the offline analyst (the analyst is chosen here, once).
        paths: trace files or folders (ignored when `corpus` is given).
        progress: see `Progress`.
        checkpoint: run-state path; its journal makes a rerun skip work already paid for.
        write: False computes the build without touching the skill folder (and runs no gate).
        control: a `fleet.DrainSwitch` or LangGraph `RunControl`; `request_drain()` on it stops the run resumably.
        rejected: rule ids reviewers removed, with the support they had then.
        on_quote: shown the quote of the work left before any call is made.
        corpus: the map stage already run (`read_corpus`, e.g. by the CLI's label check).
        quoted: the quote `plan` already made for this run (see `plan`), so it is not made twice.
        executor: where the map stage and the model path's prompts run (default: `map_executor`).

    Raises:
        NoInputError: no trajectory could be read. BudgetRefused, ConfigError, ProviderRejected: see `plan`.
        LockHeld: another run is writing the skill folder (exit 75; dry runs take no lock).
        SkillValidationError: the rendered skill fails validation, the folder holds a symlink,
            or provenance.json lists a path outside it (nothing is written).
        GateError: the gate's benchmark failed (nothing is written). A candidate the gate refuses
            is not written either: `result.gate["accepted"]` is False.
    """
    started = time.monotonic()
    if write:
        check_skill_target(config.skill_dir())
    corpus = corpus or read_corpus(config, is_offline(llm), paths, executor=executor, progress=progress)
    if not corpus.entries:
        raise NoInputError(no_input_message(corpus.skips))
    with skill_lock(config.skill_dir()) if write else _nothing():
        gated = replace(corpus, lessons=dict(corpus.lessons)) if write and config.gate.mode == "heldout" else corpus  # as read: _build releases parts
        run, analyst, final, failed, notes, build = _build(config, llm, corpus, progress, checkpoint, control, rejected,
                                                          write, on_quote, quoted, executor)
        decision = None
        if write and build.changed and config.gate.mode != "none":
            from .gate import run_gate

            build, decision = run_gate(distill, config, llm, build, gated, run.run_id)
        if write and build.changed and (decision is None or decision["accepted"]):
            write_skill_dir(config.skill_dir(), build.files)
    written_before = _catalogue_text() if analyst.mode == "offline" else ""
    warnings = (tuple(loss_warnings(corpus.fidelity)) + tuple(leakage(final.lessons, corpus.entries, written_before))
                + tuple(notes))
    result = _result(config, corpus, run, final, build, failed, analyst, time.monotonic() - started, warnings)
    return result.model_copy(update={"gate": decision}), build


def heldout_quote(config: Config, llm: LLMClient | None, corpus: Corpus) -> Quote | None:
    """The held-out gate's model spend, quoted before any call (None offline, without the gate,
    or when it makes no call). Each fold's distil is quoted as the pipeline quotes a run, so work
    the journal holds is not counted. `refuse_with_gate` holds it to the caps."""
    if is_offline(llm) or config.gate.mode != "heldout" or not corpus.entries:
        return None
    from .budget import BudgetConfig, price_for, with_budget
    from .gate import quote_heldout
    from .journal import checkpoint_path

    with_budget(llm, config)  # the command's meter holds the real caps; the fold plans below reuse it
    uncapped = config.model_copy(update={"budget": BudgetConfig()})  # the quotes are refused below, as a whole

    def fold_quote(training: Corpus) -> Quote | None:
        quote = plan(uncapped, llm, training, checkpoint_path(config.state_dir), check=False).quote
        # a fold's trajectories are the run's: the run analyses them first, the fold reuses them (journal)
        return None if quote is None else replace(quote, stages=tuple(s for s in quote.stages if s.stage != "analyse"))

    return quote_heldout(config, corpus, fold_quote, price_for(uncapped, llm.model))


def refuse_with_gate(config: Config, run: Quote | None, gate: Quote | None) -> None:
    """Refuse the held-out gate above the caps, alone and (when the run's quote is given) with
    the run, before the run makes a call.

    Raises:
        BudgetRefused: as said.
    """
    from .budget import refuse_above_caps

    if gate is None or gate.cost is None:
        return
    refuse_above_caps(config, gate.cost, gate.calls, " (the held-out gate)")
    if run is not None and run.cost is not None:
        refuse_above_caps(config, run.cost + gate.cost, run.calls + gate.calls, " (the run and its held-out gate)")


def _result(config: Config, corpus: Corpus, run: RunInfo, final: LessonSet, build: SkillBuild,
            failed: list[Skip], analyst: Analyst, seconds: float, warnings: tuple[str, ...]) -> RunResult:
    return RunResult(
        skill_dir=str(config.skill_dir()),
        run_id=run.run_id,
        mode=run.mode,
        model=run.model,
        traces_read=len(corpus.entries),
        skipped=tuple(corpus.skips) + tuple(failed),
        analysed=len(corpus.entries) - len(failed),
        outcomes=corpus.outcomes,
        lessons=len(final.lessons),
        rules_written=build.rules_written,
        conflicts=final.conflicts,
        merge_levels=final.level,
        version=build.version,
        previous_version=build.previous_version,
        changed=build.changed,
        usage=analyst.usage,
        seconds=round(seconds, 2),
        redactions=dict(corpus.redactions),
        warnings=warnings,
        fidelity=corpus.fidelity_totals,
        sources={e.id: e.where for e in corpus.entries},
    )


def _catalogue_text() -> str:
    """The offline packs' hand-written wording, for the leakage audit."""
    from .offline.packs import catalogue_text

    return catalogue_text()


def _build(config: Config, llm: LLMClient | None, corpus: Corpus, progress: Progress | None,
           checkpoint: Path | None, control: RunControl | DrainSwitch | None, rejected: dict[str, int] | None, write: bool,
           on_quote: Callable[[Quote], None] | None, quoted: Quote | None,
           executor: Executor | None) -> tuple[RunInfo, Analyst, LessonSet, list[Skip], list[str], SkillBuild]:
    """Plan, analyse, consolidate, finish and author, against the skill folder as it is (after
    finishing a killed write; a dry run reads where that write left it, moving nothing)."""
    source = config.skill_dir()
    if write:
        recover_write(source)
    else:
        source = pending_source(source)
    no_symlinks(source)  # before any model call: a linked file would stop the run at the end anyway
    run_plan = plan(config, llm, corpus, checkpoint, source=source, quoted=quoted)
    if on_quote is not None and run_plan.quote is not None:
        on_quote(run_plan.quote)
    analyst, run = run_plan.analyst, run_plan.run
    work = Work(analyst, run_plan.journal, control)
    final, failed, notes = analyse_and_consolidate(corpus, prepared(corpus, work, config, executor), work, config, progress)
    if len(failed) == len(corpus.entries):
        raise LLMError(f"every analysis failed ({len(failed)}); nothing was written. First reason: {failed[0].reason}")
    final = analyst.finish(final, corpus.entries, corpus.outcomes)
    corpus.entries = [replace(e, behaviours=None) if e.behaviours is not None else e for e in corpus.entries]  # read by finish only
    if not final.lessons and not existing_rules(config, source):
        from .ingest.fidelity import summary_line

        totals = corpus.fidelity_totals
        raise NothingLearned(analyst.nothing_learned(corpus.entries), tuple(loss_warnings(corpus.fidelity)),
                             (summary_line(totals),) if totals else ())
    build = author_skill(source, final, analyst.author_config(config), run, rejected=rejected)
    problems = validate_build(build, config.skill.name)
    if problems:
        raise SkillValidationError(problems)
    return run, analyst, final, failed, notes, build


def lock_path(skill_dir: Path) -> Path:
    """`.<skill>.trace2skill.lock` beside the skill folder (unlinked when released)."""
    return Path(skill_dir).parent / f".{Path(skill_dir).name}.trace2skill.lock"


@contextmanager
def skill_lock(skill_dir: Path) -> Iterator[None]:
    """Hold the skill folder's lock: one writer at a time, the others exit 75 at once.

    Raises:
        LockHeld: another run is writing the folder.
    """
    from .fsguard import exclusive

    with exclusive(lock_path(skill_dir), f"another run is writing {str(skill_dir)!r}; try again when it has finished"):
        yield


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def pending_source(skill_dir: Path) -> Path:
    """The folder a dry run reads: the skill folder, or, when a killed write left it missing,
    the folder `recover_write` would put in its place (read where it is, nothing moved)."""
    work = staging_dir(skill_dir)
    if os.path.lexists(skill_dir) or not work.is_dir():
        return Path(skill_dir)
    staged = work / Path(skill_dir).name
    if (work / READY_MARK).is_file() and staged.is_dir():
        return staged
    return work / "previous" if (work / "previous").is_dir() else Path(skill_dir)


def no_input_message(skips: Sequence[Skip]) -> str:
    """Why nothing could be read, with the first skip's reason so the user need not dig."""
    if not skips:
        return "no trajectory found in the given paths (no .json, .jsonl, .ndjson, .traj, .gz or .zip files in them)"
    first = skips[0]
    where = first.path + (f" [{first.record}]" if first.record else "")
    return (f"no trajectory could be read ({len(skips)} files or records skipped; first: {where}: {first.reason}); "
            "`trace2skill ingest PATHS --check` lists every skip")


def analysis_scope(config: Config, analyst: Analyst) -> str:
    """What one trajectory's analysis depends on besides the trajectory: the model, the settings
    that change answers and the prompt versions (the run id without the corpus). The journal keys
    analyses by it and the trace digest, so a run over a different corpus (a held-out fold, a
    rerun over a grown corpus) reuses every analysis already paid for. The skill's rules the
    analyst was shown are left out, as the run id leaves them out: a rerun after a partial run
    (which wrote the skill) resumes instead of paying again for every analysis."""
    settings = config.model_dump(mode="json", include={k: v for k, v in ANSWER_SETTINGS.items() if k != "consolidate"})
    return "scope-" + content_hash([analyst.model, settings, [prompt_version(p) for p in PROMPTS], __version__])[:16]


def run_info(config: Config, analyst: Analyst, corpus: Corpus) -> RunInfo:
    source_digest = content_hash(sorted(e.digest for e in corpus.entries))
    model_run = analyst.mode == "llm"
    settings = config.model_dump(mode="json", include={k: v for k, v in ANSWER_SETTINGS.items() if model_run or k != "llm"})
    run_id = "run-" + content_hash([source_digest, analyst.model, settings, [prompt_version(p) for p in PROMPTS], __version__])[:12]
    sent = sent_sampling(config.llm) if model_run else {}
    return RunInfo(
        settings={
            "sampling": sent if model_run else {},
            "prompts": {p: prompt_version(p) for p in PROMPTS} if model_run else {},
            "fan_in": config.consolidate.fan_in,
            "min_support": analyst.author_config(config).consolidate.min_support,
            "token_budget": config.analyse.token_budget,
        },
        run_id=run_id,
        model=analyst.model,
        mode=analyst.mode,
        source_digest=source_digest,
        trace_outcomes={e.id: e.outcome for e in corpus.entries},
        tool_version=__version__,
        trace_tasks={e.id: e.task_hash for e in corpus.entries} if model_run else {},
    )


def analyse_and_consolidate(corpus: Corpus, traces: Iterator[Prepared], work: Work, config: Config,
                     progress: Progress | None) -> tuple[LessonSet, list[Skip], list[str]]:
    """Analyse (model path: streamed through the fleet) and consolidate, in memory; the journal
    carries paid-for work across runs."""
    try:
        return asyncio.run(_consolidate(corpus, traces, work, config, progress))
    except KeyboardInterrupt:
        raise Interrupted("interrupted; rerun the same command to resume") from None
    finally:
        if work.journal is not None:
            work.journal.close()


async def _consolidate(corpus: Corpus, traces: Iterator[Prepared], work: Work, config: Config,
                       progress: Progress | None) -> tuple[LessonSet, list[Skip], list[str]]:
    n, fan_in = len(corpus.entries), config.consolidate.fan_in
    counts = {"analyse": 0, "merge": 0}
    totals = {"analyse": n, "merge": merge_count(n, fan_in)}

    def tick(stage: str, done: int) -> None:
        counts[stage] += done
        if progress is not None:
            progress(stage, counts[stage], totals[stage], failed=len(work.failed), cost=work.analyst.usage.cost)

    try:
        if work.analyst.mode == "offline":
            pool, level = [corpus.lessons.pop(e.id) for e in corpus.entries], 0  # read once: the merges own them now
            tick("analyse", n)
        elif config.analyse.executor == "ray" and corpus.shards:  # the analysts run where the shards are read
            from .executor.ray import analyse_remote

            ready = analyse_remote(work, corpus, config, tick)  # blocks the loop on purpose: nothing else runs yet, and Ctrl-C reaches it
            pool = await merge_ready(work, ready, fan_in, config.analyse.concurrency, tick)
            level = 1 if n > 1 else 0
        else:
            position = {e.id: i for i, e in enumerate(corpus.in_stream_order())}
            warm_later_stages()
            pool = await analyse_stream(work, traces, position, fan_in, config.analyse.concurrency, tick)
            level = 1 if n > 1 else 0
        work.halt.raise_if_halted()
        final = await merge_levels(work, config, pool, level, tick)
    finally:
        await close_clients()
    return final, list(work.failed), list(work.notes)


def warm_later_stages() -> None:
    """Import LangGraph (the merge levels) and load the tokenizer (authoring counts SKILL.md's
    tokens) in a thread while the analyses wait on the network, where the CPU is spare, instead
    of beside the index pass, which the first analysis waits for, or after the last answer. A
    failure here fails again, and is reported, where it is used."""

    def warm() -> None:
        try:
            from . import graph  # noqa: F401
            from .compress import count_tokens

            count_tokens("")
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    threading.Thread(target=warm, name="trace2skill-warm", daemon=True).start()


async def merge_levels(work: Work, config: Config, pool: list[Packed], level: int, tick: Callable[[str, int], None]) -> LessonSet:
    from langgraph.errors import GraphDrained

    from .graph import build_graph, run_config

    graph = build_graph(work, config)
    final: Packed | None = pool[0] if len(pool) == 1 else None
    try:
        control = work.control.for_graph() if isinstance(work.control, DrainSwitch) else work.control
        async for update in graph.astream({"pool": pool, "level": level}, run_config(len(pool), config),
                                          stream_mode="updates", control=control):
            for node, values in (update or {}).items():
                if node == "merge" and values:
                    tick("merge", values.get("merged", 0))
                if node == "finish" and values and "final" in values:
                    final = values["final"]
    except GraphDrained:
        raise Interrupted("interrupted (drained on request); rerun the same command to resume") from None
    work.halt.raise_if_halted()
    return final.unpack() if final is not None else LessonSet()


def prepared(corpus: Corpus, work: Work, config: Config, executor: Executor | None) -> Iterator[Prepared]:
    """The model analysts' prompts, in stream order, prepared ahead (`prefetch`: in the
    executor's worker processes, or in threads for traces the corpus holds in memory); those
    the journal holds come without one. Nothing is prepared until the fleet asks (offline runs
    and Ray runs never do)."""
    from .prefetch import in_memory, prompts

    existing = getattr(work.analyst, "existing", ())
    recorded = work.journal.analysed() if work.journal is not None else set()
    if corpus.held is not None:
        return in_memory(reread(corpus, config), config, existing, recorded)
    return prompts(corpus, config, executor or map_executor(config, False), existing, recorded)


async def _check(analyst: Analyst) -> None:
    try:
        await analyst.check()
    finally:
        await close_clients()


def existing_rules(config: Config, folder: Path | None = None) -> list[RuleRecord]:
    """The rules the target skill (or `folder`) already records in provenance.json (none for a new skill)."""
    from .fsguard import inside
    from .provenance import load_provenance

    source = inside(folder or config.skill_dir(), "provenance.json")
    if not source.is_file():
        return []
    provenance = load_provenance(source.read_text(encoding="utf-8"))
    return [*provenance.rules.values(), *provenance.withheld.values()]


