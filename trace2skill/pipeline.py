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
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.errors import GraphDrained

from .version import __version__
from .analyse import Analyst, analyst_for
from .audit import leakage
from .author import RunInfo, SkillBuild, author_skill, validate_build, write_skill_dir
from .budget import Quote, preflight
from .config import Config
from .consolidate import merge_count
from .errors import Interrupted, LLMError, NoInputError, NothingLearned, SkillValidationError
from .fsguard import no_symlinks
from .graph import Halt, build_graph, run_config
from .ingest import IngestResult, load_traces
from .ingest.fidelity import loss_warnings
from .ingest.fidelity import summary as fidelity_summary
from .journal import AnalysisJournal, journal_path
from .llm import LLMClient, close_clients
from .prompts import version as prompt_version
from .rules import RuleRecord
from .skill import READY_MARK, check_skill_target, recover_write, staging_dir
from .types import LessonSet, RunResult, Skip, content_hash

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


def plan(config: Config, llm: LLMClient | None, ingested: IngestResult, checkpoint: Path | None,
         check: bool = True, source: Path | None = None) -> Plan:
    """Choose the analyst, check the model (when `check` and work is left), quote the work left,
    and refuse a run the caps cannot cover. The check comes first: it is one tiny request and
    fails fast on a wrong key or model, before the quote reads every trajectory.

    Raises:
        ProviderRejected: the model, key or structured output does not work (exit 78).
        ConfigError: `--budget` with an unknown price and no `llm.price_in` / `llm.price_out`.
        BudgetRefused: the quote is above `--budget`, or above `budget.approve_above` without `--yes`.
    """
    analyst = analyst_for(config, llm, existing_rules(config, source))
    run = run_info(config, analyst, ingested)
    journal = None
    if checkpoint is not None and analyst.mode == "llm" and config.llm.cache:
        journal = AnalysisJournal(journal_path(checkpoint), run.run_id)
    estimate = None
    if analyst.mode == "llm":
        analysed = journal.analysed() if journal is not None else set()
        merges = journal.merges_done() if journal is not None else 0
        if check and len(analysed) < len(ingested.traces):
            asyncio.run(_check(analyst))
        estimate = preflight(ingested.traces, config, analyst.model, analysed=analysed, merges_done=merges)
    return Plan(analyst, run, journal, estimate)


def distill(
    config: Config,
    llm: LLMClient | None,
    paths: list[Path] | None = None,
    *,
    ingested: IngestResult | None = None,
    progress: Progress | None = None,
    checkpoint: Path | None = None,
    write: bool = True,
    control: Any = None,
    rejected: dict[str, int] | None = None,
    on_quote: Callable[[Quote], None] | None = None,
) -> tuple[RunResult, SkillBuild]:
    """Distil trajectories into the skill folder `config.skill_dir()`.

    Args:
        llm: the model client, or None for the offline analyst (the analyst is chosen here, once).
        paths: trace files or folders (ignored when `ingested` is given).
        ingested: traces already read (the refresh job filters them first).
        progress: see `Progress`.
        checkpoint: run-state path; its journal makes a rerun skip work already paid for.
        write: False computes the build without touching the skill folder (and runs no gate).
        control: a LangGraph `RunControl`; `request_drain()` on it stops the run resumably.
        rejected: rule ids reviewers removed, with the support they had then.
        on_quote: shown the quote of the work left before any call is made.

    Raises:
        NoInputError: no trajectory could be read.
        BudgetRefused, ConfigError: see `plan`; ProviderRejected: the model preflight failed.
        LockHeld: another run is writing the skill folder (exit 75; dry runs take no lock).
        SkillValidationError: the rendered skill fails validation, the folder holds a symlink,
            or provenance.json lists a path outside it (nothing is written).
        GateError: the gate's benchmark failed (nothing is written). A candidate the gate refuses
            is not written either: `result.gate["accepted"]` is False.
    """
    started = time.monotonic()
    if write:
        check_skill_target(config.skill_dir())
    ingested = ingested or load_traces(paths or [Path(p) for p in config.sources], config)
    if not ingested.traces:
        raise NoInputError(no_input_message(ingested))
    with skill_lock(config.skill_dir()) if write else _nothing():
        run, analyst, final, failed, notes, build = _build(config, llm, ingested, progress, checkpoint, control,
                                                          rejected, write, on_quote)
        decision = None
        if write and build.changed and config.gate.mode != "none":
            from .gate import run_gate

            build, decision = run_gate(distill, config, llm, build, ingested, run.run_id)
        if write and build.changed and (decision is None or decision["accepted"]):
            write_skill_dir(config.skill_dir(), build.files)
    written_before = _catalogue_text() if analyst.mode == "offline" else ""
    warnings = (tuple(loss_warnings(ingested.fidelity)) + tuple(leakage(final.lessons, ingested.traces, written_before))
                + tuple(notes))
    result = _result(config, ingested, run, final, build, failed, analyst, time.monotonic() - started, warnings)
    return result.model_copy(update={"gate": decision}), build


def _result(config: Config, ingested: IngestResult, run: RunInfo, final: LessonSet, build: SkillBuild,
            failed: list[Skip], analyst: Analyst, seconds: float, warnings: tuple[str, ...]) -> RunResult:
    return RunResult(
        skill_dir=str(config.skill_dir()),
        run_id=run.run_id,
        mode=run.mode,
        model=run.model,
        traces_read=len(ingested.traces),
        skipped=tuple(ingested.skips) + tuple(failed),
        analysed=len(ingested.traces) - len(failed),
        outcomes=dict(ingested.outcomes),
        lessons=len(final.lessons),
        rules_written=build.rules_written,
        conflicts=final.conflicts,
        merge_levels=final.level,
        version=build.version,
        previous_version=build.previous_version,
        changed=build.changed,
        usage=analyst.usage,
        seconds=round(seconds, 2),
        redactions=dict(ingested.redactions),
        warnings=warnings,
        fidelity=fidelity_summary(ingested.fidelity),
        sources={t.id: t.source.path + (f" [{t.source.record}]" if t.source.record else "") for t in ingested.traces},
    )


def _catalogue_text() -> str:
    """The offline packs' hand-written wording, for the leakage audit."""
    from .offline.packs import catalogue_text

    return catalogue_text()


def _build(config: Config, llm: LLMClient | None, ingested: IngestResult, progress: Progress | None,
           checkpoint: Path | None, control: Any, rejected: dict[str, int] | None, write: bool,
           on_quote: Callable[[Quote], None] | None):
    """Plan, analyse, consolidate, finish and author, against the skill folder as it is (after
    finishing a killed write; a dry run reads where that write left it, moving nothing)."""
    source = config.skill_dir()
    if write:
        recover_write(source)
    else:
        source = pending_source(source)
    no_symlinks(source)  # before any model call: a linked file would stop the run at the end anyway
    run_plan = plan(config, llm, ingested, checkpoint, source=source)
    if on_quote is not None and run_plan.quote is not None:
        on_quote(run_plan.quote)
    analyst, run = run_plan.analyst, run_plan.run
    final, failed, notes = _run_graph(ingested, analyst, config, run.run_id, progress, run_plan.journal, control)
    if len(failed) == len(ingested.traces):
        raise LLMError(f"every analysis failed ({len(failed)}); nothing was written. First reason: {failed[0].reason}")
    final = analyst.finish(final, ingested.traces, dict(ingested.outcomes))
    if not final.lessons and not existing_rules(config, source):
        from .ingest.fidelity import summary_line

        totals = fidelity_summary(ingested.fidelity)
        raise NothingLearned(analyst.nothing_learned(ingested.traces), tuple(loss_warnings(ingested.fidelity)),
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


def no_input_message(ingested: IngestResult) -> str:
    """Why nothing could be read, with the first skip's reason so the user need not dig."""
    if not ingested.skips:
        return "no trajectory found in the given paths (no .json, .jsonl, .ndjson, .traj, .gz or .zip files in them)"
    first = ingested.skips[0]
    where = first.path + (f" [{first.record}]" if first.record else "")
    return (f"no trajectory could be read ({len(ingested.skips)} files or records skipped; first: {where}: {first.reason}); "
            "`trace2skill ingest PATHS --check` lists every skip")


def run_info(config: Config, analyst: Analyst, ingested: IngestResult) -> RunInfo:
    source_digest = content_hash(sorted(t.digest() for t in ingested.traces))
    model_run = analyst.mode == "llm"
    settings = config.model_dump(mode="json", include={k: v for k, v in ANSWER_SETTINGS.items() if model_run or k != "llm"})
    run_id = "run-" + content_hash([source_digest, analyst.model, settings, [prompt_version(p) for p in PROMPTS], __version__])[:12]
    sent = {k: v for k, v in settings.get("llm", {}).items() if k in {"temperature", "seed", "max_tokens"} and v is not None}
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
        trace_outcomes={t.id: t.outcome for t in ingested.traces},
        tool_version=__version__,
    )


def _run_graph(ingested: IngestResult, analyst: Analyst, config: Config, thread_id: str, progress: Progress | None,
               journal: AnalysisJournal | None, control: Any) -> tuple[LessonSet, list[Skip], list[str]]:
    """Check the analyst, then run the graph once, in memory; the journal carries work across runs
    (and is committed and closed on every way out)."""
    try:
        return asyncio.run(_consolidate(ingested, analyst, config, thread_id, progress, journal, control))
    except KeyboardInterrupt:
        raise Interrupted("interrupted; rerun the same command to resume") from None
    finally:
        if journal is not None:
            journal.close()


async def _consolidate(ingested: IngestResult, analyst: Analyst, config: Config, thread_id: str,
                       progress: Progress | None, journal: AnalysisJournal | None, control: Any) -> tuple[LessonSet, list[Skip], list[str]]:
    from langgraph.checkpoint.memory import InMemorySaver

    try:
        halt = Halt()
        graph = build_graph(analyst, config, {t.id: t for t in ingested.traces}, InMemorySaver(), journal, control, halt)
        cfg = run_config(len(ingested.traces), config, thread_id)
        totals = {"analyse": len(ingested.traces), "merge": merge_count(len(ingested.traces), config.consolidate.fan_in)}
        counts = {"analyse": 0, "merge": 0, "failed": 0}
        try:
            async for update in graph.astream({"traces": [t.id for t in ingested.traces], "level": 0}, cfg,
                                              stream_mode="updates", control=control):
                _report(update, counts, progress, totals, analyst)
        except GraphDrained:
            raise Interrupted("interrupted (drained on request); rerun the same command to resume") from None
        halt.raise_if_halted()
        state = (await graph.aget_state(cfg)).values
    finally:
        await close_clients()
    failed = [Skip(path=f["trace_id"], record=None, reason=f"analysis failed: {f['reason']}") for f in state.get("failed", [])]
    return LessonSet.model_validate(state["final"]), failed, list(state.get("notes", []))


async def _check(analyst: Analyst) -> None:
    try:
        await analyst.check()
    finally:
        await close_clients()


def _report(update: dict, counts: dict[str, int], progress: Progress | None, totals: dict[str, int], analyst: Analyst) -> None:
    for node, values in (update or {}).items():
        if node in totals and progress is not None:
            counts[node] += 1
            counts["failed"] += len((values or {}).get("failed", [])) if isinstance(values, dict) else 0
            progress(node, counts[node], totals[node], failed=counts["failed"], cost=analyst.usage.cost)


def existing_rules(config: Config, folder: Path | None = None) -> list[RuleRecord]:
    """The rules the target skill (or `folder`) already records in provenance.json (none for a new skill)."""
    from .fsguard import inside
    from .provenance import load_provenance

    source = inside(folder or config.skill_dir(), "provenance.json")
    if not source.is_file():
        return []
    provenance = load_provenance(source.read_text(encoding="utf-8"))
    return [*provenance.rules.values(), *provenance.withheld.values()]


