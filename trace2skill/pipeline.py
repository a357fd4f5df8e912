"""The whole distil run, top to bottom.

ingest -> analyse + consolidate (the graph) -> select -> author -> validate -> write.
Everything the run decides is derived from its inputs: the run id hashes the trace digests,
the effective configuration and the prompt versions, so the same inputs give the same skill
and the same checkpoint thread.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

from .version import __version__
from .audit import leakage
from .author import RunInfo, SkillBuild, author_skill, validate_build, write_skill_dir
from .fsguard import no_symlinks
from .skill import READY_MARK, check_skill_target, recover_write, staging_dir
from .config import Config
from .errors import Interrupted, LLMError, NoInputError, SkillValidationError
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl

from .consolidate import merge_count
from .graph import build_graph, run_config
from .ingest import IngestResult, load_traces
from .ingest.fidelity import loss_warnings
from .ingest.fidelity import summary as fidelity_summary
from .llm import LLMClient
from .prompts import version as prompt_version
from .rules import RuleRecord
from .types import LessonSet, RunResult, Skip, Usage, content_hash

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
    control: RunControl | None = None,
    rejected: dict[str, int] | None = None,
) -> tuple[RunResult, SkillBuild]:
    """Distil trajectories into the skill folder `config.skill_dir()`.

    Args:
        paths: trace files or folders (ignored when `ingested` is given).
        ingested: traces already read (the refresh job filters them first).
        progress: called as `progress(stage, done, total)`.
        checkpoint: SQLite file for a resumable run; None keeps state in memory.
        write: False computes the build without touching the skill folder.
        control: a LangGraph `RunControl`; `request_drain()` on it stops the run resumably.
        rejected: rule ids reviewers removed, with the support they had then.

    Raises:
        NoInputError: no trajectory could be read.
        LockHeld: another run is writing the skill folder (exit 75; dry runs take no lock).
        SkillValidationError: the rendered skill fails validation, the folder holds a symlink,
            or provenance.json lists a path outside it (nothing is written).
    """
    started = time.monotonic()
    if write:
        check_skill_target(config.skill_dir())
    ingested = ingested or load_traces(paths or [Path(p) for p in config.sources], config)
    if not ingested.traces:
        raise NoInputError(no_input_message(ingested))
    with skill_lock(config.skill_dir()) if write else _nothing():
        run, final, failed, build = _build(config, llm, ingested, progress, checkpoint, control, rejected, write)
        if write and build.changed:
            write_skill_dir(config.skill_dir(), build.files)
    return _result(config, llm, ingested, run, final, failed, build, time.monotonic() - started), build


def _result(config: Config, llm: LLMClient | None, ingested: IngestResult, run: RunInfo, final: LessonSet,
            failed: list[Skip], build: SkillBuild, seconds: float) -> RunResult:
    """What the run did, for the report: counts, version, usage, warnings and sources."""
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
        usage=llm.usage if llm is not None else Usage(),
        seconds=round(seconds, 2),
        redactions=dict(ingested.redactions),
        warnings=tuple(loss_warnings(ingested.fidelity)) + tuple(leakage(final.lessons, ingested.traces)),
        fidelity=fidelity_summary(ingested.fidelity),
        sources={t.id: t.source.path + (f" [{t.source.record}]" if t.source.record else "") for t in ingested.traces},
    )


def _build(config: Config, llm: LLMClient | None, ingested: IngestResult, progress: Progress | None,
           checkpoint: Path | None, control: RunControl | None, rejected: dict[str, int] | None, write: bool):
    """Analyse, consolidate, select and author, against the skill folder as it is (after
    finishing a killed write; a dry run reads where that write left it, moving nothing)."""
    source = config.skill_dir()
    if write:
        recover_write(source)
    else:
        source = pending_source(source)
    no_symlinks(source)  # before any model call: a linked file would stop the run at the end anyway
    run = run_info(config, llm, ingested)
    final, failed = asyncio.run(_consolidate(ingested, llm, config, run.run_id, progress, checkpoint, control, source))
    if len(failed) == len(ingested.traces):
        raise LLMError(f"every analysis failed ({len(failed)}); nothing was written. First reason: {failed[0].reason}")
    if llm is None:
        from .offline import select_offline

        final = final.model_copy(update={"lessons": tuple(select_offline(list(final.lessons), ingested.outcomes))})
    build = author_skill(source, final, config, run, rejected=rejected)
    problems = validate_build(build, config.skill.name)
    if problems:
        raise SkillValidationError(problems)
    return run, final, failed, build


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
    progress: Progress | None, checkpoint: Path | None, control: RunControl | None = None, source: Path | None = None,
) -> tuple[LessonSet, list[Skip]]:
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
        graph = build_graph(llm, config, {t.id: t for t in ingested.traces}, saver, journal, control, existing_rules(config, source))
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




def existing_rules(config: Config, folder: Path | None = None) -> list[RuleRecord]:
    """The rules the target skill (or `folder`) already records in provenance.json (none for a new skill)."""
    from .fsguard import inside
    from .provenance import load_provenance

    source = inside(folder or config.skill_dir(), "provenance.json")
    if not source.is_file():
        return []
    provenance = load_provenance(source.read_text(encoding="utf-8"))
    return [*provenance.rules.values(), *provenance.withheld.values()]


async def _close_clients(llm: LLMClient | None) -> None:
    if llm is None or "litellm" not in sys.modules:
        return
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    await close_litellm_async_clients()
