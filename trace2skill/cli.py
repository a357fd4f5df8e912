"""The `trace2skill` command line: arguments in, library calls, results out.

Commands parse flags, build the one `Config` with `load_config`, call the library and print.
Library errors (`Trace2SkillError`) become one-line messages and documented exit codes here
and nowhere else. Results go to stdout; progress and messages to stderr. Tests hand in a
scripted model through the context object (`obj={"llm_factory": ...}`), never by patching.

Exit codes: 0 success (also "no changes"), 1 failure, 2 usage error, 3 partial success (some
trajectories skipped or failed, skill produced), 65 bad data or invalid skill, 66 no input,
69 model provider unavailable, 75 temporary (lock held, budget cap, interrupted; resumable),
78 bad configuration, 4 gated (the gate refused the candidate: nothing written or published).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import Trace2SkillError

EXIT_PARTIAL = 3
EXIT_GATED = 4

app = typer.Typer(
    name="trace2skill",
    help="Distil agent trajectories into versioned, provenance-tracked Agent Skills folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PathsArg = Annotated[list[Path], typer.Argument(help="Trace files or folders (JSON, JSONL, .gz, .zip).", show_default=False, metavar="PATHS")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML config file (default: ./trace2skill.toml or [tool.trace2skill] in ./pyproject.toml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--success-threshold", help="A reward at or above this counts as success (default 1.0).")]
SidechainsOpt = Annotated[bool, typer.Option("--drop-sidechains", help="Drop Claude Code sub-agent conversations instead of keeping them apart.")]
GateOpt = Annotated[Optional[str], typer.Option("--gate", help="none | heldout: refuse a candidate whose held-out coverage or false-alarm rate is worse than the current skill's.")]
GateCmdOpt = Annotated[Optional[str], typer.Option("--gate-cmd", help="Benchmark command run with the current skill and the candidate (folder in TRACE2SKILL_SKILL_DIR); last stdout line is the score.")]
AblateOpt = Annotated[Optional[int], typer.Option("--ablate", help="With --gate-cmd: also score the candidate without each of its N newest or weakest rules.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Any config key, e.g. --set analyse.token_budget=2000 (repeatable).", show_default=False)]


def _err(message: str) -> None:
    typer.echo(f"trace2skill: {message}", err=True)


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


def _config(config_path: Path | None, overrides: dict[str, Any], settings: list[str] | None = None):
    from .config import load_config
    from .errors import ConfigError

    extra: dict[str, Any] = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value
    flags = {key: value for key, value in overrides.items() if value is not None}
    return load_config(config_path, {**extra, **flags})


def _warn_unmatched_labels(config, matched: int, total: int) -> None:
    """A labels file that labels nothing is almost always an id mismatch; say so instead of
    silently distilling unlabelled runs."""
    if config.analyse.labels is not None and total and not matched:
        _err(f"warning: labels file {str(config.analyse.labels)!r} matched none of the {total} trajectories "
             "by id (nor by instance_id or task_id); their outcomes stay as read")


def _llm(ctx: typer.Context, config):
    from .llm import build_llm, with_budget

    factory = (ctx.obj or {}).get("llm_factory")
    if factory is not None:
        return with_budget(factory(config), config)
    return build_llm(config)


def _show_progress(json_out: bool) -> bool:
    return not json_out and sys.stderr.isatty() and not os.environ.get("CI")


@app.command()
def distill(
    ctx: typer.Context,
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Trace files or folders (JSON, JSONL, .gz, .zip; default: `sources` from the config).", show_default=False, metavar="PATHS")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder that holds skill folders.")] = None,
    skill: Annotated[Optional[str], typer.Option("--skill", help="Skill name (lowercase, digits, hyphens).")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="Frontmatter description: what the skill does and when to use it (derived from the lessons when unset).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="litellm model string, or 'offline' (no LLM; the default).")] = None,
    api_base: Annotated[Optional[str], typer.Option("--api-base", help="Base URL of a local OpenAI-compatible server.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Analysts running at once.")] = None,
    fan_in: Annotated[Optional[int], typer.Option("--fan-in", help="Lesson sets per merge.")] = None,
    min_support: Annotated[Optional[int], typer.Option("--min-support", help="Trajectories a rule needs to enter SKILL.md.")] = None,
    trace_format: Annotated[Optional[str], typer.Option("--format", help="Force a trace reader instead of detecting by shape.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="JSON or CSV file of outcomes by trajectory id.")] = None,
    success_threshold: ThresholdOpt = None,
    drop_sidechains: SidechainsOpt = False,
    budget: Annotated[Optional[float], typer.Option("--budget", help="Hard cap on model spend in US dollars.")] = None,
    max_calls: Annotated[Optional[int], typer.Option("--max-calls", help="Hard cap on model calls.")] = None,
    layout: Annotated[Optional[str], typer.Option("--layout", help="flat | agents | claude")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Quote the cost and show what would change; write nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Approve a run quoted above budget.approve_above.")] = False,
    gate: GateOpt = None,
    gate_cmd: GateCmdOpt = None,
    ablate: AblateOpt = None,
    settings: SetOpt = None,
    config_path: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Distil trajectories into a skill folder (create it, or deepen the existing one)."""
    from .pipeline import distill as run_distill

    overrides = {
        "skill.out": out, "skill.name": skill, "skill.layout": layout, "skill.description": description, "llm.model": model, "llm.api_base": api_base,
        "analyse.concurrency": concurrency, "analyse.format": trace_format, "analyse.labels": labels,
        "analyse.success_threshold": success_threshold, "analyse.sidechains": "drop" if drop_sidechains else None,
        "consolidate.fan_in": fan_in, "consolidate.min_support": min_support,
        "budget.max_cost": budget, "budget.max_calls": max_calls, "budget.approved": True if yes else None,
        **_gate_overrides(gate, gate_cmd, ablate),
    }
    from .budget import preflight
    from .ingest import load_traces
    from .journal import checkpoint_path
    from .report import print_quote, print_summary

    try:
        config = _config(config_path, overrides, settings)
        llm = _llm(ctx, config)
        ingested = load_traces(paths or [Path(p) for p in config.sources], config)
        labelled = sum(t.extra.get("label_source") == str(config.analyse.labels) for t in ingested.traces)
        _warn_unmatched_labels(config, labelled, len(ingested.traces))
        if llm is not None:
            estimate = preflight(ingested.traces, config, llm.model)
            print_quote(estimate)
            if dry_run:
                return
        _quote_gate(config, dry_run)
        with _drain_on_sigterm() as control, _progress_reporter(_show_progress(json_out)) as progress:
            checkpoint = checkpoint_path(config.state_dir) if llm is not None else None
            result, build = run_distill(config, llm, ingested=ingested, progress=progress, write=not dry_run,
                                        checkpoint=checkpoint, control=control)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None

    print_summary(result, build, json_out=json_out, dry_run=dry_run)
    if result.gate is not None and not result.gate["accepted"]:
        raise typer.Exit(EXIT_GATED)
    if result.skipped:
        raise typer.Exit(EXIT_PARTIAL)


def _gate_overrides(gate: str | None, gate_cmd: str | None, ablate: int | None) -> dict[str, Any]:
    if gate is not None and gate not in ("none", "heldout", "command"):
        raise typer.BadParameter(f"{gate!r} is not one of none, heldout (or give --gate-cmd CMD)", param_hint="--gate")
    return {"gate.mode": "command" if gate_cmd and gate is None else gate, "gate.command": gate_cmd, "gate.ablate": ablate}


def _quote_gate(config, dry_run: bool = False) -> None:
    """Say how many benchmark runs the gate will make before any of them starts."""
    from .gate import quote_runs

    text = quote_runs(config)
    if text and not dry_run:
        _err(text)


@app.command("eval")
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
    from .ingest import load_traces
    from .report import print_eval

    overrides = {"llm.model": model, "llm.api_base": api_base, "analyse.format": trace_format, "analyse.labels": labels,
                 "analyse.success_threshold": success_threshold, "budget.max_cost": budget, "budget.max_calls": max_calls}
    try:
        config = _config(config_path, overrides, settings)
        config = config.model_copy(update={"gate": type(config.gate)()})
        llm = _llm(ctx, config)
        ingested = load_traces(paths or [Path(p) for p in config.sources], config)
        if llm is not None:
            from .evaluate import CURVE

            labelled = sum(t.outcome in ("success", "failure") for t in ingested.traces)
            _err(f"quote: {folds * len(CURVE)} in-memory distils ({len(ingested.traces)} analyses, answered from the response "
                 f"cache when repeated, plus merges) and up to {labelled * len(CURVE)} judge calls; capped by --budget / --max-calls")
        with _progress_reporter(_show_progress(json_out)) as progress:
            evaluation = evaluate(config, llm, ingested, folds, progress=progress)
        report = evaluation.as_dict()
        target = plot or config.state_dir / "eval" / "learning-curve.svg"
        if target.is_symlink():
            raise ConfigError(f"{str(target)!r} is a symbolic link; give --plot a regular file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(curve_svg(report["learning_curve"]), encoding="utf-8")
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    report["plot"] = str(target)
    report["skipped"] = [{"path": s.path, "record": s.record, "reason": s.reason} for s in ingested.skips]
    if llm is not None:
        report["usage"] = llm.usage.model_dump(mode="json")
    print_eval(report, json_out=json_out)
    if ingested.skips:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def validate(skill_dir: Annotated[Path, typer.Argument(help="A skill folder (the one holding SKILL.md), or a folder of several skills.")], json_out: JsonOpt = False) -> None:
    """Check skill folders against the Agent Skills spec and trace2skill's own rules; for a folder
    of several skills, also warn about description budgets and descriptions that collide."""
    from .author import validate_skill_dir
    from .catalog import catalog_warnings, read_entry, skill_folders

    if not skill_dir.is_dir():
        missing = not skill_dir.exists()
        _err(f"error: {str(skill_dir)!r} " + ("does not exist" if missing else "is a file; give the folder that holds SKILL.md"))
        raise typer.Exit(66 if missing else 2)
    folders = [skill_dir] if (skill_dir / "SKILL.md").exists() else skill_folders(skill_dir) or [skill_dir]
    problems = {folder: validate_skill_dir(folder) for folder in folders}
    warnings = catalog_warnings([read_entry(folder) for folder in folders]) if len(folders) > 1 else []
    invalid = any(problems.values())
    if json_out:
        payload: dict[str, Any] = {"skill_dir": str(skill_dir), "valid": not invalid, "problems": [p for ps in problems.values() for p in ps],
                                   "warnings": warnings}
        if folders != [skill_dir]:
            payload["skills"] = [{"skill_dir": str(f), "valid": not ps, "problems": ps} for f, ps in problems.items()]
        typer.echo(json.dumps(payload, indent=2))
    else:
        for folder, found in problems.items():
            for problem in found:
                typer.echo(f"{folder}: {problem}")
            if not found:
                typer.echo(f"{folder}: valid")
        for warning in warnings:
            typer.echo(f"warning: {warning}")
    raise typer.Exit(65 if invalid else 0)


@app.command()
def explain(
    skill_dir: Annotated[Path, typer.Argument(help="A skill folder produced by trace2skill.")],
    rule: Annotated[str, typer.Argument(help="Rule id (r-...) or a unique part of its title.")],
    json_out: JsonOpt = False,
) -> None:
    """Show the evidence behind one rule: trajectories, outcomes, steps and quotes."""
    from .author import explain_rule
    from .report import print_explanation

    try:
        info = explain_rule(skill_dir, rule)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    print_explanation(info, json_out=json_out)


@app.command()
def ingest(
    paths: PathsArg,
    check: Annotated[bool, typer.Option("--check", help="Print what was read, skipped and redacted.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 65 when any record was skipped, dropped, or neither read nor explained.")] = False,
    emit: Annotated[Optional[tuple[str, Path]], typer.Option("--emit", help="Write the canonical form: `--emit atif OUT.jsonl[.gz]`.", show_default=False)] = None,
    trace_format: Annotated[Optional[str], typer.Option("--format", help="Force a trace reader instead of detecting by shape.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="JSON or CSV file of outcomes by trajectory id.")] = None,
    success_threshold: ThresholdOpt = None,
    drop_sidechains: SidechainsOpt = False,
    settings: SetOpt = None,
    config_path: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Read trajectories (streaming) and report them, or write them out as ATIF."""
    from .ingest import stream_report
    from .report import print_ingest

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
        _warn_unmatched_labels(config, report["labels_matched"], report["traces"])
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    if check or json_out or emit is None:
        print_ingest(report, json_out=json_out)
    if emit is not None:
        _err(f"wrote {report['traces']} trajectories to {emit[1]}")
    unclean = any(not row["clean"] for row in report["fidelity"])
    if report["traces"] == 0 or (strict and (report["skipped"] or unclean)):
        raise typer.Exit(65 if report["traces"] else 66)


@app.command()
def refresh(
    ctx: typer.Context,
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Trace files or folders (default: `sources` from the config).", show_default=False, metavar="PATHS")] = None,
    skill: Annotated[Optional[str], typer.Option("--skill", help="Skill name.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder that holds skill folders.")] = None,
    layout: Annotated[Optional[str], typer.Option("--layout", help="flat | agents | claude")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="litellm model string, or 'offline'.")] = None,
    publish: Annotated[Optional[str], typer.Option("--publish", help="none | branch | gh | github")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Branch pull requests target.")] = None,
    since: Annotated[Optional[datetime], typer.Option("--since", help="Re-read trajectories whose files changed since this time, instead of only unseen ones.")] = None,
    pr_body: Annotated[Optional[Path], typer.Option("--pr-body", help="Also write the pull-request body to this file.")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Folder for state, checkpoints and the lock.")] = None,
    gate: GateOpt = None,
    gate_cmd: GateCmdOpt = None,
    ablate: AblateOpt = None,
    settings: SetOpt = None,
    config_path: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fold new trajectories into a skill and publish the change (commit, branch or pull request)."""
    from .refresh import refresh as run_refresh
    from .report import print_refresh

    overrides = {"skill.name": skill, "skill.out": out, "skill.layout": layout, "llm.model": model,
                 "publish.mode": publish, "publish.base": base, "state_dir": state_dir,
                 **_gate_overrides(gate, gate_cmd, ablate)}
    try:
        config = _config(config_path, overrides, settings)
        _quote_gate(config)
        with _drain_on_sigterm() as control, _progress_reporter(_show_progress(json_out)) as progress:
            outcome = run_refresh(config, _llm(ctx, config), paths or None, since=since, pr_body_path=pr_body,
                                  progress=progress, control=control)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    print_refresh(outcome, json_out=json_out)
    if outcome.gated:
        raise typer.Exit(EXIT_GATED)
    if outcome.result is not None and outcome.result.skipped:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def history(skill_dir: Annotated[Path, typer.Argument(help="A skill folder inside a git repository.")], json_out: JsonOpt = False) -> None:
    """List a skill's versions (from its git tags), newest first."""
    from .publish import history as version_history
    from .report import print_history

    try:
        versions = version_history(skill_dir)
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    print_history(list(reversed(versions)), json_out=json_out)


@app.command()
def rollback(
    skill_dir: Annotated[Path, typer.Argument(help="A skill folder inside a git repository.")],
    version: Annotated[str, typer.Argument(help="Version to restore, e.g. 1.2.0.")],
) -> None:
    """Restore an earlier version of a skill as a new commit (history is never rewritten)."""
    from .publish import open_repo
    from .publish import rollback as restore

    try:
        repo = open_repo(skill_dir)
        rel = skill_dir.resolve().relative_to(Path(repo.working_tree_dir).resolve()).as_posix()
        result = restore(repo.working_tree_dir, rel, version.removeprefix("v"))
    except (Trace2SkillError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"restored {rel} {result.restored} as {result.version} in commit {result.sha[:12]} (tag {result.tag})")


@contextmanager
def _drain_on_sigterm():
    """SIGTERM asks the run to stop at the next safe point (exit 75, resumable) instead of killing it."""
    import signal

    from langgraph.runtime import RunControl

    control = RunControl()
    previous = signal.signal(signal.SIGTERM, lambda *_: control.request_drain("sigterm"))
    try:
        yield control
    finally:
        signal.signal(signal.SIGTERM, previous)


class _progress_reporter:
    """A rich progress bar on stderr driven by graph events; a no-op when not wanted."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=False)
        self._progress.__enter__()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(f"{stage:8}", total=total or None)
        self._progress.update(self._tasks[stage], completed=done, total=total or None)

    def __exit__(self, *exc_info):
        if self._progress is not None:
            self._progress.__exit__(*exc_info)
        return False


def main() -> None:
    """Console-script entry point (also behind `python cli.py` and `python -m trace2skill`,
    which show the same program name in usage messages)."""
    app(prog_name="trace2skill")
