"""Publishing through git (`trace2skill.publish`), on real temporary repositories.

Every test works on a real repository made with `git.Repo.init`, with a bare repository on
disk as the "remote". The `gh` publisher drives a small real executable that records its
arguments; the `github` publisher talks to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest

from trace2skill.errors import PublishError
from trace2skill.publish import (
    BOT_ACTOR,
    PRContent,
    PublishRequest,
    ReviewItem,
    RuleChange,
    SkillChange,
    bot_trailers,
    commit_skill,
    describe_change,
    detect_review_removals,
    ensure_clean,
    history,
    make_publisher,
    pr_labels,
    prepare_branch,
    push_branch,
    render_pr_body,
    render_pr_title,
    return_to,
    rollback,
)
from trace2skill.skillfmt.frontmatter import read_version, set_version
from trace2skill.skillfmt.markers import rule_lines

HUMAN = git.Actor("Ada Human", "ada@example.com")
SKILL = "skills/demo"
BRANCH = "trace2skill/demo"
RULES = {"a": "Run the tests before committing.", "b": "Pin the interpreter version.", "c": "Never edit generated files."}


def skill_md(version: str, rules: dict[str, str], intro: str = "Lessons from agent runs.") -> str:
    bullets = "".join(f"- **Rule {rid.upper()}**: {text} <!-- rule:r-{rid} -->\n" for rid, text in rules.items())
    return (f'---\nname: demo\ndescription: Demo lessons.\nmetadata:\n  trace2skill-version: "{version}"\n---\n'
            f"# Demo\n\n{intro}\n\n## Gotchas\n\n{bullets}")


def write_skill(root: Path, version: str, rules: dict[str, str], intro: str = "Lessons from agent runs.") -> None:
    folder = root / SKILL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SKILL.md").write_text(skill_md(version, rules, intro))
    provenance = {f"r-{rid}": {"title": f"Rule {rid.upper()}", "trace_ids": [f"t{i}" for i in range(3)],
                               "failing_support": 2, "succeeding_support": 1,
                               "evidence": [{"trace_id": "t0", "quote": f"quote for {rid}"}]} for rid in rules}
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    changelog = folder / "CHANGELOG.md"
    previous = changelog.read_text().split("\n", 2)[2] if changelog.exists() else ""
    changelog.write_text(f"# Changelog\n\n## {version}\n\n- rules: {', '.join(sorted(rules))}\n\n{previous}")


def human_commit(repo: git.Repo, message: str) -> git.Commit:
    repo.git.add("-A", "--", ".")
    return repo.index.commit(message, author=HUMAN, committer=HUMAN)


def trailers(run: str = "run-1") -> dict[str, str]:
    return bot_trailers(run_id=run, trajectories=3, model="scripted", input_tokens=120, output_tokens=45, cost=0.0123)


@dataclass
class Repos:
    work: Path
    repo: git.Repo
    remote: Path


@pytest.fixture
def repos(tmp_path) -> Repos:
    """A work repository whose `main` holds skill v1.0.0, cloned from a bare remote."""
    remote = tmp_path / "origin.git"
    git.Repo.init(remote, bare=True, initial_branch="main")
    work = tmp_path / "work"
    repo = git.Repo.init(work, initial_branch="main")
    repo.create_remote("origin", str(remote))
    (work / ".gitignore").write_text(".trace2skill/\n")
    write_skill(work, "1.0.0", RULES)
    human_commit(repo, "Add the demo skill")
    repo.git.push("origin", "main")
    return Repos(work, repo, remote)


def bot_version(r: Repos, version: str, rules: dict[str, str], run: str = "run-1", **kwargs):
    """Prepare the bot branch, write a version, commit it; returns (branch, commit)."""
    branch = prepare_branch(r.work, "demo", SKILL, **kwargs)
    write_skill(r.work, version, rules)
    return branch, commit_skill(r.work, SKILL, f"chore(skills): refresh demo to v{version}", trailers(run), branch=BRANCH)


def test_bot_commit_has_trailers_tag_and_only_the_skill(repos):
    branch, commit = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    assert (branch.name, branch.status, branch.original) == (BRANCH, "created", "main")
    head = repos.repo.head.commit
    assert commit.sha == head.hexsha and repos.repo.active_branch.name == BRANCH
    assert head.trailers_dict == {
        "Trace2Skill-Run": ["run-1"], "Trace2Skill-Trajectories": ["3"], "Trace2Skill-Model": ["scripted"],
        "Trace2Skill-Tokens": ["120 in, 45 out"], "Trace2Skill-Cost": ["$0.0123"],
    }
    assert head.author.email == BOT_ACTOR.email and head.committer.name == BOT_ACTOR.name
    assert repos.repo.tags["demo/v1.1.0"].commit == head and commit.tag == "demo/v1.1.0"
    assert sorted(repos.repo.git.diff("--name-only", "HEAD~1", "HEAD").splitlines()) == [
        f"{SKILL}/CHANGELOG.md", f"{SKILL}/SKILL.md", f"{SKILL}/provenance.json"]
    assert repos.repo.heads.main.commit.message == "Add the demo skill"


def test_unchanged_skill_makes_no_commit(repos):
    _, first = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    again = commit_skill(repos.work, SKILL, "chore(skills): again", trailers("run-2"), branch=BRANCH)
    assert again is None
    assert repos.repo.head.commit.hexsha == first.sha
    assert [t.name for t in repos.repo.tags] == ["demo/v1.1.0"]


def test_commit_refuses_a_reused_version_and_the_wrong_branch(repos):
    bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    (repos.work / SKILL / "SKILL.md").write_text(skill_md("1.1.0", {"a": "changed"}))
    with pytest.raises(PublishError, match="already exists"):
        commit_skill(repos.work, SKILL, "msg", trailers(), branch=BRANCH)
    assert not repos.repo.git.diff("--cached", "--name-only")
    with pytest.raises(PublishError, match="expected branch"):
        commit_skill(repos.work, SKILL, "msg", trailers(), branch="trace2skill/other")


def deepen(root: Path, version: str, new_rules: dict[str, str]) -> None:
    """What a refresh does to the checked-out skill: keep its text, add rules, bump the version."""
    path = root / SKILL / "SKILL.md"
    text = set_version(path.read_text(), version)
    path.write_text(text + "".join(f"- **Rule {rid.upper()}**: {t} <!-- rule:r-{rid} -->\n" for rid, t in new_rules.items()))


def test_commit_hooks_run_unless_skipped(repos):
    hook = repos.work / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'skill lint failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    prepare_branch(repos.work, "demo", SKILL)
    write_skill(repos.work, "1.1.0", {**RULES, "d": "Read the error message first."})
    with pytest.raises(PublishError, match="commit hook rejected"):
        commit_skill(repos.work, SKILL, "m", trailers(), branch=BRANCH)
    assert repos.repo.head.commit == repos.repo.heads.main.commit and "demo/v1.1.0" not in repos.repo.tags
    assert commit_skill(repos.work, SKILL, "m", trailers(), branch=BRANCH, run_hooks=False) is not None


def test_hand_edit_on_main_survives_the_next_refresh(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    return_to(repos.work, first_branch)
    write_skill(repos.work, "1.0.0", {**RULES, "a": "Run the full test suite before committing."}, intro="Written by people.")
    human_commit(repos.repo, "Clarify rule A")
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert branch.status == "merged" and branch.clashes == ()
    deepen(repos.work, "1.2.0", {"e": "Check disk space."})
    commit = commit_skill(repos.work, SKILL, "chore(skills): refresh demo to v1.2.0", trailers("run-2"), branch=BRANCH)
    head = repos.repo.head.commit
    merge = head.parents[0]
    assert commit.sha == head.hexsha and merge.parents == (repos.repo.tags["demo/v1.1.0"].commit, repos.repo.heads.main.commit)
    final = (head.tree / f"{SKILL}/SKILL.md").data_stream.read().decode()
    assert "Run the full test suite before committing." in final and "Written by people." in final
    assert {"r-d", "r-e"} <= set(rule_lines(final)) and read_version(final) == "1.2.0"
    pr_diff = repos.repo.git.diff("main", BRANCH, "--", SKILL).splitlines()
    assert not [line for line in pr_diff if line.startswith("-") and "Written by people" in line + "full test suite"]
    assert "+- **Rule E**: Check disk space. <!-- rule:r-e -->" in pr_diff


def test_merged_text_is_what_the_refresh_reads(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    return_to(repos.work, first_branch)
    write_skill(repos.work, "1.0.0", {**RULES, "a": "Run the full test suite before committing."})
    human_commit(repos.repo, "Clarify rule A")
    prepare_branch(repos.work, "demo", SKILL)
    rules = rule_lines((repos.work / SKILL / "SKILL.md").read_text())
    assert "full test suite" in rules["r-a"] and "r-d" in rules
    assert repos.repo.is_dirty(untracked_files=True) is False


def test_clash_keeps_human_text_and_becomes_a_review_item(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "b": "Pin the interpreter and the OS."})
    return_to(repos.work, first_branch)
    write_skill(repos.work, "1.0.0", {**RULES, "b": "Pin the interpreter version in CI only."})
    human_commit(repos.repo, "Reword rule B")
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert branch.status == "merged"
    rule_clashes = [c for c in branch.clashes if c.kind == "rule"]
    assert [c.rule_id for c in rule_clashes] == ["r-b"]
    assert "in CI only" in rule_lines((repos.work / SKILL / "SKILL.md").read_text())["r-b"]
    item = ReviewItem.from_clash("demo", rule_clashes[0])
    body = render_pr_body(PRContent((SkillChange("demo", "1.2.0", "1.0.0", 3),), "run-2", "scripted", review=(item,)))
    assert "- [ ] **demo** (clash): rule `r-b` in ## Gotchas: changed on both sides" in body
    assert "Pin the interpreter and the OS." in body


def test_file_deleted_by_people_stays_deleted_and_is_reported(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    return_to(repos.work, first_branch)
    repos.repo.git.rm("-q", "--", f"{SKILL}/CHANGELOG.md")
    human_commit(repos.repo, "We do not want a changelog")
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert [(c.kind, c.where) for c in branch.clashes] == [("file", f"{SKILL}/CHANGELOG.md")]
    assert not (repos.work / SKILL / "CHANGELOG.md").exists() and (repos.work / SKILL / "SKILL.md").exists()
    assert not repos.repo.is_dirty(untracked_files=True)


def test_rule_removed_in_review_is_detected(repos):
    bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    write_skill(repos.work, "1.1.0", {k: v for k, v in {**RULES, "d": "Read the error message first."}.items() if k != "c"})
    human_commit(repos.repo, "Review: drop rule C")
    removed = detect_review_removals(repos.work, SKILL, BRANCH, "main")
    assert [(r.rule_id, r.title, r.support, r.where) for r in removed] == [("r-c", "Rule C", 3, "branch")]
    return_to(repos.work, prepare_branch(repos.work, "demo", SKILL))
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert [r.rule_id for r in branch.removals] == ["r-c"]


def test_rule_deleted_on_main_while_the_pr_is_open_is_a_removal(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    return_to(repos.work, first_branch)
    write_skill(repos.work, "1.0.0", {"a": RULES["a"], "b": RULES["b"]})
    human_commit(repos.repo, "Rule C is wrong")
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert branch.status == "merged" and branch.clashes == ()
    assert [(r.rule_id, r.where) for r in branch.removals] == [("r-c", "base")]
    assert set(rule_lines((repos.work / SKILL / "SKILL.md").read_text())) == {"r-a", "r-b", "r-d"}


def test_rule_removed_while_squash_merging_is_detected_and_branch_reset(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    return_to(repos.work, first_branch)
    write_skill(repos.work, "1.1.0", {"a": RULES["a"], "b": RULES["b"], "d": "Read the error message first."})
    human_commit(repos.repo, "Squash-merge the skill PR without rule C")
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert branch.status == "reset"
    assert [(r.rule_id, r.where) for r in branch.removals] == [("r-c", "base")]
    assert repos.repo.head.commit == repos.repo.heads.main.commit


def test_branch_merged_with_a_merge_commit_is_fast_forwarded(repos):
    first_branch, _ = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    return_to(repos.work, first_branch)
    repos.repo.git.merge("--no-ff", "-m", "Merge PR", BRANCH, env={"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x",
                                                                    "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@x"})
    branch = prepare_branch(repos.work, "demo", SKILL)
    assert branch.status == "reset" and branch.removals == ()
    assert repos.repo.head.commit == repos.repo.heads.main.commit


def test_reviewer_commits_on_the_remote_branch_are_kept(repos, tmp_path):
    _, commit = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    push_branch(repos.work, "origin", BRANCH, (commit.tag,))
    reviewer = git.Repo.clone_from(str(repos.remote), tmp_path / "reviewer", branch=BRANCH)
    write_skill(Path(reviewer.working_tree_dir), "1.1.0", {**RULES, "d": "Read the whole error message first."})
    human_commit(reviewer, "Review: reword rule D")
    reviewer.git.push("origin", BRANCH)
    repos.repo.git.checkout("main")
    repos.repo.heads[BRANCH].delete(repos.repo, BRANCH, force=True)
    branch = prepare_branch(repos.work, "demo", SKILL, remote="origin")
    assert (branch.status, branch.base) == ("current", "origin/main")
    assert "whole error message" in (repos.work / SKILL / "SKILL.md").read_text()


def test_return_to_never_carries_uncommitted_changes_across(repos):
    branch = prepare_branch(repos.work, "demo", SKILL)
    write_skill(repos.work, "1.1.0", {**RULES, "d": "half-written by a failed run"})
    (repos.work / SKILL / "references").mkdir()
    (repos.work / SKILL / "references" / "new.md").write_text("draft")
    assert return_to(repos.work, branch) is False and repos.repo.active_branch.name == BRANCH
    assert return_to(repos.work, branch, discard=SKILL) is True and repos.repo.active_branch.name == "main"
    assert not repos.repo.is_dirty(untracked_files=True) and "half-written" not in (repos.work / SKILL / "SKILL.md").read_text()


def test_push_force_pushes_only_the_bot_branch(repos):
    _, commit = bot_version(repos, "1.1.0", {**RULES, "d": "Read the error message first."})
    push_branch(repos.work, "origin", BRANCH, (commit.tag,))
    bare = git.Repo(repos.remote)
    assert bare.heads[BRANCH].commit.hexsha == commit.sha and "demo/v1.1.0" in [t.name for t in bare.tags]
    repos.repo.git.commit("--amend", "-m", "rewritten", env={"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"})
    push_branch(repos.work, "origin", BRANCH)
    assert bare.heads[BRANCH].commit.message.startswith("rewritten")
    with pytest.raises(PublishError, match="only trace2skill/"):
        push_branch(repos.work, "origin", "main")
    with pytest.raises(PublishError, match="no git remote"):
        push_branch(repos.work, "upstream", BRANCH)


def test_dirty_tree_is_refused_but_the_state_folder_is_tolerated(repos):
    state_dir = repos.work / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text("{}")
    ensure_clean(repos.work, ignore=state_dir)
    (repos.work / "notes.txt").write_text("draft")
    with pytest.raises(PublishError, match="notes.txt"):
        prepare_branch(repos.work, "demo", SKILL, state_dir=state_dir)
    assert repos.repo.active_branch.name == "main"


def test_trace_text_is_never_read_as_a_git_option(repos):
    prepare_branch(repos.work, "demo", SKILL)
    write_skill(repos.work, "1.1.0", {**RULES, "d": "--exec=rm -rf / --amend"})
    hostile = {**trailers(), "Trace2Skill-Model": "--upload-pack=touch pwned"}
    commit = commit_skill(repos.work, SKILL, "--amend --help", hostile, branch=BRANCH)
    head = repos.repo.head.commit
    assert commit.sha == head.hexsha and head.message.startswith("--amend --help\n")
    assert head.trailers_dict["Trace2Skill-Model"] == ["--upload-pack=touch pwned"]
    assert not (repos.work / "pwned").exists()
    with pytest.raises(PublishError, match="invalid skill folder"):
        commit_skill(repos.work, "--all", "m", trailers())
    with pytest.raises(PublishError, match="invalid commit trailer"):
        commit_skill(repos.work, SKILL, "m", {"Trace2Skill-Run": "x\nSigned-off-by: mallory"})


# -- publishers ------------------------------------------------------------------------------

FAKE_GH = """#!{python}
import json, sys
from pathlib import Path
log, db = Path({log!r}), Path({db!r})
prs = json.loads(db.read_text()) if db.exists() else []
args = sys.argv[1:]
entry = {{"argv": args}}
for arg in args:
    if arg.startswith("--body-file="):
        entry["body"] = Path(arg.split("=", 1)[1]).read_text()
with log.open("a") as stream:
    stream.write(json.dumps(entry) + "\\n")
if args[:2] == ["pr", "list"]:
    print(json.dumps([{{"number": p["number"], "url": p["url"]}} for p in prs]))
elif args[:2] == ["pr", "create"]:
    number = len(prs) + 1
    prs.append({{"number": number, "url": f"https://github.com/acme/skills/pull/{{number}}"}})
    db.write_text(json.dumps(prs))
    print(prs[-1]["url"])
"""


def _request(r: Repos, version: str, *, title: str = "", body: str = "body") -> PublishRequest:
    return PublishRequest(r.work, SKILL, BRANCH, "main", f"chore(skills): v{version}", trailers(), title or f"refresh to v{version}", body)


def test_gh_publisher_creates_once_then_edits(repos, tmp_path):
    log, db = tmp_path / "gh-log.jsonl", tmp_path / "gh-prs.json"
    gh = tmp_path / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable, log=str(log), db=str(db)))
    gh.chmod(0o755)
    publisher = make_publisher("gh", gh=str(gh))
    prepare_branch(repos.work, "demo", SKILL, remote="origin")
    write_skill(repos.work, "1.1.0", {**RULES, "d": "Read the error message first."})
    first = publisher.publish(_request(repos, "1.1.0", body="first body"))
    write_skill(repos.work, "1.2.0", {**RULES, "d": "Read the error message first.", "e": "Check disk space."})
    second = publisher.publish(_request(repos, "1.2.0", body="second body"))
    third = publisher.publish(_request(repos, "1.2.0", body="unchanged"))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    verbs = [" ".join(c["argv"][:2]) for c in calls]
    assert verbs.count("pr create") == 1 and verbs.count("pr edit") == 1
    create = next(c for c in calls if c["argv"][:2] == ["pr", "create"])
    assert {"--base=main", f"--head={BRANCH}", "--title=refresh to v1.1.0", "--label=skills", "--label=automated"} <= set(create["argv"])
    assert create["body"] == "first body"
    edit = next(c for c in calls if c["argv"][:2] == ["pr", "edit"])
    assert edit["argv"][2] == "1" and edit["body"] == "second body"
    assert (first.pr_action, first.pr_number, second.pr_action, second.pr_number) == ("created", 1, "updated", 1)
    assert third.commit is None and third.pr_action is None and len(calls) == len(log.read_text().splitlines())
    assert git.Repo(repos.remote).heads[BRANCH].commit.hexsha == second.commit.sha


class _FakeGitHub(BaseHTTPRequestHandler):
    requests: list[dict] = []
    pulls: list[dict] = []

    def _reply(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append({"method": self.command, "path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        return body

    def do_GET(self):
        self._record()
        self._reply(200, [p for p in self.pulls if p["state"] == "open"])

    def do_POST(self):
        body = self._record()
        if self.path.endswith("/pulls"):
            number = len(self.pulls) + 7
            self.pulls.append({"number": number, "state": "open", "html_url": f"https://github.test/acme/skills/pull/{number}", **body})
            self._reply(201, self.pulls[-1])
        else:
            self._reply(200, [{"name": name} for name in body["labels"]])

    def do_PATCH(self):
        body = self._record()
        self.pulls[0].update(body)
        self._reply(200, self.pulls[0])

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_github():
    _FakeGitHub.requests, _FakeGitHub.pulls = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeGitHub
    server.shutdown()
    server.server_close()


def test_github_publisher_creates_then_updates(repos, fake_github):
    url, handler = fake_github
    publisher = make_publisher("github", token="tok-123", api_url=url, repository="acme/skills")
    prepare_branch(repos.work, "demo", SKILL)
    write_skill(repos.work, "1.1.0", {**RULES, "d": "Read the error message first."})
    first = publisher.publish(_request(repos, "1.1.0", body="first body"))
    write_skill(repos.work, "1.2.0", {**RULES, "d": "Read the error message first.", "e": "Check disk space."})
    second = publisher.publish(_request(repos, "1.2.0", body="second body"))
    calls = [(r["method"], r["path"].split("?")[0]) for r in handler.requests]
    assert calls == [
        ("GET", "/repos/acme/skills/pulls"), ("POST", "/repos/acme/skills/pulls"), ("POST", "/repos/acme/skills/issues/7/labels"),
        ("GET", "/repos/acme/skills/pulls"), ("PATCH", "/repos/acme/skills/pulls/7"), ("POST", "/repos/acme/skills/issues/7/labels"),
    ]
    assert "head=acme%3Atrace2skill%2Fdemo" in handler.requests[0]["path"]
    assert handler.requests[1]["body"] == {"title": "refresh to v1.1.0", "head": BRANCH, "base": "main", "body": "first body",
                                           "maintainer_can_modify": True}
    assert handler.requests[4]["body"] == {"title": "refresh to v1.2.0", "body": "second body"}
    assert handler.requests[2]["body"] == {"labels": ["skills", "automated"]}
    assert all(r["auth"] == "Bearer tok-123" for r in handler.requests)
    assert (first.pr_action, second.pr_action, second.pr_number, len(handler.pulls)) == ("created", "updated", 7, 1)
    assert second.pr_url == "https://github.test/acme/skills/pull/7"


def test_github_publisher_needs_a_token():
    with pytest.raises(PublishError, match="GITHUB_TOKEN"):
        make_publisher("github", token=None)


def test_branch_publisher_without_remote_commits_only(repos):
    repos.repo.delete_remote(repos.repo.remotes.origin)
    prepare_branch(repos.work, "demo", SKILL)
    write_skill(repos.work, "1.1.0", {**RULES, "d": "Read the error message first."})
    outcome = make_publisher("branch").publish(_request(repos, "1.1.0"))
    assert outcome.commit is not None and outcome.pushed is False and outcome.pr_action is None
    with pytest.raises(PublishError, match="no git remote"):
        make_publisher("gh", gh="/nonexistent/gh").publish(_request(repos, "1.1.0"))


# -- PR body ---------------------------------------------------------------------------------


def _content(**overrides) -> PRContent:
    rule = RuleChange("r-d", "Read | the </details> error", "added", ("t1", "t2"), ("@octocat said <script>x</script>",), 1, 1)
    fields = dict(skills=(SkillChange("demo", "1.1.0", "1.0.0", 2, (rule,), SKILL),), run_id="run-9", model="openai/gpt-4.1-mini",
                  trajectories_read=40, input_tokens=1000, output_tokens=200, cost=0.5, window_start="2025-01-01T00:00:00Z")
    return PRContent(**{**fields, **overrides})


def test_pr_title_and_labels():
    assert render_pr_title(_content()) == "chore(skills): refresh demo to v1.1.0 from 2 trajectories"
    two = _content(skills=(SkillChange("a", "1.0.0", trajectories=1), SkillChange("b", "2.0.0", trajectories=0)))
    assert render_pr_title(two) == "chore(skills): refresh 2 skills from 1 trajectory"
    assert pr_labels(_content()) == ("skills", "automated")
    assert pr_labels(_content(review=(ReviewItem("demo", "x"),))) == ("skills", "automated", "needs-review")


def test_pr_body_has_table_evidence_metadata_and_footer_with_trace_text_defused():
    body = render_pr_body(_content())
    assert "| `demo` | 1.0.0 → 1.1.0 | 1 | 0 | 0 | 2 |" in body
    assert "Read \\| the &lt;/details&gt; error" in body and "</details>" in body
    assert "@\u200boctocat said &lt;script&gt;" in body and "<script>" not in body
    assert "Trajectories: `t1`, `t2`" in body
    assert "| Model | `openai/gpt-4.1-mini` |" in body and "| Cost | $0.5000 |" in body and "2025-01-01T00:00:00Z → now" in body
    assert "Nothing needs review" in body and "<!-- trace2skill:locked -->" in body
    assert body.count("<details>") == body.count("</details>")


def test_pr_body_drops_evidence_rather_than_exceed_github_limit():
    many = tuple(RuleChange(f"r-{i:04d}", "t" * 100, "added", tuple(f"trace-{j}" for j in range(12)), ("q" * 240,) * 3) for i in range(300))
    body = render_pr_body(_content(skills=(SkillChange("demo", "2.0.0", "1.0.0", 12, many),)))
    assert len(body) <= 60_000 and "| `demo` |" in body and "omitted" in body


def test_describe_change_compares_base_and_new_skill():
    before = skill_md("1.0.0", RULES)
    after = skill_md("1.1.0", {"a": "Run every test before committing.", "b": RULES["b"], "d": "New rule."})
    provenance = json.dumps({"r-d": {"title": "Rule D", "trace_ids": ["t7", "t8"], "failing_support": 2,
                                     "evidence": [{"trace_id": "t7", "quote": "it broke"}]}})
    change = describe_change("demo", before, after, provenance, SKILL)
    assert (change.version_from, change.version_to, change.trajectories) == ("1.0.0", "1.1.0", 2)
    assert {(r.rule_id, r.change) for r in change.rules} == {("r-a", "changed"), ("r-d", "added"), ("r-c", "removed")}
    added = next(r for r in change.rules if r.rule_id == "r-d")
    assert added.quotes == ("it broke",) and added.failing_support == 2


# -- history and rollback ----------------------------------------------------------------------


def test_history_and_rollback(repos):
    rules_11 = {**RULES, "d": "Read the error message first."}
    rules_20 = {k: v for k, v in rules_11.items() if k != "b"}
    branch, _ = bot_version(repos, "1.1.0", rules_11, run="run-11")
    write_skill(repos.work, "2.0.0", rules_20)
    commit_skill(repos.work, SKILL, "chore(skills): v2", trailers("run-20"), branch=BRANCH)
    versions = history(repos.work / SKILL)
    assert [(v.version, v.run_id, v.rules, v.rules_added, v.rules_removed) for v in versions] == [
        ("1.1.0", "run-11", 4, 4, 0), ("2.0.0", "run-20", 3, 0, 1)]
    assert versions[0].trajectories == 3 and versions[0].model == "scripted"
    old_head = repos.repo.head.commit
    result = rollback(repos.work, SKILL, "1.1.0")
    assert (result.restored, result.version, result.tag) == ("1.1.0", "2.1.0", "demo/v2.1.0")
    head = repos.repo.head.commit
    assert head.parents == (old_head,) and head.hexsha == result.sha
    restored = (repos.work / SKILL / "SKILL.md").read_text()
    assert restored == skill_md("1.1.0", rules_11).replace('"1.1.0"', '"2.1.0"')
    changelog = (repos.work / SKILL / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n\n## 2.1.0") and "version 1.1.0" in changelog and "## 2.0.0" in changelog
    latest = history(repos.work / SKILL)[-1]
    assert (latest.version, latest.rollback_of, latest.rules_added, latest.rules_changed) == ("2.1.0", "1.1.0", 1, 0)
    with pytest.raises(PublishError, match="tagged versions: 1.1.0, 2.0.0, 2.1.0"):
        rollback(repos.work, SKILL, "0.9.0")
    assert rollback(repos.work, SKILL, "2.0.0").version == "3.0.0"  # removes rule B again: major
    assert set(rule_lines((repos.work / SKILL / "SKILL.md").read_text())) == {"r-a", "r-c", "r-d"}
    assert not repos.repo.is_dirty(untracked_files=True) and repos.repo.active_branch.name == branch.name
