"""The scheduled skill refresh: only new trajectories, one run at a time, resumable, reviewed.

    lock -> state -> ingest -> keep unseen trajectories -> bot branch (human edits merged in)
         -> distil in deepen mode (checkpointed; gated when configured) -> commit / PR -> advance the watermark

A candidate the gate refuses is neither written nor published, and its trajectories are not
marked consumed, so the next refresh judges them again together with whatever arrived since.

The watermark and the consumed trajectory digests advance only after the skill is written and
committed (or written, with `--publish none`), so a crash at any point leaves the next run to
redo exactly what did not finish; the LangGraph checkpoint, keyed by a run id derived from the
inputs, makes that redo skip analyses that already completed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config
from .errors import NoInputError, PublishError
from .ingest import IngestResult, load_traces
from .journal import AnalysisJournal, checkpoint_path, journal_path
from .llm import LLMClient
from .pipeline import Progress, distill, no_input_message
from .state import RefreshState, load_state, run_lock, save_state
from .types import RunResult, Trace

@dataclass(frozen=True)
class RefreshOutcome:
    """What a refresh did; `result` is None when there was nothing new to analyse."""

    skill: str
    changed: bool
    message: str
    new_traces: int = 0
    result: RunResult | None = None
    commit: str | None = None
    pr_url: str | None = None
    pr_body: str | None = None
    review: tuple[str, ...] = field(default_factory=tuple)
    gated: bool = False
    """True when the gate refused the candidate: nothing was published and the trajectories stay unconsumed."""


def refresh(
    config: Config,
    llm: LLMClient | None,
    paths: list[Path] | None = None,
    *,
    since: datetime | None = None,
    pr_body_path: Path | None = None,
    progress: Progress | None = None,
    control: Any = None,
) -> RefreshOutcome:
    """Fold trajectories that no earlier refresh consumed into the skill, and publish it.

    Raises:
        LockHeld: another refresh holds the lock (exit 75, nothing touched).
        NoInputError: no trajectory could be read.
        PublishError: git refused (dirty tree, hook, push, PR API).
    """
    name = config.skill.name
    with run_lock(config.state_dir):
        state = load_state(config.state_dir)
        ingested = load_traces(paths or [Path(p) for p in config.sources], config)
        if not ingested.traces:
            raise NoInputError(no_input_message(ingested))
        fresh = select_new(ingested, state, name, since)
        if not fresh.traces:
            return RefreshOutcome(name, False, f"no changes: all {len(ingested.traces)} trajectories were already distilled")
        if llm is not None:
            from .budget import preflight

            preflight(fresh.traces, config, llm.model)
        git = _GitTarget.open(config) if config.publish.mode != "none" else None
        branch = git.prepare(config) if git else None
        try:
            if branch is not None:
                state = state.with_rejections(name, branch.removals)
                save_state(config.state_dir, state)
            rejected = {rid: r.support for rid, r in state.skill(name).rejected.items()}
            result, build = distill(config, llm, ingested=fresh, progress=progress, control=control,
                                    checkpoint=checkpoint_path(config.state_dir), rejected=rejected)
            digests = [t.digest() for t in fresh.traces]
            if result.gate is not None and not result.gate["accepted"]:
                return RefreshOutcome(name, False, f"gated: {build.previous_version or 'new'} -> {build.version} not published "
                                      f"({result.gate['reason']}); candidate kept in {result.gate['kept_at']}",
                                      len(fresh.traces), result, gated=True)
            if not build.changed:
                save_state(config.state_dir, state.with_success(name, version=build.version, digests=digests, run_id=result.run_id))
                return RefreshOutcome(name, False, f"no changes: {len(fresh.traces)} new trajectories added nothing", len(fresh.traces), result)
            content = git.pr_content(config, result, build, branch) if git else None
            body = _render_body(content, pr_body_path)
            commit = pr_url = None
            if git is not None:
                outcome = git.publish(config, content, result, build, branch)
                commit, pr_url = (outcome.commit.sha if outcome.commit else None), outcome.pr_url
            save_state(config.state_dir, state.with_success(name, version=build.version, digests=digests, run_id=result.run_id))
            _forget_journal(config, result.run_id)
            review = tuple(item.summary for item in content.review) if content is not None else ()
            return RefreshOutcome(name, True, f"{build.previous_version or 'new'} -> {build.version}", len(fresh.traces),
                                  result, commit, pr_url, body, review)
        finally:
            if git is not None and branch is not None:
                git.restore(config, branch)


def select_new(ingested: IngestResult, state: RefreshState, skill: str, since: datetime | None) -> IngestResult:
    """Trajectories no earlier refresh consumed; with `since`, those whose file changed since then."""
    if since is not None:
        cutoff = since.timestamp()
        keep = [t for t in ingested.traces if _modified(t) >= cutoff]
    else:
        consumed = state.skill(skill).trace_digests
        keep = [t for t in ingested.traces if t.digest() not in consumed]
    outcomes = {key: sum(1 for t in keep if t.outcome == key) for key in ingested.outcomes}
    return replace(ingested, traces=keep, outcomes=outcomes)


def _forget_journal(config: Config, run_id: str) -> None:
    AnalysisJournal(journal_path(checkpoint_path(config.state_dir)), run_id).forget()


def _modified(trace: Trace) -> float:
    path = trace.source.path.split("!", 1)[0]
    try:
        return os.stat(path).st_mtime
    except OSError:
        return float("inf")


def _render_body(content: Any, pr_body_path: Path | None) -> str | None:
    if content is None:
        return None
    from .publish import render_pr_body

    body = render_pr_body(content)
    if pr_body_path is not None:
        pr_body_path.parent.mkdir(parents=True, exist_ok=True)
        pr_body_path.write_text(body, encoding="utf-8")
    return body


@dataclass(frozen=True)
class _GitTarget:
    """The repository holding the skill folder, and the folder's path inside it."""

    repo_path: Path
    skill_rel: str

    @classmethod
    def open(cls, config: Config) -> "_GitTarget":
        from .publish import open_repo

        skill_dir = config.skill_dir()
        anchor = config.publish.repo or next(p for p in [skill_dir, *skill_dir.resolve().parents] if p.exists())
        repo = open_repo(anchor)
        root = Path(repo.working_tree_dir).resolve()
        try:
            rel = skill_dir.resolve().relative_to(root)
        except ValueError:
            raise PublishError(f"skill folder {str(skill_dir)!r} is not inside the repository {str(root)!r}") from None
        return cls(root, rel.as_posix())

    def prepare(self, config: Config):
        from .publish import has_remote, prepare_branch

        remote = config.publish.remote if has_remote(self.repo_path, config.publish.remote) else None
        if remote is None and config.publish.mode in {"gh", "github"}:
            raise PublishError(f"--publish {config.publish.mode} needs the remote {config.publish.remote!r} to push the bot branch to; "
                               "add it (git remote add) or use --publish branch")
        return prepare_branch(self.repo_path, config.skill.name, self.skill_rel, config.publish.base,
                              remote=remote, state_dir=config.state_dir.resolve())

    def restore(self, config: Config, branch: Any) -> None:
        from .publish import return_to

        return_to(self.repo_path, branch, discard=self.skill_rel, state_dir=config.state_dir.resolve())

    def pr_content(self, config: Config, result: RunResult, build: Any, branch: Any):
        from .publish import PRContent, describe_change, open_repo, read_blob, review_items

        repo = open_repo(self.repo_path)
        before = read_blob(repo.commit(branch.base), f"{self.skill_rel}/SKILL.md")
        change = describe_change(config.skill.name, before, build.files["SKILL.md"], build.files.get("provenance.json"), self.skill_rel)
        return PRContent(
            skills=(change,), run_id=result.run_id, model=result.model, trajectories_read=result.traces_read,
            review=review_items(config.skill.name, result.conflicts, branch.clashes),
            input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens, cost=result.usage.cost,
            tool_version=__version__, gate=result.gate,
        )

    def publish(self, config: Config, content: Any, result: RunResult, build: Any, branch: Any):
        from .publish import PublishRequest, bot_trailers, make_publisher, pr_labels, render_commit_message, render_pr_body, render_pr_title

        trailers = bot_trailers(run_id=result.run_id, trajectories=result.traces_read, model=result.model,
                                input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens, cost=result.usage.cost)
        request = PublishRequest(
            repo_path=self.repo_path, skill_dir_rel=self.skill_rel, branch=branch.name, base=config.publish.base,
            message=render_commit_message(content), trailers=trailers, title=render_pr_title(content),
            body=render_pr_body(content), labels=pr_labels(content), remote=config.publish.remote, run_hooks=config.publish.run_hooks,
        )
        publisher = make_publisher(config.publish.mode, gh=config.publish.gh, token=config.publish.token,
                                   api_url=config.publish.api_url, repository=config.publish.repository)
        return publisher.publish(request)
