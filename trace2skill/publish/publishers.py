"""Publishers, chosen by name: `none`, `branch`, `gh` (GitHub CLI) and `github` (REST API).

Each one implements `check(repo_path)` (run before anything is written: is the tool there,
is there a token), `publish(request) -> PublishOutcome` (commit, then `deliver`) and
`deliver(request, commit)`, which pushes and opens the pull request for a commit already made,
so a refresh killed or refused after its commit can finish on the next run. `branch` commits
the skill folder on the bot branch, tags it and pushes when the remote exists; `gh` and
`github` also open the pull request, or update the open one for the same head branch, so
reruns never create a duplicate. No publisher ever merges. When the skill folder did not
change nothing is committed, pushed or opened.

The `gh` publisher runs a command path given to it (a real executable, which is how tests
drive it), labels are ensured before `gh pr create` because gh refuses unknown labels, and
every value is passed as `--flag=value` so nothing can be read as an option. The `github`
publisher uses urllib (no extra dependency) against a configurable API URL with a token the
caller supplies (config reads the environment, not this module); a 422 on create (the PR
appeared meanwhile) falls back to finding and updating it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ..errors import PublishError
from ..fsguard import crash_point
from .gitops import SkillCommit, commit_skill, has_remote, open_repo, push_branch

PublishMode = Literal["none", "branch", "gh", "github"]
_LABEL_COLORS = {"skills": "0e8a16", "automated": "ededed", "needs-review": "d93f0b"}


@dataclass(frozen=True)
class PublishRequest:
    repo_path: Path
    skill_dir_rel: str
    branch: str
    """The bot branch, checked out (from `prepare_branch`)."""
    base: str
    """Branch the pull request targets (a plain branch name, not `origin/main`)."""
    message: str
    trailers: Mapping[str, str]
    title: str
    body: str
    labels: tuple[str, ...] = ("skills", "automated")
    remote: str = "origin"
    run_hooks: bool = True


@dataclass(frozen=True)
class PublishOutcome:
    mode: PublishMode
    commit: SkillCommit | None = None
    pushed: bool = False
    pr_number: int | None = None
    pr_url: str | None = None
    pr_action: Literal["created", "updated"] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


class Publisher(Protocol):
    name: PublishMode

    def check(self, repo_path: Path) -> None: ...

    def publish(self, request: PublishRequest) -> PublishOutcome: ...

    def deliver(self, request: PublishRequest, commit: SkillCommit) -> PublishOutcome: ...


class _Committing:
    """`publish` = commit the skill folder, then `deliver` the commit (push, pull request)."""

    name: PublishMode
    needs_remote = False

    def check(self, repo_path: Path) -> None:
        """Nothing to check beyond the remote (checked by the caller)."""

    def publish(self, request: PublishRequest) -> PublishOutcome:
        if self.needs_remote and not has_remote(request.repo_path, request.remote):
            raise PublishError(f"no git remote named {request.remote!r}; a pull request needs the bot branch pushed")
        commit = commit_skill(request.repo_path, request.skill_dir_rel, request.message, dict(request.trailers),
                              branch=request.branch, run_hooks=request.run_hooks)
        crash_point("after-commit")
        return PublishOutcome(self.name) if commit is None else self.deliver(request, commit)

    def deliver(self, request: PublishRequest, commit: SkillCommit) -> PublishOutcome:
        return PublishOutcome(self.name, commit, _push(request, commit, required=self.needs_remote))


class NonePublisher(_Committing):
    """Leaves git alone; the skill folder is simply written."""

    name: PublishMode = "none"

    def publish(self, request: PublishRequest) -> PublishOutcome:
        return PublishOutcome("none")


class BranchPublisher(_Committing):
    """Commit and tag on the bot branch; push when the remote exists."""

    name: PublishMode = "branch"


class GhPublisher(_Committing):
    """Commit, push, then open or update the pull request with the GitHub CLI."""

    name: PublishMode = "gh"
    needs_remote = True

    def __init__(self, gh: str = "gh", repository: str | None = None, timeout: float = 120.0):
        self.gh = gh
        self.repository = repository
        """`OWNER/NAME` passed as `--repo`; gh infers it from the remote when None."""
        self.timeout = timeout

    def check(self, repo_path: Path) -> None:
        """gh must be installed and logged in (or given GH_TOKEN) before anything is committed.

        Raises:
            PublishError: gh is missing or `gh auth status` fails.
        """
        if shutil.which(self.gh) is None:
            raise PublishError(f"the GitHub CLI {self.gh!r} is not installed (or not on PATH); install it, set publish.gh, "
                               "or use --publish github with GITHUB_TOKEN")
        try:
            done = subprocess.run([self.gh, "auth", "status"], cwd=repo_path, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PublishError(f"cannot run {self.gh!r}: {exc}; install the GitHub CLI or use --publish github") from None
        if done.returncode != 0:
            raise PublishError(f"`gh auth status` failed ({done.returncode}): log in with `gh auth login` or set GH_TOKEN "
                               f"({(done.stderr or done.stdout).strip()[:200]})")

    def deliver(self, request: PublishRequest, commit: SkillCommit) -> PublishOutcome:
        pushed = _push(request, commit, required=True)
        with tempfile.TemporaryDirectory(prefix="trace2skill-pr-") as folder:
            body_file = Path(folder, "body.md")
            body_file.write_text(request.body, encoding="utf-8")
            found = json.loads(self._run(request, "pr", "list", f"--head={request.branch}", "--state=open", "--json=number,url") or "[]")
            for label in request.labels:
                self._ensure_label(request, label)
            if found:
                number, url = int(found[0]["number"]), str(found[0].get("url", ""))
                self._run(request, "pr", "edit", str(number), f"--title={request.title}", f"--body-file={body_file}",
                          *(f"--add-label={label}" for label in request.labels))
                return PublishOutcome("gh", commit, pushed, number, url or None, "updated")
            out = self._run(request, "pr", "create", f"--base={request.base}", f"--head={request.branch}",
                            f"--title={request.title}", f"--body-file={body_file}", *(f"--label={label}" for label in request.labels))
        url = out.strip().splitlines()[-1] if out.strip() else ""
        match = re.search(r"/pull/(\d+)", url)
        return PublishOutcome("gh", commit, pushed, int(match.group(1)) if match else None, url or None, "created")

    def _ensure_label(self, request: PublishRequest, label: str) -> None:
        # Without permission to manage labels, `pr create` reports the real problem.
        with contextlib.suppress(PublishError):
            self._run(request, "label", "create", label, f"--color={_LABEL_COLORS.get(label, 'ededed')}",
                      "--description=Managed by trace2skill", "--force")

    def _run(self, request: PublishRequest, *args: str) -> str:
        command = [self.gh, *args, *((f"--repo={self.repository}",) if self.repository else ())]
        try:
            done = subprocess.run(command, cwd=request.repo_path, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PublishError(f"cannot run {self.gh!r}: {exc}; install the GitHub CLI or use --publish github") from None
        if done.returncode != 0:
            raise PublishError(f"`gh {' '.join(args[:2])}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout


class GitHubPublisher(_Committing):
    """Commit, push, then open or update the pull request through the GitHub REST API."""

    name: PublishMode = "github"
    needs_remote = True

    def __init__(self, token: str, *, api_url: str = "https://api.github.com", repository: str | None = None, timeout: float = 30.0):
        if not token:
            raise PublishError("--publish github needs a token (set GITHUB_TOKEN or GH_TOKEN)")
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        """`OWNER/NAME`; read from the remote's URL when None."""
        self.timeout = timeout

    def check(self, repo_path: Path) -> None:
        """Nothing more: the token was checked when this publisher was made."""

    def deliver(self, request: PublishRequest, commit: SkillCommit) -> PublishOutcome:
        slug = self.repository or github_slug(_remote_url(request.repo_path, request.remote))
        pushed = _push(request, commit, required=True)
        owner = slug.split("/", 1)[0]
        pr = self._find(slug, owner, request)
        action: Literal["created", "updated"] = "updated"
        if pr is None:
            try:
                pr = self._call("POST", f"/repos/{slug}/pulls", {"title": request.title, "head": request.branch, "base": request.base,
                                                                 "body": request.body, "maintainer_can_modify": True})
                action = "created"
            except _HTTPStatus as exc:
                pr = self._find(slug, owner, request) if exc.status == 422 else None
                if pr is None:
                    raise PublishError(str(exc)) from None
        if action == "updated":
            pr = self._call("PATCH", f"/repos/{slug}/pulls/{pr['number']}", {"title": request.title, "body": request.body})
        if request.labels:
            self._call("POST", f"/repos/{slug}/issues/{pr['number']}/labels", {"labels": list(request.labels)})
        return PublishOutcome("github", commit, pushed, int(pr["number"]), pr.get("html_url"), action)

    def _find(self, slug: str, owner: str, request: PublishRequest) -> dict | None:
        query = urllib.parse.urlencode({"state": "open", "head": f"{owner}:{request.branch}", "base": request.base})
        found = self._call("GET", f"/repos/{slug}/pulls?{query}")
        return found[0] if isinstance(found, list) and found else None

    def _call(self, method: str, path: str, payload: dict | None = None) -> Any:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(self.api_url + path, data=data, method=method, headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "trace2skill",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise _HTTPStatus(exc.code, f"GitHub API {method} {path.split('?')[0]} failed with {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise PublishError(f"cannot reach the GitHub API at {self.api_url!r}: {exc}") from None
        return json.loads(text) if text else None


class _HTTPStatus(PublishError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def make_publisher(mode: PublishMode, *, gh: str = "gh", token: str | None = None, api_url: str = "https://api.github.com",
                   repository: str | None = None) -> Publisher:
    """The publisher called `mode`.

    Raises:
        PublishError: unknown mode, or `github` without a token.
    """
    if mode == "none":
        return NonePublisher()
    if mode == "branch":
        return BranchPublisher()
    if mode == "gh":
        return GhPublisher(gh, repository)
    if mode == "github":
        return GitHubPublisher(token or "", api_url=api_url, repository=repository)
    raise PublishError(f"unknown publish mode {mode!r}; choose none, branch, gh or github")


def github_slug(url: str) -> str:
    """`OWNER/NAME` from a GitHub remote URL (https, ssh or scp-like).

    Raises:
        PublishError: the URL does not name a GitHub-style repository.
    """
    match = re.search(r"[:/]([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$", url.strip())
    if not match:
        raise PublishError(f"cannot read OWNER/NAME from remote URL {url!r}; set the repository explicitly")
    return f"{match.group(1)}/{match.group(2)}"


def _remote_url(repo_path: Path, remote: str) -> str:
    repo = open_repo(repo_path)
    if remote not in [r.name for r in repo.remotes]:
        raise PublishError(f"no git remote named {remote!r}; the pull request needs a pushed branch")
    return repo.remotes[remote].url


def _push(request: PublishRequest, commit: SkillCommit, *, required: bool) -> bool:
    """Push the bot branch and the commit's tag; False when there is no remote and none is required."""
    if not has_remote(request.repo_path, request.remote):
        if required:
            raise PublishError(f"no git remote named {request.remote!r}; a pull request needs the bot branch pushed")
        return False
    push_branch(request.repo_path, request.remote, request.branch, (commit.tag,))
    return True
