"""A skill's version history, read from git, and rollback to an earlier version.

Tags `<skill>/v<version>` are the source of truth: each marks the commit that made a
version, its trailers name the run, and comparing SKILL.md between consecutive tags gives the
rules added, changed (same id, new wording) and removed. This needs no particular CHANGELOG
format and still works after a squash merge, since tags point at the commits the bot made.

Rollback never rewrites history. It restores the skill folder as tagged for the chosen
version in a new commit on the checked-out branch, and gives that commit a *new* version,
because reusing the old number would make the next refresh's version collide with existing
tags. The new version follows the highest version ever tagged, bumped like any change:
major when the rollback removes rules, minor when it only adds some, patch otherwise.
CHANGELOG.md is not rolled back (its history stays); it gains an entry saying which version
was restored. Nothing outside the skill folder changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from git import Actor, Commit, Repo
from git.exc import HookExecutionError

from ..errors import PublishError
from .gitops import BOT_ACTOR, RUN_TRAILER, _trailer, ensure_clean, open_repo, read_blob, tag_commit
from ..skillfmt.frontmatter import read_version, set_version
from ..skillfmt.markers import rule_lines
from ..skillfmt.versions import bump, parse_version, rollback_entry

ROLLBACK_TRAILER = "Trace2Skill-Rollback"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    tag: str
    commit: str
    committed_at: datetime
    run_id: str | None
    trajectories: int | None
    model: str | None
    rollback_of: str | None
    """The version this one restored, for rollback commits."""
    rules: int
    rules_added: int
    rules_changed: int
    rules_removed: int


@dataclass(frozen=True)
class RollbackResult:
    sha: str
    version: str
    """The new version the restored content carries."""
    restored: str
    """The version whose content was restored."""
    tag: str


def _locate(skill_dir: Path | str) -> tuple[Repo, str, str]:
    repo = open_repo(skill_dir)
    root = Path(repo.working_tree_dir).resolve()
    try:
        rel = Path(skill_dir).resolve().relative_to(root).as_posix()
    except ValueError:
        raise PublishError(f"{str(skill_dir)!r} is not inside the repository {str(root)!r}") from None
    return repo, rel, PurePosixPath(rel).name


def _tagged(repo: Repo, skill: str) -> list[tuple[tuple[int, int, int], str, Commit]]:
    prefix = f"{skill}/v"
    found = []
    for tag in repo.tags:
        if tag.name.startswith(prefix):
            try:
                found.append((parse_version(tag.name[len(prefix):]), tag.name, tag.commit))
            except ValueError:
                continue
    return sorted(found, key=lambda item: item[0])


def history(skill_dir: Path | str) -> list[VersionInfo]:
    """Every tagged version of the skill in `skill_dir`, oldest first.

    Raises:
        PublishError: `skill_dir` is not inside a git repository.
    """
    repo, rel, skill = _locate(skill_dir)
    versions: list[VersionInfo] = []
    previous: dict[str, str] = {}
    for key, tag, commit in _tagged(repo, skill):
        rules = rule_lines(read_blob(commit, f"{rel}/SKILL.md") or "")
        trajectories = _trailer(commit, "Trace2Skill-Trajectories")
        versions.append(VersionInfo(
            version=".".join(map(str, key)),
            tag=tag,
            commit=commit.hexsha,
            committed_at=commit.committed_datetime.astimezone(timezone.utc),
            run_id=_trailer(commit, RUN_TRAILER),
            trajectories=int(trajectories) if trajectories and trajectories.isdigit() else None,
            model=_trailer(commit, "Trace2Skill-Model"),
            rollback_of=_trailer(commit, ROLLBACK_TRAILER),
            rules=len(rules),
            rules_added=sum(1 for r in rules if r not in previous),
            rules_changed=sum(1 for r, line in rules.items() if r in previous and previous[r] != line),
            rules_removed=sum(1 for r in previous if r not in rules),
        ))
        previous = rules
    return versions


def rollback(
    repo_path: Path | str,
    skill_dir_rel: str,
    version: str,
    *,
    actor: Actor = BOT_ACTOR,
    state_dir: Path | None = None,
    run_hooks: bool = True,
    trailers: dict[str, str] | None = None,
) -> RollbackResult:
    """Restore the skill folder as tagged for `version`, as a new commit with a new version.

    The commit lands on the checked-out branch; `refresh.rollback` checks out the bot branch
    first and publishes it like any change (the CLI's way). `trailers` are added to the
    rollback trailer.

    Raises:
        PublishError: dirty tree, unknown version, or a SKILL.md without a version line.
    """
    repo = open_repo(repo_path)
    ensure_clean(repo, ignore=state_dir)
    rel = PurePosixPath(Path(skill_dir_rel).as_posix()).as_posix().strip("/")
    skill = PurePosixPath(rel).name
    tags = _tagged(repo, skill)
    target = next((commit for key, _, commit in tags if key == _version_key(version)), None)
    if target is None:
        known = ", ".join(".".join(map(str, key)) for key, _, _ in tags) or "none"
        raise PublishError(f"{skill!r} has no version {version!r} (tagged versions: {known})")
    folder = Path(repo.working_tree_dir, rel)
    changelog = folder / "CHANGELOG.md"
    kept_changelog = changelog.read_text(encoding="utf-8") if changelog.is_file() else None
    current_rules = rule_lines((folder / "SKILL.md").read_text(encoding="utf-8") if (folder / "SKILL.md").is_file() else "")
    repo.git.rm("-r", "-q", "--ignore-unmatch", "--", rel)
    repo.git.checkout(target.hexsha, "--", rel)
    skill_md = folder / "SKILL.md"
    restored_text = skill_md.read_text(encoding="utf-8")
    new_version = _next_version(tags, read_version(restored_text) or version, current_rules, rule_lines(restored_text))
    try:
        skill_md.write_text(set_version(restored_text, new_version), encoding="utf-8")
    except ValueError as exc:
        repo.git.reset("-q", "--hard")
        raise PublishError(f"cannot roll back {skill!r}: {exc}") from None
    changelog.write_text(rollback_entry(kept_changelog or "", new_version, version, skill), encoding="utf-8")
    repo.git.add("-A", "--", rel)
    message = f"chore(skills): roll {skill} back to v{version} as v{new_version}\n"
    try:
        commit = repo.index.commit(message, author=actor, committer=actor, trailers={ROLLBACK_TRAILER: version, **(trailers or {})},
                                   skip_hooks=not run_hooks)
    except HookExecutionError as exc:
        raise PublishError(f"a commit hook rejected the rollback commit (files left staged): {exc}") from None
    tag = f"{skill}/v{new_version}"
    tag_commit(repo, tag, commit, f"{tag}: rollback to v{version}", actor)
    return RollbackResult(commit.hexsha, new_version, version, tag)


def _version_key(version: str) -> tuple[int, int, int]:
    try:
        return parse_version(version)
    except ValueError as exc:
        raise PublishError(str(exc)) from None


def _next_version(tags: list, restored: str, current_rules: dict[str, str], restored_rules: dict[str, str]) -> str:
    highest = ".".join(map(str, tags[-1][0])) if tags else restored
    if any(r not in restored_rules for r in current_rules):
        return bump(highest, "major")
    if any(r not in current_rules for r in restored_rules):
        return bump(highest, "minor")
    return bump(highest, "patch")
