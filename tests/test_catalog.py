"""`validate` on a folder of several skills: description budgets and colliding descriptions (warnings)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trace2skill.catalog import similarity
from trace2skill.cli import app


def make_skill(root: Path, name: str, description: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {json.dumps(description)}\n---\n\n# {name}\n\nBody.\n")
    return folder


def test_several_skills_over_the_codex_budget_warn_but_stay_valid(tmp_path):
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
    total = 0
    for i in range(10):
        # distinct words per skill so no two descriptions collide; each is at most 900 characters
        description = " ".join(words[(i + j * 7) % len(words)] + str(i * 1000 + j) for j in range(110))[:900].strip()
        make_skill(tmp_path, f"skill-{i}", description)
        total += len(f"skill-{i}") + len(description)
    assert 8_000 < total < 15_000
    result = CliRunner().invoke(app, ["validate", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] and len(report["skills"]) == 10
    assert len(report["warnings"]) == 1 and "Codex" in report["warnings"][0] and f"{total:,}" in report["warnings"][0]


def test_similar_descriptions_are_flagged_as_colliding(tmp_path):
    make_skill(tmp_path, "pytest-lessons", "Gotchas for running pytest in Django projects: settings, databases and fixtures.")
    make_skill(tmp_path, "pytest-tips", "Gotchas for running pytest in Django projects: settings, databases and test fixtures.")
    make_skill(tmp_path, "git-lessons", "How to rebase, resolve conflicts and write commit messages in this repository.")
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "pytest-lessons and pytest-tips" in warnings[0]
    assert result.stdout.count(": valid") == 3


def test_shingle_similarity_by_hand():
    # "a b c" -> {ab, bc}; "a b d" -> {ab, bd}: one shared pair of three
    assert similarity("a b c", "A B d") == 1 / 3
    assert similarity("", "a b") == 0.0
