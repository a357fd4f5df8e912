"""Publishing skills through git: the bot branch, commits, tags, pull requests, history.

A package rather than one module because it holds interchangeable publishers and because
the human-wins three-way merge, the pull-request body and the version history are each a
concept of their own:

- `gitops`: clean-tree check, bot branch preparation (merging human edits in), commits with
  trailers, tags, pushes, review-removal detection.
- `merge`: `merge3` on SKILL.md's section tree, plus text and JSON merges (pure).
- `body`: `PRContent` and the rendered title, labels, body and commit message.
- `publishers`: `none`, `branch`, `gh`, `github`, chosen with `make_publisher`.
- `history`: versions from tags; rollback as a new commit.
"""

from .body import (
    PRContent,
    ReviewItem,
    RuleChange,
    SkillChange,
    describe_change,
    pr_labels,
    render_commit_message,
    render_pr_body,
    render_pr_title,
    review_items,
)
from .gitops import (
    BOT_ACTOR,
    TRAILER_KEYS,
    BotBranch,
    RemovedRule,
    SkillCommit,
    bot_branch_name,
    bot_commit_of_run,
    bot_trailers,
    default_branch,
    commit_skill,
    detect_review_removals,
    ensure_clean,
    has_remote,
    open_repo,
    prepare_branch,
    push_branch,
    read_blob,
    return_to,
)
from .history import RollbackResult, VersionInfo, history, rollback
from .merge import Clash, merge3
from .publishers import (
    BranchPublisher,
    GhPublisher,
    GitHubPublisher,
    NonePublisher,
    Publisher,
    PublishMode,
    PublishOutcome,
    PublishRequest,
    github_slug,
    make_publisher,
)
from ..skillfmt.markers import LOCK_MARKER, RULE_MARKER

__all__ = [
    "BOT_ACTOR", "LOCK_MARKER", "RULE_MARKER", "TRAILER_KEYS",
    "BotBranch", "BranchPublisher", "Clash", "GhPublisher", "GitHubPublisher", "NonePublisher",
    "PRContent", "PublishMode", "PublishOutcome", "PublishRequest", "Publisher", "RemovedRule",
    "ReviewItem", "RollbackResult", "RuleChange", "SkillChange", "SkillCommit", "VersionInfo",
    "bot_branch_name", "bot_commit_of_run", "bot_trailers", "default_branch", "commit_skill", "describe_change", "detect_review_removals",
    "ensure_clean", "github_slug", "has_remote", "history", "make_publisher", "merge3", "open_repo",
    "pr_labels", "prepare_branch", "push_branch", "read_blob", "render_commit_message",
    "render_pr_body", "render_pr_title", "return_to", "review_items", "rollback",
]
