"""The scheduled skill refresh: only new trajectories, one run per repository, resumable, reviewed.

    locks -> state -> preflight (gh, token, remote, base) -> repair what a killed run left
         -> finish a pending publish -> ingest -> keep unseen trajectories
         -> bot branch (human edits merged in) -> distil in deepen mode (checkpointed; gated
            when configured) -> record the pending publish -> commit / push / PR -> advance the watermark

A candidate the gate refuses is neither written nor published, and its trajectories are not
marked consumed, so the next refresh judges them again together with whatever arrived since.

Publishing is a transaction. Everything that can refuse (the gh tool and its login, the token,
the remote, the base branch, read from the remote's HEAD) is checked before anything is
written. The change is recorded as pending in the state before it is committed; the watermark
and the consumed trajectory digests advance only once it is published, and the next run
finishes a pending publish (push, pull request) before anything else. A run killed on the bot
branch is repaired by the next one: the half-written skill folder is discarded (it is written
again from the checkpoint) and the branch it started from is checked out again. Refreshes lock
the state folder and the repository (a lock file in its git folder), so two refreshes with
different state folders never work in one checkout at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .version import __version__
from .config import Config
from .errors import NoInputError, PublishError
from .fsguard import crash_point
from .journal import AnalysisJournal, checkpoint_path, journal_path
from .llm import LLMClient
from .analyse import is_offline
from .fleet import DrainSwitch
from .pipeline import Progress, distill, heldout_quote, no_input_message, refuse_with_gate
from .pipeline import plan as plan_run
from .stream import Corpus
from .state import PendingPublish, RefreshState, load_state, run_lock, save_state
from .types import RunResult

if TYPE_CHECKING:
    from langgraph.runtime import RunControl

    from .author import SkillBuild
    from .budget import Quote

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
    branch: str | None = None
    """The bot branch the change was committed on (None with `--publish none`)."""
    remote: str | None = None
    """The remote the bot branch was pushed to (None when not pushed)."""
    build: SkillBuild | None = None
    """The `SkillBuild` behind `result` (files, rule changes), for the report."""
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
    control: RunControl | DrainSwitch | None = None,
    on_quote: Callable[[Quote], None] | None = None,
) -> RefreshOutcome:
    """Fold trajectories that no earlier refresh consumed into the skill, and publish it.

    `on_quote(quote)` is called with the cost quote before the first model call.

    Raises:
        LockHeld: another refresh holds the state folder or the repository (exit 75, nothing touched).
        NoInputError: no trajectory could be read.
        PublishError: a publishing check failed before anything was written, or git, the push
            or the PR API refused (the change stays pending and the next run finishes it).
    """
    name = config.skill.name
    git = _GitTarget.open(config) if config.publish.mode != "none" else None
    with run_lock(config.state_dir), (git.lock() if git is not None else nullcontext()):
        state = load_state(config.state_dir)
        plan = git.preflight(config) if git is not None else None
        if git is not None:
            state = git.finish_pending(config, git.repair(config, state, plan), plan)
        index, fresh = read_new(config, is_offline(llm), paths, state, name, since, progress)
        if not index.entries:
            raise NoInputError(no_input_message(index.skips))
        if fresh is None:
            return RefreshOutcome(name, False, f"no changes: all {len(index.entries)} trajectories were already distilled")
        estimate = _quote(config, llm, fresh, on_quote)  # before touching git; distill checks the model
        return _fold(config, llm, fresh, state, git, plan, pr_body_path, progress, control, estimate)


def _quote(config: Config, llm: LLMClient | None, fresh: Corpus, on_quote: Callable[[Quote], None] | None) -> Quote | None:
    """The run's quote, and its held-out gate's (each passed to `on_quote`), refused above the caps
    alone or together, before git is touched (None offline).

    Raises:
        BudgetRefused: as said (exit 78).
    """
    if is_offline(llm):
        return None
    estimate = plan_run(config, llm, fresh, checkpoint_path(config.state_dir), check=False).quote
    gate = heldout_quote(config, llm, fresh)
    for quote in (estimate, gate):
        if on_quote is not None and quote is not None:
            on_quote(quote)
    refuse_with_gate(config, estimate, gate)
    return estimate


def _fold(config: Config, llm: LLMClient | None, fresh: Corpus, state: RefreshState, git: _GitTarget | None,
          plan: _Plan | None, pr_body_path: Path | None, progress: Progress | None, control: RunControl | DrainSwitch | None,
          estimate: Quote | None = None) -> RefreshOutcome:
    """Distil the new trajectories on the bot branch and publish the change (`estimate`: the quote
    already made and checked, passed on so distil does not quote again)."""
    name = config.skill.name
    branch = git.prepare(config, plan) if git is not None else None
    try:
        if branch is not None:
            state = state.with_checkout(name, branch.original).with_rejections(name, branch.removals)
            save_state(config.state_dir, state)
        rejected = {rid: r.support for rid, r in state.skill(name).rejected.items()}
        result, build = distill(config, llm, corpus=fresh, progress=progress, control=control,
                                checkpoint=checkpoint_path(config.state_dir), rejected=rejected, quoted=estimate)
        digests = [e.digest for e in fresh.entries]
        if result.gate is not None and not result.gate["accepted"]:
            return RefreshOutcome(name, False, f"gated: {build.previous_version or 'new'} -> {build.version} not published "
                                  f"({result.gate['reason']}); candidate kept in {result.gate['kept_at']}",
                                  len(fresh.entries), result, build=build, gated=True)
        if not build.changed:
            save_state(config.state_dir, state.with_success(name, version=build.version, digests=digests, run_id=result.run_id))
            return RefreshOutcome(name, False, f"no changes: {len(fresh.entries)} new trajectories added nothing", len(fresh.entries), result,
                                  build=build)
        content = git.pr_content(config, result, build, branch) if git is not None else None
        body = _render_body(content, pr_body_path)
        commit = pr_url = remote = None
        if git is not None:
            request = git.request(config, content, result, branch, plan)
            pending = PendingPublish(run_id=result.run_id, version=build.version, branch=branch.name, digests=tuple(digests),
                                     tag=git.tag(build.version), title=request.title, body=request.body, labels=request.labels)
            save_state(config.state_dir, state.with_pending(name, pending))
            crash_point("refresh-before-commit")
            outcome = plan.publisher.publish(request)
            commit, pr_url = (outcome.commit.sha if outcome.commit else None), outcome.pr_url
            remote = config.publish.remote if outcome.pushed else None
        save_state(config.state_dir, state.with_success(name, version=build.version, digests=digests, run_id=result.run_id))
        _forget_journal(config, result.run_id, digests)
        review = tuple(item.summary for item in content.review) if content is not None else ()
        return RefreshOutcome(name, True, f"{build.previous_version or 'new'} -> {build.version}", len(fresh.entries),
                              result, commit, pr_url, body, review, branch.name if branch else None, remote, build)
    finally:
        if git is not None and branch is not None:
            git.restore(config, branch)


@dataclass(frozen=True)
class RollbackOutcome:
    restored: str
    version: str
    tag: str
    commit: str
    pr_url: str | None
    removed: tuple[str, ...]
    """Rules the rollback took out; recorded as rejected so re-read evidence does not bring them back."""


def rollback(config: Config, skill_dir: Path, version: str) -> RollbackOutcome:
    """Restore an earlier version of the skill through the bot branch and a pull request, like
    any change (`--publish none` means `branch`: commit on the bot branch, push if there is a
    remote). The evidence state follows: trajectories folded into later versions are read again
    by the next refresh, and the rules the rollback removed count as rejected with the support
    they had, so that evidence does not simply bring them back.

    Raises:
        LockHeld, PublishError: as for `refresh`; an unknown version is a PublishError.
    """
    from .publish import PublishRequest, RemovedRule, SkillCommit, open_repo, read_blob
    from .publish import rollback as restore
    from .provenance import provenance_entries
    from .skillfmt.markers import rule_lines, rule_title
    from .skillfmt.versions import parse_version

    mode = config.publish.mode if config.publish.mode != "none" else "branch"
    config = config.model_copy(update={"publish": config.publish.model_copy(update={"mode": mode}),
                                       "skill": config.skill.model_copy(update={"name": Path(skill_dir).name})})
    name, git = config.skill.name, _GitTarget.open(config, Path(skill_dir))
    with run_lock(config.state_dir), git.lock():
        plan = git.preflight(config)
        state = git.finish_pending(config, git.repair(config, load_state(config.state_dir), plan), plan)
        branch = git.prepare(config, plan)
        try:
            save_state(config.state_dir, state.with_checkout(name, branch.original))
            repo = open_repo(git.repo_path)
            before = rule_lines(read_blob(repo.head.commit, f"{git.skill_rel}/SKILL.md") or "")
            evidence = provenance_entries(read_blob(repo.head.commit, f"{git.skill_rel}/provenance.json"))
            run_id = f"rollback-{version}-{repo.head.commit.hexsha[:12]}"
            result = restore(git.repo_path, git.skill_rel, version.removeprefix("v"), state_dir=config.state_dir.resolve(),
                             run_hooks=config.publish.run_hooks, trailers={"Trace2Skill-Run": run_id})
            after = rule_lines((git.skill_dir / "SKILL.md").read_text(encoding="utf-8"))
            removed = [RemovedRule(rid, str(evidence.get(rid, {}).get("title") or rule_title(line)),
                                   len(evidence.get(rid, {}).get("trace_ids") or []), "branch")
                       for rid, line in sorted(before.items()) if rid not in after]
            title = f"chore(skills): roll {name} back to v{result.restored} as v{result.version}"
            body = _rollback_body(name, result.restored, result.version, [r.title for r in removed])
            state = state.with_rejections(name, removed).without_versions_after(name, parse_version(result.restored))
            pending = PendingPublish(run_id=run_id, version=result.version, branch=branch.name, tag=result.tag,
                                     title=title, body=body, labels=("skills", "automated"))
            save_state(config.state_dir, state.with_pending(name, pending))
            request = PublishRequest(repo_path=git.repo_path, skill_dir_rel=git.skill_rel, branch=branch.name, base=plan.base,
                                     message="", trailers={}, title=title, body=body, labels=pending.labels,
                                     remote=config.publish.remote, run_hooks=config.publish.run_hooks)
            outcome = plan.publisher.deliver(request, SkillCommit(result.sha, result.version, result.tag, branch.name))
            save_state(config.state_dir, state.with_success(name, version=result.version, digests=(), run_id=run_id))
            return RollbackOutcome(result.restored, result.version, result.tag, result.sha, outcome.pr_url,
                                   tuple(r.rule_id for r in removed))
        finally:
            git.restore(config, branch)


def _rollback_body(name: str, restored: str, version: str, removed: list[str]) -> str:
    lines = [f"Rollback: restores `{name}` as it was in version {restored}, as version {version}.", ""]
    if removed:
        lines += ["Rules this takes out (they stay out until new evidence outnumbers what they had):", ""]
        lines += [f"- {title}" for title in removed] + [""]
    lines.append("Trajectories folded into later versions will be read again by the next refresh.")
    return "\n".join(lines) + "\n"


def read_new(config: Config, offline: bool, paths: list[Path] | None, state: RefreshState, skill: str,
             since: datetime | None, progress: Progress | None = None) -> tuple[Corpus, Corpus | None]:
    """Index every trajectory (nothing analysed, nothing held), then read and analyse only the
    new ones: those no earlier refresh consumed, or with `since`, those whose file changed
    since then. Returns the index of everything and the new trajectories' corpus (None: none)."""
    from .pipeline import read_corpus

    index = read_corpus(config, offline, paths, index_only=True, progress=progress)
    if since is not None:
        cutoff = since.timestamp()
        keep = [e for e in index.entries if _modified(e.path) >= cutoff]
    else:
        new = set(state.skill(skill).new_digests(e.digest for e in index.entries))
        keep = [e for e in index.entries if e.digest in new]
    if not keep:
        return index, None
    kept_ids = {e.id for e in keep}
    wanted = {e.digest for e in keep} | {digest for (_, digest), new_id in index.renamed.items() if new_id in kept_ids}
    return index, read_corpus(config, offline, paths, progress=progress, wanted=frozenset(wanted), renamed=index.renamed)


def _forget_journal(config: Config, run_id: str, digests: Iterable[str]) -> None:
    AnalysisJournal(journal_path(checkpoint_path(config.state_dir)), run_id).forget(digests)


def _modified(path: str) -> float:
    try:
        return os.stat(path.split("!", 1)[0]).st_mtime
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
class _Plan:
    """What the preflight settled: the branch PRs target, the remote (None: none), the publisher."""

    base: str
    remote: str | None
    publisher: Any


@dataclass(frozen=True)
class _GitTarget:
    """The repository holding the skill folder, and the folder's path inside it."""

    repo_path: Path
    skill_rel: str

    @classmethod
    def open(cls, config: Config, skill_dir: Path | None = None) -> "_GitTarget":
        from .publish import open_repo

        skill_dir = Path(skill_dir or config.skill_dir())
        anchor = config.publish.repo or next(p for p in [skill_dir, *skill_dir.resolve().parents] if p.exists())
        repo = open_repo(anchor)
        root = Path(repo.working_tree_dir).resolve()
        try:
            rel = skill_dir.resolve().relative_to(root)
        except ValueError:
            raise PublishError(f"skill folder {str(skill_dir)!r} is not inside the repository {str(root)!r}") from None
        return cls(root, rel.as_posix())

    @property
    def skill_dir(self) -> Path:
        return self.repo_path / self.skill_rel

    def tag(self, version: str) -> str:
        return f"{PurePosixPath(self.skill_rel).name}/v{version}"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One refresh per repository: a lock file in its (common) git folder."""
        from .fsguard import exclusive
        from .publish import open_repo

        common = Path(open_repo(self.repo_path).common_dir)
        with exclusive(common / "trace2skill-refresh.lock",
                       f"another refresh is running in the repository {str(self.repo_path)!r}; try again when it has finished"):
            yield

    def preflight(self, config: Config) -> _Plan:
        """Everything that can refuse a publish, checked before anything is written.

        Raises:
            PublishError: no remote for a PR, gh missing or logged out, no token, remote unreachable.
        """
        from .publish import default_branch, has_remote, make_publisher

        remote = config.publish.remote if has_remote(self.repo_path, config.publish.remote) else None
        if remote is None and config.publish.mode in {"gh", "github"}:
            raise PublishError(f"--publish {config.publish.mode} needs the remote {config.publish.remote!r} to push the bot branch to; "
                               "add it (git remote add) or use --publish branch")
        publisher = make_publisher(config.publish.mode, gh=config.publish.gh, token=config.publish.token,
                                   api_url=config.publish.api_url, repository=config.publish.repository)
        publisher.check(self.repo_path)
        return _Plan(config.publish.base or default_branch(self.repo_path, remote), remote, publisher)

    def repair(self, config: Config, state: RefreshState, plan: _Plan) -> RefreshState:
        """Undo what a refresh killed on the bot branch left: a half-written skill folder, a stale
        lock, the bot branch checked out. Its work is redone from the checkpoint."""
        from .pipeline import lock_path, skill_lock
        from .publish import bot_branch_name, ensure_clean, open_repo
        from .skill import recover_write

        recover_write(self.skill_dir)
        if lock_path(self.skill_dir).exists():
            with skill_lock(self.skill_dir):  # a live writer raises; a dead one's lock file goes
                pass
        name, repo = config.skill.name, open_repo(self.repo_path)
        original = state.skill(name).checkout
        if original is None or repo.head.is_detached or repo.active_branch.name != bot_branch_name(name):
            return state
        repo.git.reset("-q", "--", self.skill_rel)
        repo.git.clean("-fdq", "--", self.skill_rel)
        if _tracked(repo, self.skill_rel):
            repo.git.checkout("-q", "HEAD", "--", self.skill_rel)
        ensure_clean(repo, ignore=config.state_dir.resolve())
        repo.git.checkout(original, "--")
        state = state.with_checkout(name, None)
        save_state(config.state_dir, state)
        return state

    def finish_pending(self, config: Config, state: RefreshState, plan: _Plan) -> RefreshState:
        """Push and open the pull request for a change an earlier run committed but did not
        publish, then count its trajectories as used; a change never committed is dropped (its
        trajectories are read again)."""
        from .publish import PublishRequest, bot_commit_of_run

        name = config.skill.name
        pending = state.skill(name).pending
        if pending is None:
            return state
        commit = bot_commit_of_run(self.repo_path, pending.branch, pending.run_id, pending.tag)
        if commit is not None:
            request = PublishRequest(repo_path=self.repo_path, skill_dir_rel=self.skill_rel, branch=pending.branch, base=plan.base,
                                     message="", trailers={}, title=pending.title, body=pending.body, labels=pending.labels,
                                     remote=config.publish.remote, run_hooks=config.publish.run_hooks)
            plan.publisher.deliver(request, commit)
            state = state.with_success(name, version=pending.version, digests=pending.digests, run_id=pending.run_id)
            _forget_journal(config, pending.run_id, pending.digests)
        else:
            state = state.with_pending(name, None)
        save_state(config.state_dir, state)
        return state

    def prepare(self, config: Config, plan: _Plan):
        from .publish import prepare_branch

        return prepare_branch(self.repo_path, config.skill.name, self.skill_rel, plan.base,
                              remote=plan.remote, state_dir=config.state_dir.resolve())

    def restore(self, config: Config, branch: Any) -> None:
        from .publish import return_to

        if return_to(self.repo_path, branch, discard=self.skill_rel, state_dir=config.state_dir.resolve()):
            save_state(config.state_dir, load_state(config.state_dir).with_checkout(config.skill.name, None))

    def pr_content(self, config: Config, result: RunResult, build: Any, branch: Any):
        from .publish import PRContent, describe_change, open_repo, read_blob, review_items

        repo = open_repo(self.repo_path)
        before = read_blob(repo.commit(branch.base), f"{self.skill_rel}/SKILL.md")
        change = describe_change(config.skill.name, before, build.files["SKILL.md"], build.files.get("provenance.json"), self.skill_rel)
        return PRContent(
            skills=(change,), run_id=result.run_id, model=result.model, trajectories_read=result.traces_read,
            review=review_items(config.skill.name, result.conflicts, branch.clashes, build.hand_edits),
            input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens, cost=result.usage.cost,
            tool_version=__version__, gate=result.gate,
        )

    def request(self, config: Config, content: Any, result: RunResult, branch: Any, plan: _Plan):
        from .publish import PublishRequest, bot_trailers, pr_labels, render_commit_message, render_pr_body, render_pr_title

        trailers = bot_trailers(run_id=result.run_id, trajectories=result.traces_read, model=result.model,
                                input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens, cost=result.usage.cost)
        return PublishRequest(
            repo_path=self.repo_path, skill_dir_rel=self.skill_rel, branch=branch.name, base=plan.base,
            message=render_commit_message(content), trailers=trailers, title=render_pr_title(content),
            body=render_pr_body(content), labels=pr_labels(content), remote=config.publish.remote, run_hooks=config.publish.run_hooks,
        )


def _tracked(repo: Any, rel: str) -> bool:
    return bool(repo.git.ls_files("--", rel).strip())
