"""The whole distil run, top to bottom.

ingest -> analyse + consolidate (the graph) -> select -> author -> validate -> gate (when configured) -> write.
Everything the run decides is derived from its inputs: the run id hashes the trace digests,
the effective configuration and the prompt versions, so the same inputs give the same skill
and the same checkpoint thread.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from . import __version__
from .audit import leakage
from .author import RunInfo, SkillBuild, author_skill, validate_build, write_skill_dir
from .skill import check_skill_target
from .config import Config
from .errors import Interrupted, LLMError, NoInputError, NothingLearned, SkillValidationError
from langgraph.errors import GraphDrained

from .consolidate import merge_count
from .graph import build_graph, run_config
from .ingest import IngestResult, load_traces
from .ingest.fidelity import loss_warnings
from .ingest.fidelity import summary as fidelity_summary
from .llm import LLMClient
from .prompts import version as prompt_version
from .types import LessonSet, RunResult, Usage, content_hash

Progress = Callable[[str, int, int], None]
PROMPTS = ("system.md", "analyse_failure.md", "analyse_success.md", "merge.md")


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
) -> tuple[RunResult, SkillBuild]:
    """Distil trajectories into the skill folder `config.skill_dir()`.

    Args:
        paths: trace files or folders (ignored when `ingested` is given).
        ingested: traces already read (the refresh job filters them first).
        progress: called as `progress(stage, done, total)`.
        checkpoint: SQLite file for a resumable run; None keeps state in memory.
        write: False computes the build without touching the skill folder (and runs no gate).
        control: a LangGraph `RunControl`; `request_drain()` on it stops the run resumably.
        rejected: rule ids reviewers removed, with the support they had then.

    Raises:
        NoInputError: no trajectory could be read.
        SkillValidationError: the rendered skill fails validation (nothing is written).
        GateError: the gate's benchmark failed (nothing is written). A candidate the gate refuses
            is not written either: `result.gate["accepted"]` is False.
    """
    started = time.monotonic()
    if write:
        check_skill_target(config.skill_dir())
    ingested = ingested or load_traces(paths or [Path(p) for p in config.sources], config)
    if not ingested.traces:
        raise NoInputError(no_input_message(ingested))
    run = run_info(config, llm, ingested)
    final, failed = asyncio.run(_consolidate(ingested, llm, config, run.run_id, progress, checkpoint, control))
    if len(failed) == len(ingested.traces):
        raise LLMError(f"every analysis failed ({len(failed)}); nothing was written. First reason: {failed[0].reason}")
    if llm is None:
        from .offline import nothing_learned, select_offline

        final = final.model_copy(update={"lessons": tuple(select_offline(list(final.lessons), ingested.traces))})
        if not final.lessons and not existing_rules(config):
            from .ingest.fidelity import summary_line

            totals = fidelity_summary(ingested.fidelity)
            raise NothingLearned(nothing_learned(ingested.traces), tuple(loss_warnings(ingested.fidelity)),
                                 (summary_line(totals),) if totals else ())
    build = author_skill(config.skill_dir(), final, config, run, rejected=rejected)
    problems = validate_build(build, config.skill.name)
    if problems:
        raise SkillValidationError(problems)
    decision = None
    if write and build.changed and config.gate.mode != "none":
        from .gate import run_gate

        build, decision = run_gate(config, llm, build, ingested, run.run_id)
    if write and build.changed and (decision is None or decision["accepted"]):
        write_skill_dir(config.skill_dir(), build.files)
    result = RunResult(
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
        usage=llm.usage if llm is not None else Usage(),
        seconds=round(time.monotonic() - started, 2),
        redactions=dict(ingested.redactions),
        warnings=tuple(loss_warnings(ingested.fidelity))
        + tuple(leakage(final.lessons, ingested.traces, _catalogue_text() if llm is None else "")),
        fidelity=fidelity_summary(ingested.fidelity),
        gate=decision,
    )
    return result, build


def _catalogue_text() -> str:
    """The offline packs' hand-written wording, for the leakage audit."""
    from .offline.packs import catalogue_text

    return catalogue_text()


def no_input_message(ingested: IngestResult) -> str:
    """Why nothing could be read, with the first skip's reason so the user need not dig."""
    if not ingested.skips:
        return "no trajectory found in the given paths (no .json, .jsonl, .ndjson, .traj, .gz or .zip files in them)"
    first = ingested.skips[0]
    where = first.path + (f" [{first.record}]" if first.record else "")
    return (f"no trajectory could be read ({len(ingested.skips)} files or records skipped; first: {where}: {first.reason}); "
            "`trace2skill ingest PATHS --check` lists every skip")


def run_info(config: Config, llm: LLMClient | None, ingested: IngestResult) -> RunInfo:
    source_digest = content_hash(sorted(t.digest() for t in ingested.traces))
    model = llm.model if llm is not None else "offline"
    settings = config.model_dump(mode="json", include={"llm", "analyse", "consolidate", "redact"})
    run_id = "run-" + content_hash([source_digest, model, settings, [prompt_version(p) for p in PROMPTS], __version__])[:12]
    sent = {k: v for k, v in settings["llm"].items() if k in {"temperature", "seed", "max_tokens"} and v is not None}
    return RunInfo(
        settings={
            "sampling": sent if llm is not None else {},
            "prompts": {p: prompt_version(p) for p in PROMPTS} if llm is not None else {},
            "fan_in": config.consolidate.fan_in,
            "min_support": config.consolidate.min_support,
            "token_budget": config.analyse.token_budget,
        },
        run_id=run_id,
        model=model,
        mode="offline" if llm is None else "llm",
        source_digest=source_digest,
        trace_outcomes={t.id: t.outcome for t in ingested.traces},
        tool_version=__version__,
    )


async def _consolidate(
    ingested: IngestResult, llm: LLMClient | None, config: Config, thread_id: str,
    progress: Progress | None, checkpoint: Path | None, control: Any = None,
) -> tuple[LessonSet, list]:
    from .types import Skip

    async with AsyncExitStack() as stack:
        from langgraph.checkpoint.memory import InMemorySaver

        saver: Any = InMemorySaver()
        journal = None
        if checkpoint is not None:
            from .journal import AnalysisJournal, journal_path

            journal = AnalysisJournal(journal_path(checkpoint), thread_id)
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            import aiosqlite

            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: a write cancelled by a crashing sibling task must not leave a transaction
            # (and the database lock) open for the resumed run.
            connection = await stack.enter_async_context(aiosqlite.connect(str(checkpoint), isolation_level=None))
            saver = AsyncSqliteSaver(connection)
        graph = build_graph(llm, config, {t.id: t for t in ingested.traces}, saver, journal, control, existing_rules(config))
        cfg = run_config(len(ingested.traces), config, thread_id)
        inputs: Any = {"traces": [t.id for t in ingested.traces], "level": 0}
        previous = await graph.aget_state(cfg) if checkpoint is not None else None
        finished = previous is not None and not previous.next and "final" in previous.values
        if previous is not None and previous.next:
            inputs = None
        if not finished:
            counts = {"analyse": 0, "merge": 0}
            try:
                async for update in graph.astream(inputs, cfg, stream_mode="updates", durability="sync", control=control):
                    _report(update, counts, progress, {"analyse": len(ingested.traces), "merge": merge_count(len(ingested.traces), config.consolidate.fan_in)})
            except GraphDrained:
                raise Interrupted("run drained on request; rerun the same command to resume from the checkpoint") from None
        state = (await graph.aget_state(cfg)).values
        await _close_clients(llm)
    failed = [Skip(path=f["trace_id"], record=None, reason=f"analysis failed: {f['reason']}") for f in state.get("failed", [])]
    return LessonSet.model_validate(state["final"]), failed


def _report(update: dict, counts: dict[str, int], progress: Progress | None, totals: dict[str, int]) -> None:
    for node in update or {}:
        if node in counts and progress is not None:
            counts[node] += 1
            progress(node, counts[node], totals[node])




def existing_rules(config: Config) -> list[Any]:
    """The rules the target skill already records in provenance.json (none for a new skill)."""
    from .provenance import load_provenance

    source = config.skill_dir() / "provenance.json"
    if not source.is_file():
        return []
    provenance = load_provenance(source.read_text(encoding="utf-8"))
    return [*provenance.rules.values(), *provenance.withheld.values()]


async def _close_clients(llm: LLMClient | None) -> None:
    if llm is None or "litellm" not in sys.modules:
        return
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    await close_litellm_async_clients()
