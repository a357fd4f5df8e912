"""Shared fixtures. Real model requests are blocked for the whole suite; `--live` opts in.

The only fake is `ScriptedLLM`; everything else (trace files, git repos, SQLite, the CLI) is
real.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

ROOT = Path(__file__).resolve().parent.parent
DEMO_TRACES = ROOT / "traces"


def pytest_addoption(parser):
    parser.addoption("--live", action="store_true", help="run tests that talk to a real local model")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--live"):
        return
    skip = pytest.mark.skip(reason="needs --live")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _block_model_requests(request, monkeypatch, tmp_path):
    from trace2skill.llm import allow_model_requests

    live = request.config.getoption("--live")
    previous = allow_model_requests.allowed
    allow_model_requests.allowed = live
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in [k for k in os.environ if k.startswith("TRACE2SKILL_")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    allow_model_requests.allowed = previous


DEMO_CORPUS = DEMO_TRACES / "mini-swe-agent-swebench-verified"
"""The bundled run folder: `trajs/<instance>/` plus `results_summary.json`."""
DEMO_IDS = sorted(p.name for p in (DEMO_CORPUS / "trajs").iterdir())


def demo_subset(folder: Path, ids: list[str]) -> Path:
    """A run folder holding only the demo trajectories `ids`, with the labels file beside them."""
    (folder / "trajs").mkdir(parents=True)
    shutil.copy(DEMO_CORPUS / "results_summary.json", folder / "results_summary.json")
    for instance in ids:
        shutil.copytree(DEMO_CORPUS / "trajs" / instance, folder / "trajs" / instance)
    return folder


def init_repo(path: Path):
    """A real git repository with a `main` branch, a human identity and one commit."""
    import git

    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Human").set_value("user", "email", "human@example.com")
    (path / "README.md").write_text("skills repo\n")
    repo.index.add(["README.md"])
    repo.index.commit("init")
    return repo


def refresh_world(root: Path) -> dict:
    """What a refresh job works on: a skills repo with main pushed to a bare on-disk remote, an
    empty trace folder (the demo labels beside it) and a state folder, under `root`."""
    import git

    remote = root / "remote.git"
    git.Repo.init(remote, bare=True, initial_branch="main")
    repo = init_repo(root / "repo")
    repo.create_remote("origin", str(remote)).push("main")
    traces = root / "traces"
    (traces / "trajs").mkdir(parents=True)
    shutil.copy(DEMO_CORPUS / "results_summary.json", traces / "results_summary.json")
    return {"repo": repo, "root": root / "repo", "traces": traces, "state": root / "state", "remote": remote}


@pytest.fixture
def demo_traces(tmp_path) -> Path:
    """A private copy of the bundled demo corpus (40 real mini-swe-agent trajectories)."""
    target = tmp_path / "traces"
    shutil.copytree(DEMO_TRACES, target)
    return target


@pytest.fixture
def traces_alive_when_scored(monkeypatch) -> list[int]:
    """Each time the held-out scorer flags a batch, how many `Trace` objects are alive beyond
    those alive before the test (earlier tests may leave some); appended as it runs."""
    import gc

    from trace2skill.evaluate import Scorer
    from trace2skill.types import Trace

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, Trace) for o in gc.get_objects())

    before, counts, flags = alive(), [], Scorer.flags

    def counting(self, traces, rules):
        counts.append(alive() - before)
        return flags(self, traces, rules)

    monkeypatch.setattr(Scorer, "flags", counting)
    return counts
