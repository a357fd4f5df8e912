"""Publishing is a transaction: real repositories with a bare remote, a real `gh` executable
stand-in, real processes killed with SIGKILL at each step of a refresh."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.errors import PublishError
from trace2skill.refresh import _GitTarget, refresh
from trace2skill.state import load_state

from conftest import ROOT
from test_refresh import ALL_IDS, SKILL, add_traces, bot_branch, commit_on_main, config_for, land, skill_text, world  # noqa: F401

FAKE_GH = """#!{python}
import json, sys
from pathlib import Path
log, db, broken = Path({log!r}), Path({db!r}), Path({broken!r})
args = sys.argv[1:]
with log.open("a") as stream:
    stream.write(json.dumps(args) + "\\n")
if broken.exists() and " ".join(args[:2]) in broken.read_text().split(","):
    print("HTTP 502: bad gateway", file=sys.stderr)
    sys.exit(1)
prs = json.loads(db.read_text()) if db.exists() else []
if args[:2] == ["pr", "list"]:
    print(json.dumps(prs))
elif args[:2] == ["pr", "create"]:
    prs.append({{"number": len(prs) + 1, "url": f"https://github.com/acme/skills/pull/{{len(prs) + 1}}"}})
    db.write_text(json.dumps(prs))
    print(prs[-1]["url"])
"""


@pytest.fixture
def gh(tmp_path):
    """A `gh` stand-in that logs its calls; writing `broken` makes the listed verbs fail."""
    paths = {name: tmp_path / f"gh-{name}" for name in ("log", "db", "broken")}
    exe = tmp_path / "bin" / "gh"
    exe.parent.mkdir()
    exe.write_text(FAKE_GH.format(python=sys.executable, **{k: str(v) for k, v in paths.items()}))
    exe.chmod(0o755)
    paths["exe"] = exe
    return paths


def calls(gh) -> list[list[str]]:
    return [json.loads(line) for line in gh["log"].read_text().splitlines()] if gh["log"].exists() else []


def remote_heads(world) -> dict[str, str]:
    return {h.name: h.commit.hexsha for h in git.Repo(world["remote"]).heads}


def test_publish_gh_without_gh_pushes_nothing_and_uses_no_trace(world, tmp_path):
    add_traces(world, ALL_IDS[:4])
    before = remote_heads(world)
    with pytest.raises(PublishError, match="not installed"):
        refresh(config_for(world, **{"publish.mode": "gh", "publish.gh": str(tmp_path / "no-such-gh")}), None, [world["traces"]])
    assert remote_heads(world) == before and not list(world["repo"].tags)
    assert f"trace2skill/{SKILL}" not in world["repo"].heads and world["repo"].active_branch.name == "main"
    assert load_state(world["state"]).skill(SKILL).trace_digests == {}


def test_gh_logged_out_is_refused_before_any_commit(world, gh):
    add_traces(world, ALL_IDS[:4])
    gh["broken"].write_text("auth status")
    with pytest.raises(PublishError, match="gh auth login"):
        refresh(config_for(world, **{"publish.mode": "gh", "publish.gh": str(gh["exe"])}), None, [world["traces"]])
    assert not list(world["repo"].tags) and [c[:2] for c in calls(gh)] == [["auth", "status"]]


def test_failed_pull_request_stays_pending_and_the_next_run_finishes_it(world, gh):
    add_traces(world, ALL_IDS[:6])
    config = config_for(world, **{"publish.mode": "gh", "publish.gh": str(gh["exe"])})
    gh["broken"].write_text("pr create")
    with pytest.raises(PublishError, match="bad gateway"):
        refresh(config, None, [world["traces"]])
    state = load_state(world["state"]).skill(SKILL)
    assert state.trace_digests == {} and state.pending is not None, "not used until published"
    assert world["repo"].active_branch.name == "main"

    gh["broken"].unlink()
    outcome = refresh(config, None, [world["traces"]])
    assert "no changes" in outcome.message
    state = load_state(world["state"]).skill(SKILL)
    assert len(state.trace_digests) == 6 and state.pending is None
    creates = [c for c in calls(gh) if c[:2] == ["pr", "create"]]
    assert len(creates) == 2 and "--base=main" in creates[-1], "the second attempt opened the pull request"
    assert remote_heads(world)[f"trace2skill/{SKILL}"] == bot_branch(world).commit.hexsha


def test_rejected_push_is_retried_by_the_next_run(world):
    add_traces(world, ALL_IDS[:6])
    hook = world["remote"] / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho rejected by policy >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(PublishError, match="rejected by policy"):
        refresh(config_for(world), None, [world["traces"]])
    assert load_state(world["state"]).skill(SKILL).trace_digests == {}
    hook.unlink()
    refresh(config_for(world), None, [world["traces"]])
    assert remote_heads(world)[f"trace2skill/{SKILL}"] == bot_branch(world).commit.hexsha
    assert len(load_state(world["state"]).skill(SKILL).trace_digests) == 6


def test_master_repository_works_and_prs_target_master(tmp_path, gh):
    remote = tmp_path / "remote.git"
    git.Repo.init(remote, bare=True, initial_branch="master")
    repo = git.Repo.init(tmp_path / "repo", initial_branch="master")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Human").set_value("user", "email", "human@example.com")
    (tmp_path / "repo" / "README.md").write_text("skills\n")
    repo.index.add(["README.md"])
    repo.index.commit("init")
    repo.create_remote("origin", str(remote)).push("master")
    world = {"repo": repo, "root": tmp_path / "repo", "traces": tmp_path / "traces", "state": tmp_path / "state", "remote": remote}
    (world["traces"] / "trajs").mkdir(parents=True)
    import shutil

    from test_refresh import CORPUS

    shutil.copy(CORPUS / "results_summary.json", world["traces"] / "results_summary.json")
    add_traces(world, ALL_IDS[:5])
    outcome = refresh(config_for(world, **{"publish.mode": "gh", "publish.gh": str(gh["exe"])}), None, [world["traces"]])
    assert outcome.changed and outcome.pr_url
    create = next(c for c in calls(gh) if c[:2] == ["pr", "create"])
    assert "--base=master" in create and repo.active_branch.name == "master"
    assert bot_branch(world).commit.parents[0] == repo.heads.master.commit


def test_refreshes_with_different_state_folders_lock_the_repository(world, tmp_path):
    add_traces(world, ALL_IDS[:3])
    with _GitTarget.open(config_for(world)).lock():
        run = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "refresh", str(world["traces"]), "--skill", SKILL, "--out",
             str(world["root"] / "skills"), "--publish", "branch", "--state-dir", str(tmp_path / "other-state")],
            capture_output=True, text=True, cwd=world["root"], env={**os.environ, "CI": "1"})
    assert run.returncode == 75 and "another refresh is running in the repository" in run.stderr, run.stderr
    assert f"trace2skill/{SKILL}" not in world["repo"].heads


@pytest.mark.parametrize("point", ["after-rename", "refresh-before-commit", "after-commit"])
def test_refresh_killed_at_each_step_is_completed_by_the_next_run(world, point):
    add_traces(world, ALL_IDS[:6])
    args = [sys.executable, str(ROOT / "cli.py"), "refresh", str(world["traces"]), "--skill", SKILL, "--out",
            str(world["root"] / "skills"), "--publish", "branch", "--state-dir", str(world["state"])]
    env = {**os.environ, "CI": "1"}
    killed = subprocess.run(args, capture_output=True, text=True, cwd=world["root"], env={**env, "T2S_TEST_CRASH_AT": point})
    assert killed.returncode == -9, killed.stderr
    assert load_state(world["state"]).skill(SKILL).trace_digests == {}

    again = subprocess.run(args, capture_output=True, text=True, cwd=world["root"], env=env)
    assert again.returncode == 0, again.stderr
    repo = world["repo"]
    assert repo.active_branch.name == "main" and not repo.is_dirty(untracked_files=True)
    assert not (world["root"] / "skills").exists() or not any((world["root"] / "skills").iterdir())
    state = load_state(world["state"]).skill(SKILL)
    assert len(state.trace_digests) == 6 and state.pending is None and state.checkout is None
    assert f"{SKILL}/v{state.version}" in [t.name for t in repo.tags]
    assert remote_heads(world)[f"trace2skill/{SKILL}"] == bot_branch(world).commit.hexsha, "pushed"
    assert bot_branch(world).commit.trailers_dict["Trace2Skill-Trajectories"] == ["6"]


def test_reworded_rule_survives_a_refresh_and_is_a_review_item(world):
    add_traces(world, ALL_IDS[:14])
    refresh(config_for(world), None, [world["traces"]])
    land(world)
    skill_md = world["root"] / "skills" / SKILL / "SKILL.md"
    line = next(l for l in skill_md.read_text().splitlines() if "<!-- rule:" in l)
    rid = re.search(r"rule:(r-[0-9a-f]+)", line).group(1)
    reworded = f"- **Keep the repro small.** Reworded by a reviewer. <!-- rule:{rid} -->"
    skill_md.write_text(skill_md.read_text().replace(line, reworded))
    commit_on_main(world, skill_md, "Reword a rule")

    add_traces(world, ALL_IDS[14:28])
    outcome = refresh(config_for(world), None, [world["traces"]])
    assert outcome.changed
    assert reworded in skill_text(world, f"trace2skill/{SKILL}").splitlines()
    assert any(rid in item and "reworded by hand" in item for item in outcome.review), outcome.review
    changelog = world["repo"].git.show(f"trace2skill/{SKILL}:skills/{SKILL}/CHANGELOG.md")
    assert f"`{rid}`): reworded by hand" in changelog


def test_rollback_goes_through_the_bot_branch_and_releases_later_evidence(world):
    add_traces(world, ALL_IDS[:8])
    refresh(config_for(world), None, [world["traces"]])
    add_traces(world, ALL_IDS[8:20])
    second = refresh(config_for(world), None, [world["traces"]])
    main_before = world["repo"].heads.main.commit
    result = CliRunner().invoke(app, ["rollback", str(world["root"] / "skills" / SKILL), "1.0.0", "--publish", "branch",
                                      "--state-dir", str(world["state"])])
    assert result.exit_code == 0, result.output
    repo = world["repo"]
    assert repo.heads.main.commit == main_before and repo.active_branch.name == "main", "main untouched"
    head = bot_branch(world).commit
    assert head.trailers_dict["Trace2Skill-Rollback"] == ["1.0.0"]
    assert remote_heads(world)[f"trace2skill/{SKILL}"] == head.hexsha
    state = load_state(world["state"]).skill(SKILL)
    assert len(state.trace_digests) == 8, "the 12 trajectories of the later version will be read again"
    assert set(state.trace_digests.values()) == {"1.0.0"} and state.version != second.result.version
    restored = skill_text(world, f"trace2skill/{SKILL}")
    removed = set(re.findall(r"rule:(r-[0-9a-f]+)", skill_text(world, f"{SKILL}/v{second.result.version}"))) - set(
        re.findall(r"rule:(r-[0-9a-f]+)", restored))
    assert removed <= set(state.rejected)
