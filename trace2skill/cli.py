"""The `trace2skill` command line: arguments in, library calls, results out.

Commands parse flags, build the one `Config` with `load_config`, call the library and print.
Library errors (`Trace2SkillError`) become one-line messages and documented exit codes here
and nowhere else. Results go to stdout; progress, quotes, notes and warnings to stderr (`-q`
silences all but errors). Tests hand in a scripted model through the context object
(`obj={"llm_factory": ...}`), never by patching.

`distill` and `refresh` take one shared set of run flags (`RunFlags`, one field a flag, given to
both by `_run_command`), so what works on one works on the other.

Exit codes: 0 success (also "no changes"), 1 failure, 2 usage error, 3 partial success (some
trajectories skipped or failed, skill produced), 65 bad data or invalid skill, 66 no input,
69 model provider unavailable, 75 temporary (lock held, budget cap, interrupted; resumable),
78 bad configuration.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, get_type_hints

import typer

from .config import ConfigValue
from .errors import Trace2SkillError
from .onboard import config_keys

if TYPE_CHECKING:
    from .budget import Quote
    from .config import Config
    from .executor import Executor
    from .stream import Corpus
    from .llm import LLMClient

EXIT_PARTIAL = 3
EXIT_GATED = 4
EXIT_CODES = ("Exit codes: 0 success (also 'no changes'), 1 failure, 2 usage error, 3 partial (some trajectories skipped), 4 gated (the validation gate refused the candidate), "
              "65 bad data or invalid skill, 66 no input, 69 model provider unavailable, 75 temporary (lock, budget cap, "
              "interrupted: rerun to resume), 78 bad configuration.")

app = typer.Typer(
    name="trace2skill",
    help="Distil agent trajectories into versioned, provenance-tracked Agent Skills folders.",
    epilog="Start with: trace2skill init, then trace2skill doctor, then trace2skill distill. " + EXIT_CODES,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DEFAULTS = {key.dotted: key.default for key in config_keys()}


def _config_default(key: str) -> str:
    """The default of a flag that sets config key `key`, naming the key."""
    value = _DEFAULTS.get(key)
    return f"{'unset' if value is None else value}, from {key}"


def _h(text: str, default: str) -> str:
    """Help text ending in `[default: ...]` (the bracket escaped from rich markup)."""
    return f"{text} \\[default: {default}]"


PathsArg = Annotated[list[Path], typer.Argument(help="Trace files or folders (JSON, JSONL, .gz, .zip).", show_default=False, metavar="PATHS")]
RunPathsArg = Annotated[Optional[list[Path]], typer.Argument(help=_h("Trace files or folders (JSON, JSONL, .gz, .zip).", "`sources` from the config"), show_default=False, metavar="PATHS")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help=_h("TOML config file.", "./trace2skill.toml, else \\[tool.trace2skill] in ./pyproject.toml"), show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="Say more (repeat for debug logging).", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results, warnings and errors.")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--success-threshold", help=_h("A reward at or above this counts as success.", _config_default("analyse.success_threshold")), show_default=False)]
SidechainsOpt = Annotated[bool, typer.Option("--drop-sidechains", help="Drop Claude Code sub-agent conversations instead of keeping them apart.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Any config key, e.g. --set analyse.token_budget=2000 (repeatable).", show_default=False)]
FormatOpt = Annotated[Optional[str], typer.Option("--format", help=_h("Force a trace reader instead of detecting by shape.", "detect"), show_default=False)]
LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help=_h("JSON or CSV file of outcomes by trajectory id.", "none"), show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help=_h("Folder that holds skill folders (with --layout agents|claude: the project root).", "skills_out, or . with --layout agents|claude"), show_default=False)]
SkillOpt = Annotated[Optional[str], typer.Option("--skill", help=_h("Skill name (lowercase, digits, hyphens).", _config_default("skill.name")), show_default=False)]
DescriptionOpt = Annotated[Optional[str], typer.Option("--description", help=_h("Frontmatter description: what the skill does and when to use it.", "derived from the rules"), show_default=False)]
LayoutOpt = Annotated[Optional[str], typer.Option("--layout", help=_h("flat: OUT/NAME; agents: OUT/.agents/skills/NAME; claude: OUT/.claude/skills/NAME.", _config_default("skill.layout")), show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help=_h("litellm model string, 'offline' (no LLM) or 'scripted:FILE.json'.", _config_default("llm.model")), show_default=False)]
ApiBaseOpt = Annotated[Optional[str], typer.Option("--api-base", help=_h("Base URL of a local OpenAI-compatible server.", "provider default"), show_default=False)]
ConcurrencyOpt = Annotated[Optional[int], typer.Option("--concurrency", help=_h("Analysts running at once.", _config_default("analyse.concurrency")), show_default=False)]
ExecutorOpt = Annotated[Optional[str], typer.Option("--executor", help=_h("Where the map stage runs: local, process (--workers processes) or ray.", _config_default("analyse.executor")), show_default=False)]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help=_h("Worker processes of the map stage (the offline analyst is CPU-bound).", _config_default("analyse.workers")), show_default=False)]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help=_h("Ray cluster to join with --executor ray (auto, ray://HOST:PORT).", "a local Ray"), show_default=False)]
FanInOpt = Annotated[Optional[int], typer.Option("--fan-in", help=_h("Lesson sets per merge.", _config_default("consolidate.fan_in")), show_default=False)]
MinSupportOpt = Annotated[Optional[int], typer.Option("--min-support", help=_h("Trajectories a rule needs to enter SKILL.md.", _config_default("consolidate.min_support")), show_default=False)]
BudgetOpt = Annotated[Optional[float], typer.Option("--budget", help=_h("Hard cap on model spend in US dollars.", "no cap"), show_default=False)]
MaxCallsOpt = Annotated[Optional[int], typer.Option("--max-calls", help=_h("Hard cap on model calls.", "no cap"), show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Quote the cost and print the diff of every file that would change; write nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Approve a run quoted above budget.approve_above.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help=_h("Also write the HTML report of the run to this file.", "only STATE_DIR/reports/"), show_default=False)]
StateDirOpt = Annotated[Optional[Path], typer.Option("--state-dir", help=_h("Folder for state, checkpoints, reports and the lock.", _config_default("state_dir")), show_default=False)]
GateOpt = Annotated[Optional[str], typer.Option("--gate", help="none | heldout: refuse a candidate whose held-out coverage or false-alarm rate is worse than the current skill's.")]
GateCmdOpt = Annotated[Optional[str], typer.Option("--gate-cmd", help="Benchmark command run with the current skill and the candidate (folder in TRACE2SKILL_SKILL_DIR); last stdout line is the score.")]
AblateOpt = Annotated[Optional[int], typer.Option("--ablate", help="With --gate-cmd: also score the candidate without each of its N newest or weakest rules.")]

_Default = TypeVar("_Default")


def _sets(key: str | None = None, default: _Default = None) -> _Default:
    """A `RunFlags` field's default, naming the config key the flag sets (None: read by the command)."""
    return field(default=default, metadata={"config": key} if key else {})


@dataclass(frozen=True)
class RunFlags:
    """The flags `distill` and `refresh` share, one field each, in the order `--help` lists them.

    Adding a shared flag is one field here: its typer annotation and `_sets("section.key")`, the
    config key it overrides (None when it is not one). `_run_command` gives every field to both
    commands as a parameter of their own and hands the values back as one `RunFlags`.
    """

    paths: RunPathsArg = _sets()
    out: OutOpt = _sets("skill.out")
    skill: SkillOpt = _sets("skill.name")
    description: DescriptionOpt = _sets("skill.description")
    layout: LayoutOpt = _sets("skill.layout")
    model: ModelOpt = _sets("llm.model")
    api_base: ApiBaseOpt = _sets("llm.api_base")
    concurrency: ConcurrencyOpt = _sets("analyse.concurrency")
    executor: ExecutorOpt = _sets("analyse.executor")
    workers: WorkersOpt = _sets("analyse.workers")
    ray_address: RayAddressOpt = _sets("analyse.ray_address")
    fan_in: FanInOpt = _sets("consolidate.fan_in")
    min_support: MinSupportOpt = _sets("consolidate.min_support")
    trace_format: FormatOpt = _sets("analyse.format")
    labels: LabelsOpt = _sets("analyse.labels")
    success_threshold: ThresholdOpt = _sets("analyse.success_threshold")
    drop_sidechains: SidechainsOpt = _sets(default=False)
    budget: BudgetOpt = _sets("budget.max_cost")
    max_calls: MaxCallsOpt = _sets("budget.max_calls")
    dry_run: DryRunOpt = _sets(default=False)
    yes: YesOpt = _sets(default=False)
    report: ReportOpt = _sets()
    state_dir: StateDirOpt = _sets("state_dir")
    gate: GateOpt = _sets()
    gate_cmd: GateCmdOpt = _sets()
    ablate: AblateOpt = _sets()
    settings: SetOpt = _sets()
    config_path: ConfigOpt = _sets()
    json_out: JsonOpt = _sets(default=False)
    verbose: VerboseOpt = _sets(default=0)
    quiet: QuietOpt = _sets(default=False)

    def overrides(self) -> dict[str, ConfigValue]:
        """Config keys set by these flags (None: not set, the config file or default stands)."""
        keys = {f.metadata["config"]: getattr(self, f.name) for f in fields(self) if "config" in f.metadata}
        return {**keys, "analyse.sidechains": "drop" if self.drop_sidechains else None,
                "budget.approved": True if self.yes else None, **_gate_overrides(self.gate, self.gate_cmd, self.ablate)}


RUN_FLAGS = tuple(f.name for f in fields(RunFlags))
"""The flags `distill` and `refresh` share (a test holds both commands to it)."""


def _run_command(command: Callable[..., None]) -> Callable[..., None]:
    """`command(ctx, flags: RunFlags, ...)` as typer sees it: each `RunFlags` field a parameter of
    its own in place of `flags`, gathered back into one `RunFlags` when typer calls it."""
    hints = get_type_hints(RunFlags, include_extras=True)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
              for f in fields(RunFlags)]
    own = inspect.signature(command, eval_str=True)
    params = [new for p in own.parameters.values()
              for new in (shared if p.name == "flags" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)])]

    @functools.wraps(command)
    def run(**values: object) -> None:
        flags = RunFlags(**{f.name: values.pop(f.name) for f in fields(RunFlags)})
        command(flags=flags, **values)

    run.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    return run


def _version(value: bool) -> None:
    if value:
        from .version import __version__

        typer.echo(f"trace2skill {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True)] = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Distil agent trajectories into versioned, provenance-tracked Agent Skills folders."""
    obj = ctx.ensure_object(dict)
    obj["verbosity"] = verbose - (1 if quiet else 0)


def _verbosity(ctx: typer.Context, verbose: int = 0, quiet: bool = False) -> int:
    """Root and command flags together: `-q` is -1, each `-v` +1; -vv turns on debug logging."""
    level = (ctx.obj or {}).get("verbosity", 0) + verbose - (1 if quiet else 0)
    if level >= 2:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    ctx.ensure_object(dict)["level"] = level
    return level


def _level(ctx: typer.Context) -> int:
    return (ctx.obj or {}).get("level", (ctx.obj or {}).get("verbosity", 0))


def _err(message: str) -> None:
    typer.echo(f"trace2skill: {message}", err=True)


def _note(ctx: typer.Context, message: str) -> None:
    """A note or warning on stderr; silenced by -q."""
    if _level(ctx) >= 0:
        typer.echo(message, err=True)


def _fail(exc: Trace2SkillError | OSError) -> typer.Exit:
    if isinstance(exc, OSError):
        return _fail_os(exc)
    for note in getattr(exc, "notes", ()):
        typer.echo(note, err=True)
    for warning in getattr(exc, "warnings", ()):
        _err(f"warning: {warning}")
    problems = getattr(exc, "problems", None) or []
    if len(problems) < 2:
        _err(f"error: {exc}")
        return typer.Exit(exc.exit_code)
    _err(f"error: the skill is invalid ({len(problems)} problems):")
    for problem in problems:
        _err(f"  - {problem}")
    return typer.Exit(exc.exit_code)


def _fail_os(exc: OSError) -> typer.Exit:
    """A file the run needed could not be read or written (read-only folder, a file where a
    folder is needed, disk full): one line naming the path, exit 1, no traceback."""
    name = exc.filename
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and name and Path(name).is_file():
        _err(f"error: {str(name)!r} is a file, not a folder")
    else:
        _err(f"error: {exc.strerror or exc}" + (f": {str(name)!r}" if name else ""))
    return typer.Exit(1)


def _config(config_path: Path | None, overrides: Mapping[str, ConfigValue], settings: list[str] | None = None):
    from .config import load_config
    from .errors import ConfigError

    extra: dict[str, ConfigValue] = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value
    flags = {key: value for key, value in overrides.items() if value is not None}
    return load_config(config_path, {**extra, **flags})


def _warn_unmatched_labels(ctx: typer.Context, config, matched: int, total: int) -> None:
    """A labels file that labels nothing is almost always an id mismatch; say so instead of
    silently distilling unlabelled runs."""
    if config.analyse.labels is not None and total and not matched:
        _note(ctx, f"trace2skill: warning: labels file {str(config.analyse.labels)!r} matched none of the {total} trajectories "
                   "by id (nor by instance_id or task_id); their outcomes stay as read")


def _llm(ctx: typer.Context, config):
    from .llm import CallCounter, build_llm

    factory = (ctx.obj or {}).get("llm_factory")
    llm = factory(config) if factory is not None else build_llm(config)  # the library puts it under the caps
    return CallCounter(llm) if llm is not None else None


def _check_model(config: Config, llm: LLMClient) -> threading.Thread:
    """The model preflight before any trajectory is analysed (the index pass runs beside it, in
    worker processes): a wrong key or model exits 78 in seconds, whatever the size of the
    corpus. It spends from the command's caps (`budget.with_budget`), and the run's own check
    does not repeat it (`llm.check_model`). Returns the thread importing what the run needs
    (`_import_ahead`), still going: join it before the run imports the same modules.

    Raises:
        ProviderRejected, ProviderUnavailable, ConfigError, BudgetExceeded: see `llm.check_model`.
    """
    import asyncio

    from .budget import with_budget
    from .llm import check_model, close_clients, probe_key

    importing = threading.Thread(target=_import_ahead, args=(llm,), name="trace2skill-import", daemon=True)

    async def check() -> None:
        try:
            await probe_key(llm)  # before litellm is imported: a refused key is known in a second
            importing.start()
            await check_model(with_budget(llm, config))
        finally:
            await close_clients()

    asyncio.run(check())
    return importing


class _Reading:
    """The map stage (`pipeline.read_corpus`) in a background thread, started before the model
    check: on the model path its shards are read in worker processes while the driver checks
    the key and the model and imports litellm and LangGraph, so the index is ready when they
    are. A failed check does not wait for it (`cancel`); the read stops after its current shard.
    Without a check to overlap (`overlap` false: offline, a dry run), and on Ray, the read waits
    for `result` and runs in the command's thread."""

    def __init__(self, config: Config, llm: LLMClient | None, paths: list[Path] | None, progress: Any, overlap: bool):
        self._stop = threading.Event()
        self._done: tuple[Corpus, Executor] | None = None
        self._error: BaseException | None = None
        self._executor: Executor | None = None
        self._thread = threading.Thread(target=self._read, args=(config, llm, paths, progress),
                                        name="trace2skill-read", daemon=True)
        # Ray is joined from the main thread only (its signal handlers); offline there is no check
        # to overlap, and a second thread's allocations would only grow the resident set (malloc arenas)
        if overlap and config.analyse.executor != "ray":
            from .executor import map_executor

            self._executor = map_executor(config, offline=False)  # its fork server starts now, beside our imports
            self._thread.start()

    def _read(self, config: Config, llm: LLMClient | None, paths: list[Path] | None, progress: Any) -> None:
        try:
            from .analyse import is_offline
            from .executor import map_executor
            from .pipeline import read_corpus

            executor = self._executor or map_executor(config, is_offline(llm))
            self._done = read_corpus(config, is_offline(llm), paths, executor=executor, progress=progress, stop=self._stop), executor
        except BaseException as exc:  # noqa: BLE001 - raised again by `result`, in the command's thread
            self._error = exc

    def result(self) -> tuple[Corpus, Executor]:
        """The corpus, and the executor that read it (the run prepares its prompts there).

        Raises:
            whatever `read_corpus` raised.
        """
        if self._thread.ident is None:
            self._thread.run()
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._done is not None
        return self._done

    def cancel(self) -> None:
        """Ask the read to stop after its current shard; does not wait."""
        self._stop.set()


def _import_ahead(llm: LLMClient) -> None:
    """Import litellm (for a litellm model), then the pipeline, while the preflight waits on the
    network: seconds of imports the run would otherwise wait for after it. (Started after the
    key probe: importing beside it slowed a refused key's exit. LangGraph is imported later,
    while the analyses wait on the network: `pipeline.warm_later_stages`.) An import that fails
    here fails again, and is reported, where it is used."""
    from .llm import wrappers
    from .llm.litellm_backend import LiteLLMClient, _litellm

    try:
        if any(isinstance(c, LiteLLMClient) for c in wrappers(llm)):
            _litellm()
        from . import pipeline  # noqa: F401 - as the read's thread does: no two threads import in opposite orders
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _show_progress(ctx: typer.Context, json_out: bool) -> bool:
    return _level(ctx) >= 0 and not json_out and sys.stderr.isatty() and not os.environ.get("CI")


# --------------------------------------------------------------------------------------------
# distill and refresh


@app.command(epilog="Example: trace2skill distill traces/ --out skills_out --skill swe-agent-lessons --dry-run")
@_run_command
def distill(ctx: typer.Context, flags: RunFlags) -> None:
    """Distil trajectories into a skill folder (create it, or deepen the existing one)."""
    _verbosity(ctx, flags.verbose, flags.quiet)
    try:
        config = _config(flags.config_path, flags.overrides(), flags.settings)
        llm = _llm(ctx, config)
        with _progress_reporter(_show_progress(ctx, flags.json_out)) as progress:
            checking = llm is not None and not flags.dry_run
            reading = _Reading(config, llm, flags.paths, progress, overlap=checking)  # overlaps the check and its imports
            try:
                importing = _check_model(config, llm) if checking else None
                corpus, executor = reading.result()
                if importing is not None and importing.ident is not None:
                    importing.join()  # the run imports the same modules next; one thread at a time
            finally:
                reading.cancel()
        from .journal import checkpoint_path
        from .pipeline import distill as run_distill
        from .pipeline import plan

        labelled = sum(e.label_source == str(config.analyse.labels) for e in corpus.entries)
        _warn_unmatched_labels(ctx, config, labelled, len(corpus.entries))
        quoted: list[Quote] = []
        gate_quote = _quote_heldout(ctx, config, llm, corpus)
        if flags.dry_run and llm is not None and corpus.entries:
            _quoted(ctx, quoted, plan(config, llm, corpus, None, check=False).quote, config, gate_quote)
            _note(ctx, "dry run: quote only; the diff needs the model's answers (run without --dry-run, with --max-calls or --budget)")
            return
        _quote_gate(config, flags.dry_run)
        before = _previous_titles(config.skill_dir())
        with _drain_on_sigterm() as control, _progress_reporter(_show_progress(ctx, flags.json_out)) as progress:
            checkpoint = checkpoint_path(config.state_dir) if llm is not None and not flags.dry_run else None
            try:
                result, build = run_distill(config, llm, corpus=corpus, progress=progress, write=not flags.dry_run,
                                            checkpoint=checkpoint, control=control, executor=executor,
                                            on_quote=lambda q: _quoted(ctx, quoted, q, config, gate_quote))
            finally:
                executor.close()  # a run stopped early leaves the prompt pass's workers running
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise _interrupted() from None
    estimate = quoted[0] if quoted else None
    _finish_run(ctx, config, result, build, before=before, estimate=estimate, llm=llm, report=flags.report,
                dry_run=flags.dry_run, json_out=flags.json_out, command="distill")
    if result.gate is not None and not result.gate["accepted"]:
        raise typer.Exit(EXIT_GATED)
    if result.skipped:
        raise typer.Exit(EXIT_PARTIAL)


@app.command(epilog="Example: trace2skill refresh --skill swe-agent-lessons --publish gh --budget 2.00 --yes")
@_run_command
def refresh(
    ctx: typer.Context,
    flags: RunFlags,
    publish: Annotated[Optional[str], typer.Option("--publish", help=_h("none | branch | gh | github", _config_default("publish.mode")), show_default=False)] = None,
    base: Annotated[Optional[str], typer.Option("--base", help=_h("Branch pull requests target.", _config_default("publish.base")), show_default=False)] = None,
    since: Annotated[Optional[datetime], typer.Option("--since", help=_h("Re-read trajectories whose files changed since this time, instead of only unseen ones.", "unseen ones only"), show_default=False)] = None,
    pr_body: Annotated[Optional[Path], typer.Option("--pr-body", help=_h("Also write the pull-request body to this file.", "not written"), show_default=False)] = None,
) -> None:
    """Fold new trajectories into a skill and publish the change (commit, branch or pull request)."""
    from .refresh import refresh as run_refresh
    from .report import print_refresh

    _verbosity(ctx, flags.verbose, flags.quiet)
    overrides = {**flags.overrides(), "publish.mode": publish, "publish.base": base}
    try:
        config = _config(flags.config_path, overrides, flags.settings)
        llm = _llm(ctx, config)
        before = _previous_titles(config.skill_dir())
        if flags.dry_run:
            return _refresh_dry_run(ctx, config, llm, flags.paths, since, flags.report, flags.json_out)
        _quote_gate(config)
        quoted: list[Quote] = []
        with _drain_on_sigterm() as control, _progress_reporter(_show_progress(ctx, flags.json_out)) as progress:
            outcome = run_refresh(config, llm, flags.paths or None, since=since, pr_body_path=pr_body,
                                  progress=progress, control=control, on_quote=lambda q: _quoted(ctx, quoted, q))
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise _interrupted() from None
    print_refresh(outcome, json_out=flags.json_out, publish=config.publish.mode)
    if outcome.result is not None and outcome.build is not None:
        _write_reports(ctx, config, outcome.result, outcome.build, before, quoted[0] if quoted else None, llm, flags.report, False, "refresh")
    if outcome.gated:
        raise typer.Exit(EXIT_GATED)
    if outcome.result is not None and outcome.result.skipped:
        raise typer.Exit(EXIT_PARTIAL)


def _quoted(ctx: typer.Context, keep: list[Quote], estimate: Quote, config: Config | None = None,
            gate: Quote | None = None) -> None:
    """Print the quote (unless -q) and keep it for the report; with the held-out gate's quote,
    refuse the two together above the caps, before the run makes a call.

    Raises:
        BudgetRefused: the run and its gate together are quoted above the caps.
    """
    from .report import print_quote

    keep.append(estimate)
    if _level(ctx) >= 0:
        print_quote(estimate)
    if gate is not None:
        from .pipeline import refuse_with_gate

        refuse_with_gate(config, estimate, gate)


def _quote_heldout(ctx: typer.Context, config: Config, llm: LLMClient | None, corpus: Corpus) -> Quote | None:
    """The held-out gate's quote with a model, printed before any call (None without one).

    Raises:
        BudgetRefused: the gate alone is quoted above the caps.
    """
    from .pipeline import heldout_quote, refuse_with_gate
    from .report import print_quote

    estimate = heldout_quote(config, llm, corpus)
    if estimate is not None and _level(ctx) >= 0:
        print_quote(estimate)
    refuse_with_gate(config, None, estimate)
    return estimate


def _refresh_dry_run(ctx, config, llm, paths, since, report, json_out) -> None:
    from .budget import preflight
    from .preview import preview_refresh
    from .report import print_quote

    if llm is not None:
        from .refresh import read_new
        from .state import load_state

        _, fresh = read_new(config, False, paths, load_state(config.state_dir), config.skill.name, since)
        entries = fresh.entries if fresh is not None else []
        if _level(ctx) >= 0:
            print_quote(preflight(entries, config, llm.model))
        _note(ctx, f"dry run: {len(entries)} new trajectories; quote only, the diff needs the model's answers")
        return
    preview = preview_refresh(config, None, paths, since)
    if preview is None:
        typer.echo(f"{config.skill.name}: no changes: every trajectory was already distilled (dry run)")
        return
    result, build = preview
    _finish_run(ctx, config, result, build, before={}, estimate=None, llm=None, report=report, dry_run=True,
                json_out=json_out, command="refresh")
    if result.skipped:
        raise typer.Exit(EXIT_PARTIAL)


def _finish_run(ctx, config, result, build, *, before, estimate, llm, report, dry_run, json_out, command) -> None:
    """Print the summary (and with --dry-run the diff of every file), then write the reports."""
    from .preview import file_diffs, rule_counts
    from .report import print_summary

    extra = None
    diffs = file_diffs(config.skill_dir(), build.files) if dry_run else []
    if dry_run:
        extra = {"diffs": diffs, "rules_added": build.added, "rules_changed": build.changed_rules, "rules_removed": build.removed}
    print_summary(result, json_out=json_out, dry_run=dry_run, extra=extra, quiet=_level(ctx) < 0)
    if dry_run and not json_out:
        typer.echo(f"dry run: would change {len(diffs)} file(s), {rule_counts(build)}; nothing was written")
        for diff in diffs:
            typer.echo(diff, nl=False)
    _write_reports(ctx, config, result, build, before, estimate, llm, report, dry_run, command)


def _previous_titles(skill_dir: Path) -> dict[str, str]:
    """Rule titles of the skill as it is now, so the report can name the rules a run removes."""
    try:
        data = json.loads((skill_dir / "provenance.json").read_text(encoding="utf-8"))
        return {rid: rec.get("title", rid) for table in ("withheld", "rules") for rid, rec in (data.get(table) or {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_reports(ctx, config, result, build, before, estimate, llm, explicit, dry_run, command) -> None:
    """The HTML report: always under the state folder (not on a dry run), and to --report."""
    from .html_report import render_report, report_context, report_path, write_report

    provenance = build.provenance if build.provenance is not None else build.files.get("provenance.json")
    context = report_context(result, provenance, added=build.added, changed=build.changed_rules,
                             removed=build.removed, previous_titles=before, quote=estimate,
                             calls=llm.calls if llm is not None else None, sources=result.sources,
                             command=command, dry_run=dry_run)
    html = render_report(context)
    targets = ([] if dry_run else [(report_path(config.state_dir, config.skill.name, result.run_id), config.state_dir)])
    for target, inside in targets + ([(explicit, None)] if explicit else []):
        try:
            write_report(target, html, inside=inside)
            _note(ctx, f"report: {target}")
        except OSError as exc:
            _note(ctx, f"trace2skill: warning: could not write the report {str(target)!r}: {exc.strerror or exc.args[0]}")


# --------------------------------------------------------------------------------------------
# Held-out evaluation and the gate


def _gate_overrides(gate: str | None, gate_cmd: str | None, ablate: int | None) -> dict[str, ConfigValue]:
    if gate is not None and gate not in ("none", "heldout", "command"):
        raise typer.BadParameter(f"{gate!r} is not one of none, heldout (or give --gate-cmd CMD)", param_hint="--gate")
    return {"gate.mode": "command" if gate_cmd and gate is None else gate, "gate.command": gate_cmd, "gate.ablate": ablate}


def _quote_gate(config, dry_run: bool = False) -> None:
    """Say how many benchmark runs the gate will make before any of them starts."""
    from .gate import quote_runs

    text = quote_runs(config)
    if text and not dry_run:
        _err(text)


@app.command("eval", epilog="Example: trace2skill eval traces/ --folds 4 --json")
def eval_command(
    ctx: typer.Context,
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Trace files or folders (default: `sources` from the config).", show_default=False, metavar="PATHS")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Folds, split by task (no task in two folds).")] = 4,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Where to write the learning-curve SVG (default: STATE/eval/learning-curve.svg).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="litellm model string (judged by the model), or 'offline'.")] = None,
    api_base: Annotated[Optional[str], typer.Option("--api-base", help="Base URL of a local OpenAI-compatible server.")] = None,
    trace_format: Annotated[Optional[str], typer.Option("--format", help="Force a trace reader instead of detecting by shape.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="JSON or CSV file of outcomes by trajectory id.")] = None,
    success_threshold: ThresholdOpt = None,
    budget: Annotated[Optional[float], typer.Option("--budget", help="Hard cap on model spend in US dollars.")] = None,
    max_calls: Annotated[Optional[int], typer.Option("--max-calls", help="Hard cap on model calls.")] = None,
    settings: SetOpt = None,
    config_path: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Held-out evaluation: distil on K-1 folds, score the rules on the held-out fold."""
    from .errors import ConfigError
    from .evaluate import curve_svg, evaluate
    from .report import print_eval

    overrides = {"llm.model": model, "llm.api_base": api_base, "analyse.format": trace_format, "analyse.labels": labels,
                 "analyse.success_threshold": success_threshold, "budget.max_cost": budget, "budget.max_calls": max_calls}
    try:
        config = _config(config_path, overrides, settings)
        config = config.model_copy(update={"gate": type(config.gate)()})
        llm = _llm(ctx, config)
        with _progress_reporter(_show_progress(ctx, json_out)) as progress:
            from .analyse import is_offline
            from .pipeline import distill as run_distill
            from .pipeline import read_corpus

            corpus = read_corpus(config, is_offline(llm), paths, progress=progress, task_ids=True)
            if llm is not None:
                from .evaluate import CURVE

                labelled = sum(e.outcome in ("success", "failure") for e in corpus.entries)
                _err(f"quote: {folds * len(CURVE)} in-memory distils (up to {len(corpus.entries)} analyses each, "
                     f"plus merges) and up to {labelled * len(CURVE)} judge calls; capped by --budget / --max-calls")
            evaluation = evaluate(run_distill, config, llm, corpus, folds, progress=progress)
        report = evaluation.as_dict()
        target = plot or config.state_dir / "eval" / "learning-curve.svg"
        if target.is_symlink():
            raise ConfigError(f"{str(target)!r} is a symbolic link; give --plot a regular file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(curve_svg(report["learning_curve"]), encoding="utf-8")
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    report["plot"] = str(target)
    report["skipped"] = [{"path": s.path, "record": s.record, "reason": s.reason} for s in corpus.skips]
    if llm is not None:
        report["usage"] = llm.usage.model_dump(mode="json")
    print_eval(report, json_out=json_out)
    if corpus.skips:
        raise typer.Exit(EXIT_PARTIAL)


# --------------------------------------------------------------------------------------------
# Reading skills


@app.command(epilog="Example: trace2skill validate skills_out/swe-agent-lessons --strict")
def validate(
    ctx: typer.Context,
    skill_dir: Annotated[Path, typer.Argument(help="A skill folder (the one holding SKILL.md), or a folder of several skills.")],
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings (recommended limits) as errors.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Check a skill folder: spec violations are errors (exit 65), recommended limits are warnings (exit 0)."""
    from .catalog import catalog_warnings, read_entry, skill_folders
    from .skill import check_skill_dir

    _verbosity(ctx, verbose, quiet)
    if not skill_dir.is_dir():
        missing = not skill_dir.exists()
        _err(f"error: {str(skill_dir)!r} " + ("does not exist" if missing else "is a file; give the folder that holds SKILL.md"))
        raise typer.Exit(66 if missing else 2)
    folders = [skill_dir] if (skill_dir / "SKILL.md").exists() else skill_folders(skill_dir) or [skill_dir]
    checked = {folder: check_skill_dir(folder) for folder in folders}
    catalog = catalog_warnings([read_entry(folder) for folder in folders]) if len(folders) > 1 else []
    failed = any(errors or (strict and warnings) for errors, warnings in checked.values()) or bool(strict and catalog)
    if json_out:
        errors = [p for e, _ in checked.values() for p in e]
        warnings = [p for _, w in checked.values() for p in w] + catalog
        payload: dict[str, Any] = {"skill_dir": str(skill_dir), "valid": not failed, "errors": errors, "warnings": warnings,
                                   "problems": errors + warnings}
        if folders != [skill_dir]:
            payload["skills"] = [{"skill_dir": str(f), "valid": not (e or (strict and w)), "errors": e, "warnings": w}
                                 for f, (e, w) in checked.items()]
        typer.echo(json.dumps(payload, indent=2))
    else:
        for folder, (errors, warnings) in checked.items():
            for problem in errors:
                typer.echo(f"{folder}: error: {problem}")
            for problem in warnings:
                typer.echo(f"{folder}: {'error' if strict else 'warning'}: {problem}")
            if not (errors or (strict and warnings)):
                typer.echo(f"{folder}: valid" + (f" ({len(warnings)} warning(s))" if warnings else ""))
        for warning in catalog:
            typer.echo(f"{'error' if strict else 'warning'}: {warning}")
    raise typer.Exit(65 if failed else 0)


@app.command(epilog="Examples: trace2skill explain skills_out/swe-agent-lessons r-0bbba05e;  "
                    "trace2skill explain skills_out/swe-agent-lessons --trace astropy__astropy-13453")
def explain(
    ctx: typer.Context,
    skill_dir: Annotated[Path, typer.Argument(help="A skill folder produced by trace2skill.")],
    rule: Annotated[Optional[str], typer.Argument(help="Rule id (r-...) or a unique part of its title.", show_default=False)] = None,
    trace: Annotated[Optional[str], typer.Option("--trace", help="List the rules this trajectory id supports instead.", show_default=False)] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Show the evidence behind one rule (trajectories, files, steps, quotes), or the rules a trajectory supports."""
    from .report import print_explanation, print_trace_rules
    from .skill import explain_rule

    level = _verbosity(ctx, verbose, quiet)
    if (rule is None) == (trace is None):
        _err("error: give either RULE or --trace ID")
        raise typer.Exit(2)
    try:
        if trace is not None:
            print_trace_rules(_rules_for_trace(skill_dir, trace), trace, json_out=json_out, skill_dir=skill_dir)
            return
        info = explain_rule(skill_dir, rule)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    print_explanation(info, json_out=json_out, skill_dir=skill_dir, verbose=level > 0)


def _rules_for_trace(skill_dir: Path, trace_id: str) -> list[dict[str, Any]]:
    """Every rule (written or held) with evidence from `trace_id`, strongest first."""
    from .errors import RuleLookupError
    from .provenance import load_provenance
    from .rules import rank_key

    source = skill_dir / "provenance.json"
    if not source.is_file():
        raise RuleLookupError(f"no provenance.json in {str(skill_dir)!r}; was this skill written by trace2skill?")
    provenance = load_provenance(source.read_bytes().decode("utf-8", errors="replace"))
    rows = []
    tables = (("in skill", provenance.rules), ("withheld", provenance.withheld))
    for status, table in tables:
        for record in sorted(table.values(), key=rank_key):
            hits = [e for e in record.evidence if e.trace_id == trace_id]
            if hits:
                rows.append({"id": record.id, "title": record.title, "status": status if status == "in skill" else f"withheld: {record.reason}",
                             "file": record.file, "section": record.section, "outcome": hits[0].outcome,
                             "step_numbers": sorted({s + 1 for e in hits for s in e.steps}), "quotes": [e.quote for e in hits if e.quote]})
    if not rows:
        known = {e.trace_id for table in (provenance.rules, provenance.withheld) for r in table.values() for e in r.evidence}
        hint = "" if known else " (the skill records no evidence)"
        raise RuleLookupError(f"no rule in {str(skill_dir)!r} has evidence from trajectory {trace_id!r}{hint}")
    return rows


@app.command(epilog="Example: trace2skill ingest traces/ --check")
def ingest(
    ctx: typer.Context,
    paths: PathsArg,
    check: Annotated[bool, typer.Option("--check", help="Print what was read, skipped and redacted.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 65 when any record was skipped, dropped, or neither read nor explained.")] = False,
    emit: Annotated[Optional[tuple[str, Path]], typer.Option("--emit", help="Write the canonical form: `--emit atif OUT.jsonl[.gz]`.", show_default=False)] = None,
    trace_format: FormatOpt = None,
    labels: LabelsOpt = None,
    success_threshold: ThresholdOpt = None,
    drop_sidechains: SidechainsOpt = False,
    settings: SetOpt = None,
    config_path: ConfigOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Read trajectories (streaming) and report them, or write them out as ATIF."""
    from .ingest import stream_report
    from .report import print_ingest

    level = _verbosity(ctx, verbose, quiet)
    if emit is not None and emit[0] != "atif":
        _err(f"error: unknown --emit format {emit[0]!r}; only 'atif' is supported")
        raise typer.Exit(2)
    if emit is not None and emit[1].is_dir():
        _err(f"error: --emit atif needs a file name, and {str(emit[1])!r} is a folder (try {str(emit[1] / 'traces.atif.jsonl')!r})")
        raise typer.Exit(2)
    try:
        config = _config(config_path, {"analyse.format": trace_format, "analyse.labels": labels,
                                        "analyse.success_threshold": success_threshold,
                                        "analyse.sidechains": "drop" if drop_sidechains else None}, settings)
        report = stream_report(paths, config, emit_to=emit[1] if emit else None)
        _warn_unmatched_labels(ctx, config, report["labels_matched"], report["traces"])
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    if check or json_out or emit is None:
        print_ingest(report, json_out=json_out, verbose=level > 0)
    if emit is not None:
        _note(ctx, f"wrote {report['traces']} trajectories to {emit[1]}")
    unclean = any(not row["clean"] for row in report["fidelity"])
    if report["traces"] == 0 or (strict and (report["skipped"] or unclean)):
        raise typer.Exit(65 if report["traces"] else 66)


# --------------------------------------------------------------------------------------------
# Getting started and installing


@app.command(epilog="Example: trace2skill install skills_out/swe-agent-lessons --agent claude")
def install(
    ctx: typer.Context,
    skill_dir: Annotated[Path, typer.Argument(help="The skill folder to install (the one holding SKILL.md).")],
    agent: Annotated[str, typer.Option("--agent", "-a", help="claude | codex | agents | gemini | cursor | copilot")] = "claude",
    user: Annotated[bool, typer.Option("--user", help="Install for your user (e.g. ~/.claude/skills) instead of this project.")] = False,
    link: Annotated[bool, typer.Option("--link", help="Symlink to SKILL_DIR instead of copying (later runs show up at once).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a different skill of the same name.")] = False,
    project: Annotated[Path, typer.Option("--project", help="Project root for a project install.")] = Path("."),
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Copy (or link) a skill where an agent loads skills: .claude/skills, .agents/skills, or the user folders."""
    from .install import install_skill, skills_folder

    _verbosity(ctx, verbose, quiet)
    try:
        folder = skills_folder(agent, user=user, project=project)
        done = install_skill(skill_dir, folder, link=link, force=force)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"{done.action}: {done.target}" + (" (already up to date)" if done.action == "unchanged" else ""))


@app.command(epilog="Example: trace2skill init --skill my-agent-lessons")
def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Option("--path", help="Config file to write.")] = Path("trace2skill.toml"),
    skill: Annotated[Optional[str], typer.Option("--skill", help="Skill name to set.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model to set (litellm string).", show_default=False)] = None,
    sources: Annotated[Optional[list[str]], typer.Option("--source", help=_h("Trace folder to read (repeatable).", "the trace folders found, if you confirm them"), show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Use every trace folder found without asking.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Write a commented trace2skill.toml: every key with its default, and the trace folders found here."""
    from .onboard import config_template, find_trace_folders

    _verbosity(ctx, verbose, quiet)
    if path.exists() and not force:
        _err(f"error: {str(path)!r} exists; rerun with --force to overwrite it")
        raise typer.Exit(1)
    found = find_trace_folders(cwd=path.resolve().parent)
    chosen_sources = list(sources or [])
    if not chosen_sources:
        for folder in found:
            if yes or (sys.stdin.isatty() and typer.confirm(f"read traces from {folder}?", default=True)):
                chosen_sources.append(folder)
    chosen: dict[str, Any] = {"sources": chosen_sources} if chosen_sources else {}
    if skill:
        chosen["skill.name"] = skill
    if model:
        chosen["llm.model"] = model
    try:
        _check_values({key: value for key, value in chosen.items() if key != "sources"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_template(chosen, [f for f in found if f not in chosen_sources]), encoding="utf-8")
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote {path}" + (f" (sources: {', '.join(chosen_sources)})" if chosen_sources else ""))
    _note(ctx, "next: trace2skill doctor, then trace2skill distill --dry-run")


def _check_values(values: dict[str, Any]) -> None:
    """Validate `values` alone (not the existing file, which init may be replacing).

    Raises:
        ConfigError: a value the config model refuses.
    """
    import tempfile

    from .config import load_config

    with tempfile.TemporaryDirectory() as empty:
        load_config(None, values, env={}, cwd=Path(empty))


@app.command(epilog="Example: trace2skill doctor --model openai/gpt-4.1-mini")
def doctor(
    ctx: typer.Context,
    model: ModelOpt = None,
    api_base: ApiBaseOpt = None,
    publish: Annotated[Optional[str], typer.Option("--publish", help=_h("none | branch | gh | github", _config_default("publish.mode")), show_default=False)] = None,
    settings: SetOpt = None,
    config_path: ConfigOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Check Python, the config, the model and its key (one cheap call), git, gh or a token, and paths; say what to fix."""
    from .doctor import Check, run_checks

    level = _verbosity(ctx, verbose, quiet)
    try:
        config = _config(config_path, {"llm.model": model, "llm.api_base": api_base, "publish.mode": publish}, settings)
    except Trace2SkillError as exc:
        checks = [Check("config", "fail", str(exc), "fix trace2skill.toml, the TRACE2SKILL_* variables or the flags")]
    else:
        checks = [Check("config", "ok", "configuration loads"), *run_checks(config, lambda c: _llm(ctx, c), verbose=level > 0)]
    if json_out:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for check in checks:
            typer.echo(f"{check.status:4}  {check.name:8} {check.detail}" + (f"\n      fix: {check.fix}" if check.fix and check.status != "ok" else ""))
    failed = [c for c in checks if c.status == "fail"]
    if not json_out:
        typer.echo(f"{len(failed)} problem(s) to fix" if failed else "ready")
    raise typer.Exit(78 if any(c.name == "config" for c in failed) else 1 if failed else 0)


# --------------------------------------------------------------------------------------------
# Versions


@app.command(epilog="Example: trace2skill history skills/swe-agent-lessons")
def history(skill_dir: Annotated[Path, typer.Argument(help="A skill folder inside a git repository.")], json_out: JsonOpt = False) -> None:
    """List a skill's versions (from its git tags), newest first."""
    from .publish import history as version_history
    from .report import print_history

    try:
        versions = version_history(skill_dir)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    print_history(list(reversed(versions)), json_out=json_out)


@app.command(epilog="Example: trace2skill rollback skills/swe-agent-lessons 1.2.0")
def rollback(
    skill_dir: Annotated[Path, typer.Argument(help="A skill folder inside a git repository.")],
    version: Annotated[str, typer.Argument(help="Version to restore, e.g. 1.2.0.")],
    publish: Annotated[Optional[str], typer.Option("--publish", help="branch | gh | github (none means branch)")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Branch pull requests target (default: the remote's HEAD).")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Folder for state and the lock.")] = None,
    config_path: ConfigOpt = None,
) -> None:
    """Restore an earlier version of a skill as a new commit on the bot branch, published like any change."""
    from .refresh import rollback as restore

    try:
        config = _config(config_path, {"publish.mode": publish, "publish.base": base, "state_dir": state_dir})
        result = restore(config, skill_dir, version.removeprefix("v"))
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"restored {skill_dir} {result.restored} as {result.version} in commit {result.commit[:12]} (tag {result.tag})"
               + (f"; pull request {result.pr_url}" if result.pr_url else ""))


@contextmanager
def _drain_on_sigterm():
    """SIGTERM asks the run to stop at the next safe point (exit 75, resumable) instead of killing it."""
    import signal

    from .fleet import DrainSwitch

    control = DrainSwitch()
    previous = signal.signal(signal.SIGTERM, lambda *_: control.request_drain("sigterm"))
    try:
        yield control
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted() -> typer.Exit:
    """Ctrl-C: one line and exit 75 (the journal keeps finished work), no tracebacks or warnings."""
    import warnings

    from .errors import Interrupted

    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    return _fail(Interrupted("interrupted; rerun the same command to resume"))


class _progress_reporter:
    """A rich progress bar on stderr driven by graph events: count, rate, ETA, spend, failures."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                  console=Console(stderr=True), transient=False)
        self._progress.__enter__()
        return self.update

    def update(self, stage: str, done: int, total: int, *, failed: int = 0, cost: float | None = None) -> None:
        if stage not in self._tasks:
            label = "reading trajectories (files)" if stage == "read" else f"{stage:8}"
            self._tasks[stage] = self._progress.add_task(label, total=total or None, rate="", status="")
        task = self._tasks[stage]
        elapsed = self._progress.tasks[task].elapsed or 0.0
        rate = f"{done / elapsed:5.1f}/s" if elapsed >= 1 else ""  # a rate over a fraction of a second says nothing
        status = (f"${cost:.4f}" if cost is not None else "") + (f"  {failed} failed" if failed else "")
        self._progress.update(task, completed=done, total=total or None, rate=rate, status=status)

    def __exit__(self, *exc_info):
        if self._progress is not None:
            self._progress.__exit__(*exc_info)
        return False


def main() -> None:
    """Console-script entry point (also behind `python cli.py` and `python -m trace2skill`,
    which show the same program name in usage messages)."""
    try:
        app(prog_name="trace2skill")
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(0)


def _exit_now(code: int | str | None) -> None:
    """Exit with `code` without tearing the interpreter down module by module.

    After litellm and LangGraph are imported, that teardown (freeing thousands of pydantic
    classes) took 1.6 s of CPU on every run, 4-5 s of wall time on a busy machine, after the
    result was already printed. Exit handlers still run and the standard streams are flushed;
    when a non-daemon thread is still running, the ordinary exit (which waits for it) is used.
    """
    import atexit
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
