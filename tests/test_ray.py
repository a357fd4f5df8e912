"""The Ray executor on a real local Ray (2 CPUs, started once for this module).

Skipped, with the reason, only where `import ray` fails (`pip install 'trace2skill[ray]'`).
Expected numbers come from the fake server's own request log or from plain counts of the
corpus, never from our counters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEMO_CORPUS, ROOT

from typer.testing import CliRunner

from fakeserver import FakeServer
from test_llm_path import MODEL, answer, corpus, distill_args, is_analysis, local_model  # noqa: F401 - a fixture
from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.errors import ConfigError
from trace2skill.executor import LocalExecutor, executor_for
from trace2skill.executor.ray import RayExecutor, ray_session
from trace2skill.stream import ShardJob, label_book, plan_shards

try:
    import ray  # noqa: F401

    NO_RAY = ""
except ImportError as exc:  # the only reason to skip: Ray cannot be imported here
    NO_RAY = f"Ray is not installed ({exc}); pip install 'trace2skill[ray]' to test the Ray executor"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes 6-20 s on this machine)."""
    if NO_RAY:
        pytest.skip(NO_RAY)
    with ray_session() as session:
        yield session


def test_asking_for_ray_where_it_is_not_installed_is_a_configuration_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as where it is not installed
    with pytest.raises(ConfigError, match=r"pip install 'trace2skill\[ray\]'") as refused:
        executor_for("ray", 2)
    assert refused.value.exit_code == 78


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


def test_the_call_cap_holds_across_ray_workers_and_the_driver_counts_their_calls(local_ray, tmp_path, demo_traces):
    from trace2skill.analyse import analyst_for
    from trace2skill.budget import meter_of
    from trace2skill.errors import BudgetExceeded
    from trace2skill.llm import allow_model_requests, build_llm

    allow_model_requests.allowed = True
    traces = corpus(demo_traces, tmp_path / "c", 12)
    with FakeServer(reply=answer) as server:
        config = load_config(overrides={"llm.model": MODEL, "llm.api_base": server.url, "budget.max_calls": 5,
                                        "analyse.concurrency": 4}, env={})
        client = analyst_for(config, build_llm(config, env={})).llm
        shards, _ = plan_shards([traces], config)
        job = ShardJob(config=config, labels=label_book([traces], config), analysis="llm")
        results = []
        executor = RayExecutor(workers=2)
        with pytest.raises(BudgetExceeded, match="call cap reached"):
            for result in executor.map(shards, job, client=client):
                results.append(result)
        executor.close()
        sent = [r for r in server.completions() if is_analysis(r)]
    assert len(server.completions()) == len(sent) == 5, "five calls allowed, five made, over two workers"
    assert len(results) == len(shards), "every shard's result came back before the run stopped"
    not_analysed = {s.path for r in results for s in r.failed}
    analysed = [e.id for r in results for e in r.entries if e.id not in not_analysed]
    assert len(analysed) == 5 and len(not_analysed) == 12 - 5
    assert meter_of(client).calls == 5 and client.usage.calls == 5, "the driver's caps and usage include the workers'"


runner = CliRunner()


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
        again = [r for r in server.completions()[len(first):] if is_analysis(r)]
        assert len(again) == 8 - paid, "what the capped run paid for is journaled on the driver, not asked again"
        # the same server: its address is part of the run id the skill records
        local = runner.invoke(app, distill_args(traces, tmp_path / "local", "--api-base", server.url,
                                                "--state-dir", str(tmp_path / "state-local")))
        assert local.exit_code == 0, local.output
    assert _files(tmp_path / "ray" / "demo") == _files(tmp_path / "local" / "demo")
