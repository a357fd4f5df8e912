"""Safe on disk: nothing outside the skill folder is touched, writes survive SIGKILL, one writer.

Everything runs the real CLI; the concurrency and kill tests start real processes (`python
cli.py`) and kill them with real signals. `T2S_TEST_CRASH_AT` names the point where
the write sends itself SIGKILL (see `trace2skill.fsguard.crash_point`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.pipeline import lock_path, skill_lock
from trace2skill.skill import staging_dir, validate_skill_dir

from conftest import DEMO_IDS as IDS, ROOT, demo_subset as traces

NAME = "demo-skill"


def distill_args(paths: list[Path], out: Path, *extra: str) -> list[str]:
    return ["distill", *map(str, paths), "--out", str(out), "--skill", NAME, *extra]


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "CI": "1", **env}, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path):
    """A skill written from 6 trajectories, a second batch of 6, and files outside the folder."""
    first = traces(tmp_path / "first", IDS[:6])
    second = traces(tmp_path / "second", IDS[6:12])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, distill_args([first], out))
    assert result.exit_code == 0, result.output
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    return {"first": first, "second": second, "out": out, "skill": out / NAME, "outside": outside, "tmp": tmp_path}


# -- hostile provenance.json and symlinks -----------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_planted_file_list_in_provenance_deletes_nothing_outside(built, dry_run):
    skill = built["skill"]
    absolute = built["tmp"] / "absolute.txt"
    absolute.write_text("keep me too\n")
    sibling = built["out"] / "x"
    sibling.write_text("sibling\n")
    provenance = json.loads((skill / "provenance.json").read_text())
    provenance["files"] = [*provenance["files"], "../../precious.txt", "../x", str(absolute)]
    (skill / "provenance.json").write_text(json.dumps(provenance))
    before = snapshot(skill)
    result = CliRunner().invoke(app, distill_args([built["first"], built["second"]], built["out"],
                                                  *(["--dry-run"] if dry_run else [])))
    assert result.exit_code == 65, result.output
    assert "provenance.json lists the file '../../precious.txt'" in result.output
    assert built["outside"].read_text() == "keep me\n"
    assert absolute.read_text() == "keep me too\n" and sibling.read_text() == "sibling\n"
    assert snapshot(skill) == before
    assert sorted(p.name for p in built["out"].iterdir()) == [NAME, "x"], "no staging folder or lock file left"


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("linked", ["CHANGELOG.md", "SKILL.md"])
def test_symlinked_generated_file_is_refused_by_name_and_its_target_untouched(built, linked, dry_run):
    skill = built["skill"]
    (skill / linked).unlink()
    (skill / linked).symlink_to(built["outside"])
    result = CliRunner().invoke(app, distill_args([built["first"], built["second"]], built["out"],
                                                  *(["--dry-run"] if dry_run else [])))
    assert result.exit_code == 65, result.output
    assert str(skill / linked) in result.output and "symbolic link" in result.output
    assert built["outside"].read_text() == "keep me\n"
    assert (skill / linked).is_symlink()
    assert sorted(p.name for p in built["out"].iterdir()) == [NAME]


def test_dry_run_writes_nothing_anywhere(built, tmp_path_factory):
    """Not in the output folder, and no staging folder in the temporary directory either."""
    scratch = tmp_path_factory.mktemp("tmpdir")
    before = snapshot(built["out"])
    run = run_cli(distill_args([built["first"], built["second"]], built["out"], "--dry-run"), built["tmp"],
                  TMPDIR=str(scratch))
    assert run.returncode == 0, run.stderr
    assert snapshot(built["out"]) == before
    assert sorted(p.name for p in built["out"].iterdir()) == [NAME]
    assert list(scratch.iterdir()) == []


def test_symlink_anywhere_in_the_folder_is_a_validation_problem(built):
    (built["skill"] / "scripts").mkdir()
    (built["skill"] / "scripts" / "run.sh").symlink_to(built["outside"])
    assert any("scripts/run.sh" in p and "symbolic link" in p for p in validate_skill_dir(built["skill"]))
    result = CliRunner().invoke(app, distill_args([built["first"], built["second"]], built["out"]))
    assert result.exit_code == 65 and "scripts/run.sh" in result.output


# -- one writer at a time ---------------------------------------------------------------------------


def test_a_held_lock_makes_distill_exit_75_naming_the_folder(built):
    with skill_lock(built["skill"]):
        run = run_cli(distill_args([built["first"], built["second"]], built["out"]), built["tmp"])
    assert run.returncode == 75, run.stderr
    assert f"another run is writing '{built['skill']}'" in run.stderr and "Traceback" not in run.stderr
    assert not lock_path(built["skill"]).exists(), "the lock file is removed on release"


def test_concurrent_distills_into_one_folder_lose_no_work(tmp_path):
    """Four real processes, each with its own trajectories, into one folder: each exits 0 or
    75, and every version a successful run reports is in the final changelog (a lost write
    would drop its entry, since the next writer builds on what it read)."""
    out = tmp_path / "out"
    batches = [traces(tmp_path / f"batch{i}", IDS[i * 5:(i + 1) * 5]) for i in range(4)]
    command = [sys.executable, str(ROOT / "cli.py")]
    children = [subprocess.Popen([*command, *distill_args([batch], out, "--json")], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "1"}) for batch in batches]
    results = [(child.wait(300), *child.communicate()) for child in children]
    codes = [code for code, _, _ in results]
    assert set(codes) <= {0, 3, 75} and any(code in (0, 3) for code in codes), results
    for code, _, stderr in results:
        if code == 75:
            assert "another run is writing" in stderr
    versions = [json.loads(stdout)["version"] for code, stdout, _ in results if code in (0, 3) and json.loads(stdout)["changed"]]
    changelog = (out / NAME / "CHANGELOG.md").read_text()
    for version in versions:
        assert f"## {version}\n" in changelog, (versions, changelog[:400])
    assert len(set(versions)) == len(versions), "two successful runs wrote the same version: one was lost"
    assert sorted(p.name for p in out.iterdir()) == [NAME]


# -- SIGKILL at each step of the write ---------------------------------------------------------------


@pytest.mark.parametrize("point", ["staged", "after-first-rename", "after-second-rename"])
def test_sigkill_at_each_step_of_a_deepening_write_is_completed_by_the_next_run(built, point, tmp_path_factory):
    reference = tmp_path_factory.mktemp("reference") / "out"
    for paths in ([built["first"]], [built["first"], built["second"]]):
        assert CliRunner().invoke(app, distill_args(paths, reference)).exit_code == 0
    old = snapshot(built["skill"])
    args = distill_args([built["first"], built["second"]], built["out"])
    killed = run_cli(args, built["tmp"], T2S_TEST_CRASH_AT=point)
    assert killed.returncode == -9, killed.stderr
    skill, work = built["skill"], staging_dir(built["skill"])
    if point == "staged":
        assert snapshot(skill) == old
    elif point == "after-first-rename":
        assert not skill.exists() and validate_skill_dir(work / NAME) == [], "the new folder waits whole"
        assert snapshot(work / "previous") == old, "and so does the old one"
    else:
        assert snapshot(skill) == snapshot(reference / NAME)
    if point == "after-first-rename":
        dry = run_cli([*args, "--dry-run", "--json"], built["tmp"])
        assert dry.returncode == 0 and not json.loads(dry.stdout)["changed"], "reads the waiting new folder"
        assert not skill.exists(), "and moves nothing"

    again = run_cli(args, built["tmp"])
    assert again.returncode == 0, again.stderr
    assert snapshot(skill) == snapshot(reference / NAME)
    assert sorted(p.name for p in built["out"].iterdir()) == [NAME], "leftovers are cleaned up"


def test_sigkill_before_a_new_folder_lands_leaves_nothing_half_written(tmp_path):
    first = traces(tmp_path / "first", IDS[:6])
    out = tmp_path / "out"
    killed = run_cli(distill_args([first], out), tmp_path, T2S_TEST_CRASH_AT="staged")
    assert killed.returncode == -9 and not (out / NAME).exists()
    again = run_cli(distill_args([first], out), tmp_path)
    assert again.returncode == 0, again.stderr
    assert validate_skill_dir(out / NAME) == [] and sorted(p.name for p in out.iterdir()) == [NAME]
