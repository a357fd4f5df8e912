"""The git side of publishing: a clean tree, the stable bot branch, bot commits, tags, pushes.

Invariants:
- Nothing happens in a dirty working tree (`ensure_clean`); the state folder is the one
  tolerated exception, and it is best git-ignored.
- Each skill has one stable bot branch, `trace2skill/<skill>`, so reruns update one pull
  request. It is checked out in the working tree while a refresh writes the skill, and
  `return_to` puts the previous checkout back.
- Human edits win. When the default branch moved since the bot branch forked (people edited
  the skill, or merged other work), `prepare_branch` merges it into the bot branch: a real
  merge commit (so the next merge base is right), `-X theirs` for files outside the skill,
  and our own three-way merge for the skill's files (`merge.py`), whose clashes are returned
  for the pull request. We keep the bot branch and merge into it, rather than rebuilding it
  from the default branch each time, because an open pull request carries work that is not
  on the default branch yet (earlier runs' rules, reviewers' edits), and the state file has
  already recorded those runs' trajectories as consumed. Once the bot's last version has
  landed (its commit is in the default branch, or the default branch carries that version
  after a squash merge), the branch is simply reset to the default branch.
- Bot commits stage only the skill folder, carry `Trace2Skill-*` trailers and a fixed bot
  identity, and get an annotated tag `<skill>/v<version>`; an unchanged folder makes no
  commit. Commit hooks run (pre-commit, commit-msg) so repository linters check skills
  too; pass `run_hooks=False` to skip them. Merge commits that only bring the default branch
  in skip hooks: their content was already checked where it was written.
- Trace-derived text never reaches git's argument parser: commit messages are written as
  objects, trailer values follow `--trailer` as separate arguments, and every path follows
  `--`. Only the bot branch is ever force-pushed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from git import Actor, Commit, GitCommandError, Repo
from git.exc import HookExecutionError, InvalidGitRepositoryError, NoSuchPathError

from ..errors import PublishError
from .merge import Clash, merge3, merge_json, merge_text
from ..provenance import provenance_entries
from ..skillfmt.frontmatter import read_version
from ..skillfmt.markers import rule_lines, rule_title
from ..skillfmt.versions import parse_version

BOT_ACTOR = Actor("trace2skill[bot]", "trace2skill-bot@users.noreply.github.com")
"""Author and committer of every bot commit and tag."""
BRANCH_PREFIX = "trace2skill/"
RUN_TRAILER = "Trace2Skill-Run"
TRAILER_KEYS = (RUN_TRAILER, "Trace2Skill-Trajectories", "Trace2Skill-Model", "Trace2Skill-Tokens", "Trace2Skill-Cost")
_SKILL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


@dataclass(frozen=True)
class RemovedRule:
    """A rule the bot proposed that a person removed, with the support it had then."""

    rule_id: str
    title: str
    support: int
    where: Literal["branch", "base"]
    """`branch`: removed on the bot branch (review); `base`: removed on the default branch (merged in, or after landing)."""


@dataclass(frozen=True)
class BotBranch:
    """The bot branch as `prepare_branch` left it (checked out)."""

    name: str
    base: str
    """The ref merged in: `<remote>/<base>` when fetched, else the local base branch."""
    status: Literal["created", "current", "merged", "reset"]
    original: str
    """Branch (or commit, when detached) that was checked out before; see `return_to`."""
    clashes: tuple[Clash, ...] = ()
    removals: tuple[RemovedRule, ...] = ()


@dataclass(frozen=True)
class SkillCommit:
    sha: str
    version: str
    tag: str
    branch: str


def bot_branch_name(skill_name: str) -> str:
    """`trace2skill/<skill>`; refuses names that are not valid skill names."""
    if not _SKILL_NAME.match(skill_name) or len(skill_name) > 64:
        raise PublishError(f"invalid skill name {skill_name!r}: use lowercase letters, digits and single hyphens")
    return BRANCH_PREFIX + skill_name


def bot_trailers(
    *, run_id: str, trajectories: int, model: str, input_tokens: int, output_tokens: int, cost: float | None
) -> dict[str, str]:
    """The standard `Trace2Skill-*` trailers for a bot commit."""
    return {
        RUN_TRAILER: run_id,
        "Trace2Skill-Trajectories": str(trajectories),
        "Trace2Skill-Model": model,
        "Trace2Skill-Tokens": f"{input_tokens} in, {output_tokens} out",
        "Trace2Skill-Cost": "n/a (offline)" if model == "offline" else "unknown" if cost is None else f"${cost:.4f}",
    }


def open_repo(path: Path | str) -> Repo:
    """The git repository containing `path`. The path itself need not exist (a skill folder
    that lives only on the bot branch, or is not created yet): its nearest existing ancestor
    is searched instead.

    Raises:
        PublishError: `path` is not inside a git repository.
    """
    anchor = next((p for p in [Path(path), *Path(path).absolute().parents] if p.exists()), Path(path))
    try:
        return Repo(anchor, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise PublishError(f"{str(path)!r} is not inside a git repository; run `git init` or set publish.repo") from None


def ensure_clean(repo: Repo | Path | str, *, ignore: Path | None = None) -> None:
    """Refuse to work in a working tree with changes or untracked files.

    Args:
        repo: repository (or a path inside it).
        ignore: a folder (usually the state folder) whose changes are tolerated.

    Raises:
        PublishError: listing the offending paths.
    """
    repo = repo if isinstance(repo, Repo) else open_repo(repo)
    if not repo.is_dirty(untracked_files=True):
        return
    skip = _relative(repo, ignore) if ignore is not None else None
    entries = repo.git.status("--porcelain=v1", "-z", "--untracked-files=all").split("\0")
    dirty, index = [], 0
    while index < len(entries):
        entry = entries[index]
        index += 2 if entry[:1] in ("R", "C") else 1
        path = entry[3:]
        if path and not (skip and (path == skip or path.startswith(skip + "/"))):
            dirty.append(path)
    if dirty:
        shown = ", ".join(repr(p) for p in dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise PublishError(f"the working tree of {repo.working_tree_dir!r} has uncommitted changes ({shown}); commit or stash them first")


def prepare_branch(
    repo_path: Path | str,
    skill_name: str,
    skill_dir_rel: str,
    base: str = "main",
    *,
    remote: str | None = None,
    state_dir: Path | None = None,
) -> BotBranch:
    """Check out the bot branch for `skill_name`, up to date with `base`.

    Creates the branch from `base` when absent; resets it to `base` when the bot's last version
    has landed; otherwise merges `base` in with human edits winning. Review removals are read
    before anything moves, and again after a merge (rules people deleted on `base`). With
    `remote`, the base and bot branches are fetched first so reviewers' commits on the pull
    request are kept.

    Raises:
        PublishError: dirty tree, unknown base, or a git failure.
    """
    repo = open_repo(repo_path)
    ensure_clean(repo, ignore=state_dir)
    name = bot_branch_name(skill_name)
    skill_dir_rel = _posix(skill_dir_rel)
    original = repo.head.commit.hexsha if repo.head.is_detached else repo.active_branch.name
    base_ref = _sync_from_remote(repo, remote, base, name) if remote else base
    base_commit = _resolve(repo, base_ref)
    removals = tuple(detect_review_removals(repo, skill_dir_rel, name, base_ref))
    if name not in repo.heads:
        repo.create_head(name, base_commit).checkout()
        return BotBranch(name, base_ref, "created", original, (), removals)
    repo.heads[name].checkout()
    head = repo.head.commit
    if repo.is_ancestor(base_commit, head):
        return BotBranch(name, base_ref, "current", original, (), removals)
    bot = _last_bot_commit(repo, head)
    if repo.is_ancestor(head, base_commit) or (bot is not None and _landed(repo, bot, base_commit, skill_dir_rel)):
        repo.head.reset(base_commit, index=True, working_tree=True)
        return BotBranch(name, base_ref, "reset", original, (), removals)
    clashes = _merge_into_bot_branch(repo, base_commit, base_ref, skill_dir_rel)
    known = {r.rule_id for r in removals}
    after = detect_review_removals(repo, skill_dir_rel, name, base_ref)
    merged_away = [replace(r, where="base") for r in after if r.rule_id not in known]
    return BotBranch(name, base_ref, "merged", original, tuple(clashes), removals + tuple(merged_away))


def return_to(
    repo_path: Path | str, branch: BotBranch, *, discard: str | None = None, state_dir: Path | None = None
) -> bool:
    """Check out again whatever was checked out before `prepare_branch`.

    Args:
        discard: a skill folder whose uncommitted changes (from a run that failed before its
            commit) may be thrown away first; a resumed run writes them again.
        state_dir: the state folder, whose changes never block switching back.

    Returns:
        False, leaving the bot branch checked out, when other uncommitted changes remain,
        so nothing is ever carried over to (or lost from) the previous branch.
    """
    repo = open_repo(repo_path)
    if discard is not None:
        rel = _posix(discard)
        repo.git.reset("-q", "--", rel)
        repo.git.clean("-fdq", "--", rel)
        if _exists(repo.head.commit, rel):
            repo.git.checkout("-q", "--", rel)
    try:
        ensure_clean(repo, ignore=state_dir)
    except PublishError:
        return False
    if repo.head.is_detached or repo.active_branch.name != branch.original:
        repo.git.checkout(branch.original, "--")
    return True


def detect_review_removals(repo: Repo | Path | str, skill_dir_rel: str, branch: str, base: str) -> list[RemovedRule]:
    """Rules in the bot's last commit that people have since removed.

    A rule counts as removed when it is missing from SKILL.md at the bot branch's head (a
    reviewer deleted it on the pull request, or a deletion on the base branch was merged in),
    or, once the bot's last version has landed on `base`, when it is missing there.
    """
    repo = repo if isinstance(repo, Repo) else open_repo(repo)
    if branch not in repo.heads:
        return []
    head = repo.heads[branch].commit
    bot = _last_bot_commit(repo, head)
    if bot is None:
        return []
    skill_md = f"{_posix(skill_dir_rel)}/SKILL.md"
    proposed = rule_lines(read_blob(bot, skill_md) or "")
    gone = {rid: "branch" for rid in proposed if rid not in rule_lines(read_blob(head, skill_md) or "")}
    base_commit = _resolve(repo, base, required=False)
    if base_commit is not None and _landed(repo, bot, base_commit, skill_dir_rel):
        at_base = rule_lines(read_blob(base_commit, skill_md) or "")
        gone.update({rid: "base" for rid in proposed if rid not in at_base and rid not in gone})
    evidence = provenance_entries(read_blob(bot, f"{_posix(skill_dir_rel)}/provenance.json"))
    return [_removed(rid, proposed[rid], evidence.get(rid, {}), where) for rid, where in gone.items()]


def commit_skill(
    repo_path: Path | str,
    skill_dir_rel: str,
    message: str,
    trailers: dict[str, str],
    *,
    branch: str | None = None,
    actor: Actor = BOT_ACTOR,
    run_hooks: bool = True,
) -> SkillCommit | None:
    """Commit the skill folder (only it) and tag `<skill>/v<version>`.

    Args:
        skill_dir_rel: the skill folder, relative to the repository root.
        message: commit message without trailers.
        trailers: `Trace2Skill-*` trailers (see `bot_trailers`).
        branch: when given, refuse unless this branch is checked out.
        run_hooks: run pre-commit and commit-msg hooks (a failing hook raises).

    Returns:
        The commit, or None when the folder is unchanged (nothing is committed).

    Raises:
        PublishError: wrong branch, missing version, tag taken, or a failing hook.
    """
    repo = open_repo(repo_path)
    skill_dir_rel = _posix(skill_dir_rel)
    current = None if repo.head.is_detached else repo.active_branch.name
    if branch is not None and current != branch:
        raise PublishError(f"expected branch {branch!r} to be checked out, found {current!r}")
    _check_trailers(trailers)
    version = _working_version(repo, skill_dir_rel)
    tag = f"{PurePosixPath(skill_dir_rel).name}/v{version}"
    repo.git.add("-A", "--", skill_dir_rel)
    if not repo.git.diff("--cached", "--name-only", "--", skill_dir_rel).strip():
        return None
    if tag in repo.tags:
        repo.git.reset("-q", "--", skill_dir_rel)
        raise PublishError(f"tag {tag!r} already exists; the skill's version must be bumped before committing")
    try:
        commit = repo.index.commit(_with_newline(message), author=actor, committer=actor, trailers=trailers, skip_hooks=not run_hooks)
    except HookExecutionError as exc:
        raise PublishError(f"a commit hook rejected the skill commit (files left staged): {exc}") from None
    tag_commit(repo, tag, commit, f"{tag} by trace2skill", actor)
    return SkillCommit(commit.hexsha, version, tag, current or commit.hexsha)


def tag_commit(repo: Repo, tag: str, commit: Commit, message: str, actor: Actor = BOT_ACTOR) -> None:
    """Create an annotated tag whose tagger is `actor`."""
    repo.git.tag("-a", "-m", message, tag, commit.hexsha, env=_identity_env(actor))


def has_remote(repo_path: Path | str, remote: str) -> bool:
    """True when the repository has a remote called `remote`."""
    return remote in [r.name for r in open_repo(repo_path).remotes]


def default_branch(repo_path: Path | str, remote: str | None) -> str:
    """The branch pull requests target when none is configured: the remote's HEAD (asked with
    `git ls-remote --symref`, so a `master` repository works), else the branch checked out
    (unless it is a bot branch), else `main`.

    Raises:
        PublishError: the remote cannot be reached.
    """
    repo = open_repo(repo_path)
    if remote is not None:
        if remote.startswith("-") or remote not in [r.name for r in repo.remotes]:
            raise PublishError(f"no git remote named {remote!r}")
        try:
            listing = repo.git.ls_remote("--symref", remote, "HEAD")
        except GitCommandError as exc:
            raise PublishError(f"cannot reach the git remote {remote!r}: {exc.stderr.strip()}") from None
        for line in listing.splitlines():
            ref, _, name = line.partition("\t")
            if name == "HEAD" and ref.startswith("ref: refs/heads/"):
                return ref[len("ref: refs/heads/"):]
    if not repo.head.is_detached and not repo.active_branch.name.startswith(BRANCH_PREFIX):
        return repo.active_branch.name
    return "main"


def bot_commit_of_run(repo_path: Path | str, branch: str, run_id: str, tag: str) -> SkillCommit | None:
    """The commit a run made at the head of the bot branch (tagging it if the run died between
    committing and tagging), or None when the run never committed."""
    repo = open_repo(repo_path)
    if branch not in repo.heads:
        return None
    head = repo.heads[branch].commit
    if _trailer(head, RUN_TRAILER) != run_id:
        return None
    if tag not in repo.tags:
        tag_commit(repo, tag, head, f"{tag} by trace2skill")
    return SkillCommit(head.hexsha, tag.rsplit("/v", 1)[-1], tag, branch)


def push_branch(repo_path: Path | str, remote: str, branch: str, tags: tuple[str, ...] = ()) -> None:
    """Force-push the bot branch (never any other) and push `tags` without force.

    Raises:
        PublishError: not a bot branch, unknown remote, or a rejected push.
    """
    repo = open_repo(repo_path)
    if not branch.startswith(BRANCH_PREFIX):
        raise PublishError(f"refusing to force-push {branch!r}: only {BRANCH_PREFIX}* branches belong to the bot")
    if remote not in [r.name for r in repo.remotes]:
        raise PublishError(f"no git remote named {remote!r}; add one or choose --publish branch without a remote")
    refspecs = [f"+refs/heads/{branch}:refs/heads/{branch}", *(f"refs/tags/{t}:refs/tags/{t}" for t in tags)]
    try:
        repo.git.push("--porcelain", "--", remote, *refspecs)
    except GitCommandError as exc:
        raise PublishError(f"git push to {remote!r} failed: {exc.stderr.strip()}") from None


# -- helpers ---------------------------------------------------------------------------------


def read_blob(commit: Commit, path: str) -> str | None:
    """Text of `path` at `commit`, or None when absent (or not text)."""
    try:
        return (commit.tree / path).data_stream.read().decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def _posix(path: str | Path) -> str:
    text = PurePosixPath(Path(path).as_posix()).as_posix().strip("/")
    if not text or text.startswith("-") or ".." in PurePosixPath(text).parts:
        raise PublishError(f"invalid skill folder {str(path)!r}: give a path inside the repository")
    return text


def _relative(repo: Repo, path: Path) -> str | None:
    try:
        return Path(path).resolve().relative_to(Path(repo.working_tree_dir).resolve()).as_posix()
    except ValueError:
        return None


def _identity_env(actor: Actor) -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": actor.name or "", "GIT_AUTHOR_EMAIL": actor.email or "",
        "GIT_COMMITTER_NAME": actor.name or "", "GIT_COMMITTER_EMAIL": actor.email or "",
    }


def _resolve(repo: Repo, ref: str, *, required: bool = True) -> Commit | None:
    if ref.startswith("-"):
        raise PublishError(f"invalid base branch {ref!r}")
    try:
        return repo.commit(ref)
    except (ValueError, GitCommandError, KeyError):
        if required:
            raise PublishError(f"base branch {ref!r} does not exist in {repo.working_tree_dir!r}") from None
        return None


def _sync_from_remote(repo: Repo, remote: str, base: str, branch: str) -> str:
    """Fetch base and bot branch; fast-forward (or, if diverged, replace) the local bot branch."""
    if remote.startswith("-") or remote not in [r.name for r in repo.remotes]:
        raise PublishError(f"no git remote named {remote!r}")
    fetched = []
    for ref in (base, branch):
        try:
            repo.git.fetch("--quiet", "--", remote, f"+refs/heads/{ref}:refs/remotes/{remote}/{ref}")
            fetched.append(ref)
        except GitCommandError:
            continue
    if branch in fetched:
        remote_head = repo.commit(f"refs/remotes/{remote}/{branch}")
        if branch not in repo.heads:
            repo.create_head(branch, remote_head)
        elif not repo.is_ancestor(remote_head, repo.heads[branch].commit):
            if not repo.head.is_detached and repo.active_branch.name == branch:
                repo.head.reset(remote_head, index=True, working_tree=True)
            else:
                repo.heads[branch].set_commit(remote_head)
    return f"{remote}/{base}" if base in fetched else base


def _last_bot_commit(repo: Repo, head: Commit) -> Commit | None:
    for commit in repo.iter_commits(head.hexsha, first_parent=True, max_count=500):
        if _trailer(commit, RUN_TRAILER) is not None:
            return commit
    return None


def _trailer(commit: Commit, key: str) -> str | None:
    """A trailer's value from the commit message's last paragraph (no subprocess)."""
    message = commit.message if isinstance(commit.message, str) else commit.message.decode("utf-8", "replace")
    for line in message.strip().split("\n\n")[-1].splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key.lower():
            return value.strip()
    return None


def _landed(repo: Repo, bot: Commit, base_commit: Commit, skill_dir_rel: str) -> bool:
    """Has the bot's last version reached the base branch (merged, rebased or squashed)?"""
    if repo.is_ancestor(bot, base_commit):
        return True
    skill_md = f"{_posix(skill_dir_rel)}/SKILL.md"
    ours, theirs = read_version(read_blob(bot, skill_md) or ""), read_version(read_blob(base_commit, skill_md) or "")
    try:
        return ours is not None and theirs is not None and parse_version(theirs) >= parse_version(ours)
    except ValueError:
        return False


def _removed(rid: str, line: str, entry: dict, where: str) -> RemovedRule:
    trace_ids = entry.get("trace_ids") or []
    support = len(trace_ids) or int(entry.get("failing_support", 0)) + int(entry.get("succeeding_support", 0))
    support = support or int(entry.get("support", 0))
    title = str(entry.get("title") or "") or rule_title(line)
    return RemovedRule(rid, title, support, where)  # type: ignore[arg-type]


def _with_newline(message: str) -> str:
    """`git interpret-trailers` glues trailers onto a message that lacks a final newline."""
    return message.rstrip("\n") + "\n"


def _check_trailers(trailers: dict[str, str]) -> None:
    for key, value in trailers.items():
        if not _TRAILER_KEY.match(key) or "\n" in str(value) or "\r" in str(value):
            raise PublishError(f"invalid commit trailer {key!r}: {value!r} (one line, key of letters, digits, hyphens)")


def _working_version(repo: Repo, skill_dir_rel: str) -> str:
    path = Path(repo.working_tree_dir) / skill_dir_rel / "SKILL.md"
    if not path.is_file():
        raise PublishError(f"no SKILL.md in {skill_dir_rel!r}; nothing to commit")
    version = read_version(path.read_text(encoding="utf-8"))
    if version is None:
        raise PublishError(f"{str(path)!r} has no metadata.trace2skill-version; the skill writer must set one")
    try:
        parse_version(version)
    except ValueError as exc:
        raise PublishError(str(exc)) from None
    return version


def _merge_into_bot_branch(repo: Repo, base_commit: Commit, base_ref: str, skill_dir_rel: str) -> list[Clash]:
    """Merge the base branch into the checked-out bot branch; human edits win."""
    head = repo.head.commit
    try:
        repo.git.merge("--no-ff", "--no-commit", "-X", "theirs", base_commit.hexsha)
    except GitCommandError as exc:
        if not Path(repo.git_dir, "MERGE_HEAD").exists():
            raise PublishError(f"cannot merge {base_ref!r} into the bot branch: {exc.stderr.strip()}") from None
    merge_base = repo.merge_base(head, base_commit)[0]
    both = set(_changed(repo, merge_base, head, skill_dir_rel)) & set(_changed(repo, merge_base, base_commit, skill_dir_rel))
    clashes: list[Clash] = []
    for path in sorted(both):
        clashes += _merge_file(repo, path, merge_base, head, base_commit)
    for path in repo.git.diff("--name-only", "--diff-filter=U").splitlines():
        clashes.append(Clash("file", path, note="conflicting change; kept the base branch's version"))
        _take(repo, path, read_blob(base_commit, path) is not None, base_commit)
    message = f"Merge {base_ref} into {repo.active_branch.name}\n\nHuman edits win; clashes are listed in the pull request."
    repo.git.commit("--no-verify", "--allow-empty", "-m", message, env=_identity_env(BOT_ACTOR))
    return clashes


def _changed(repo: Repo, a: Commit, b: Commit, folder: str) -> list[str]:
    return repo.git.diff("--name-only", "--no-renames", a.hexsha, b.hexsha, "--", folder).splitlines()


def _merge_file(repo: Repo, path: str, base: Commit, ours_commit: Commit, theirs_commit: Commit) -> list[Clash]:
    b, o, t = (read_blob(c, path) for c in (base, ours_commit, theirs_commit))
    if t is None or o is None:
        _take(repo, path, _exists(theirs_commit, path), theirs_commit)
        if (o != b) if t is None else (t != b):
            note = "deleted on the base branch, changed by the bot" if t is None else "kept the base branch's version"
            return [Clash("file", path, None, b, o, t, note)]
        return []
    name = PurePosixPath(path).name
    if name == "SKILL.md":
        text, clashes = merge3(b, o, t)
    elif name.endswith(".json"):
        text, clashes = merge_json(b, o, t, path)
    else:
        text, clashes = merge_text(b, o, t, path)
    Path(repo.working_tree_dir, path).write_bytes(text.encode("utf-8"))
    repo.git.add("--", path)
    return clashes


def _exists(commit: Commit, path: str) -> bool:
    try:
        commit.tree / path
        return True
    except KeyError:
        return False


def _take(repo: Repo, path: str, exists: bool, commit: Commit) -> None:
    if exists:
        repo.git.checkout(commit.hexsha, "--", path)
    else:
        repo.git.rm("-q", "-f", "--ignore-unmatch", "--", path)
