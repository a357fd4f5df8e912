"""The Ray executor on a real local Ray (2 CPUs, started once for this module).

Skipped, with the reason, only where `import ray` fails (`pip install 'trace2skill[ray]'`).
Expected numbers come from the fake server's own request log or from plain counts of the
corpus, never from our counters.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from typer.testing import CliRunner

from conftest import DEMO_CORPUS, refresh_world

from fakeserver import FakeServer
from test_llm_path import answer, corpus, distill_args, is_analysis, local_model  # noqa: F401 - a fixture
from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.executor import LocalExecutor
from trace2skill.executor.ray import RayExecutor, ray_session
from trace2skill.stream import ShardJob, label_book, plan_shards

try:
    import ray  # noqa: F401

    NO_RAY = ""
except ImportError as exc:  # the only reason to skip: Ray cannot be imported here
    NO_RAY = f"Ray is not installed ({exc}); pip install 'trace2skill[ray]' to test the Ray executor"

runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes 6-20 s on this machine)."""
    if NO_RAY:
        pytest.skip(NO_RAY)
    with ray_session() as session:
        yield session


def test_asking_for_ray_where_it_is_not_installed_is_a_configuration_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as where it is not installed
    refused = runner.invoke(app, ["distill", str(DEMO_CORPUS), "--out", str(tmp_path / "out"), "--executor", "ray"])
    assert refused.exit_code == 78, refused.output
    assert "pip install 'trace2skill[ray]'" in refused.output
    assert not (tmp_path / "out").exists()


def test_the_ray_executor_returns_what_the_local_executor_returns_in_shard_order(local_ray):
    config = load_config(env={})
    shards, path_skips = plan_shards([DEMO_CORPUS], config)
    job = ShardJob(config=config, labels=label_book([DEMO_CORPUS], config), analysis="offline")
    expected = list(LocalExecutor().map(shards, job))
    executor = RayExecutor(workers=1)
    got = list(executor.map(shards, job))
    executor.close()
    assert local_ray.is_initialized(), "an executor leaves a Ray it did not start running"
    trajectories = sorted(p.name for p in (DEMO_CORPUS / "trajs").iterdir())
    assert len(shards) >= len(trajectories) and not path_skips
    assert [r.shard.order for r in got] == list(range(len(shards)))
    assert sorted(e.id for r in got for e in r.entries) == trajectories
    unpacked = [[p.unpack() for p in r.lessons] for r in got]
    assert unpacked == [[p.unpack() for p in r.lessons] for r in expected]
    assert [(r.shard, r.entries, r.skips, r.fidelity, r.redactions, r.failed) for r in got] == \
        [(r.shard, r.entries, r.skips, r.fidelity, r.redactions, r.failed) for r in expected]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_distill_on_ray_writes_byte_for_byte_the_skill_the_local_executor_writes(local_ray, demo_traces, tmp_path):
    runs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        result = runner.invoke(app, ["distill", str(demo_traces), "--out", str(out), "--skill", "demo", "--json",
                                     "--executor", executor, "--state-dir", str(tmp_path / f"state-{executor}")])
        assert result.exit_code == 0, result.output
        runs[executor] = (json.loads(result.stdout), _files(out / "demo"))
    trajectories = len(list((DEMO_CORPUS / "trajs").iterdir()))
    assert runs["ray"][0]["traces_read"] == runs["local"][0]["traces_read"] == trajectories
    assert runs["ray"][0]["rules_written"] == runs["local"][0]["rules_written"] > 0
    assert "SKILL.md" in runs["ray"][1]
    assert runs["ray"][1] == runs["local"][1], "every file of the skill folder is the same, byte for byte"


def test_the_call_cap_holds_across_ray_workers_through_the_cli_and_a_rerun_pays_only_for_the_rest(
        local_ray, demo_traces, tmp_path, local_model):
    traces = corpus(demo_traces, tmp_path / "c", 8)
    with FakeServer(reply=answer) as server:
        args = distill_args(traces, tmp_path / "ray", "--api-base", server.url, "--executor", "ray", "--workers", "2",
                            "--concurrency", "4", "--state-dir", str(tmp_path / "state"))
        capped = runner.invoke(app, [*args, "--max-calls", "5"])
        assert capped.exit_code == 75, capped.output
        assert "call cap reached" in capped.output
        first = list(server.completions())
        assert len(first) == 5, "the preflight and four analyses, over two workers: the cap is the run's"
        paid = sum(1 for r in first if is_analysis(r) and r.status == 200)
        assert paid == 4 and not (tmp_path / "ray" / "demo").exists()

        resumed = runner.invoke(app, args)
        assert resumed.exit_code == 0, resumed.output
        second = server.completions()[len(first):]
        again = [r for r in second if is_analysis(r)]
        assert len(again) == 8 - paid, "what the capped run paid for is journaled on the driver, not asked again"
        assert json.loads(resumed.stdout)["usage"]["calls"] == len(second), "the summary counts the workers' calls"
        run_id = json.loads(resumed.stdout)["run_id"]
        page = next((tmp_path / "state" / "reports").glob(f"*{run_id}*.html")).read_text()
        assert f"<td>analyse</td><td>{len(again)}</td>" in page, "the report's calls per stage count the workers' too"
        # the same server: its address is part of the run id the skill records
        local = runner.invoke(app, distill_args(traces, tmp_path / "local", "--api-base", server.url,
                                                "--state-dir", str(tmp_path / "state-local")))
        assert local.exit_code == 0, local.output
    assert _files(tmp_path / "ray" / "demo") == _files(tmp_path / "local" / "demo")



def test_the_rate_limit_is_one_window_for_all_ray_workers(local_ray):
    """`llm.rate_limit.requests = 3` (per 60 s) for the run: two workers asking for two requests
    each get three between them; with a limiter per worker they would get four."""
    from trace2skill.executor.ray import start_keeper

    def take(keeper, wanted: int, seconds: float) -> int:  # nested, so Ray ships it by value
        import asyncio

        from trace2skill.executor.ray import RemoteLimiter

        async def go() -> int:
            limiter, got = RemoteLimiter(keeper), 0
            for _ in range(wanted):
                try:
                    await asyncio.wait_for(limiter.acquire(10), seconds)
                except asyncio.TimeoutError:
                    break
                got += 1
            return got

        return asyncio.run(go())

    config = load_config(overrides={"llm.rate_limit.requests": 3}, env={})
    keeper = start_keeper(local_ray, config, None)
    local_ray.get(keeper.price.remote())  # the actor is up (its process starts on first use)
    worker = local_ray.remote(num_cpus=1)(take)
    got = local_ray.get([worker.remote(keeper, 2, 5.0), worker.remote(keeper, 2, 5.0)])
    assert sorted(got) == [1, 2]
    local_ray.kill(keeper)


def test_refresh_on_ray_commits_the_skill_a_local_refresh_commits(local_ray, tmp_path):
    from trace2skill.refresh import refresh

    skills = {}
    for executor in ("ray", "local"):
        world = refresh_world(tmp_path / executor)
        for instance in sorted(p.name for p in (DEMO_CORPUS / "trajs").iterdir())[:10]:
            shutil.copytree(DEMO_CORPUS / "trajs" / instance, world["traces"] / "trajs" / instance)
        config = load_config(overrides={"skill.name": "demo", "skill.out": world["root"] / "skills", "publish.mode": "branch",
                                        "state_dir": world["state"], "analyse.executor": executor, "analyse.workers": 2},
                             env={})
        outcome = refresh(config, None, [world["traces"]])
        assert outcome.changed and outcome.new_traces == 10
        skills[executor] = world["repo"].git.show("trace2skill/demo:skills/demo/SKILL.md")
    assert skills["ray"] == skills["local"] and "## " in skills["ray"]
