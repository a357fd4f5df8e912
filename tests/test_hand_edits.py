"""Hand edits win: a managed rule people reworded, moved or deleted is kept as they left it,
recorded in the changelog, and its evidence keeps accruing, in `distill` as in `refresh`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app

from conftest import DEMO_IDS as IDS, demo_subset as traces

NAME = "demo-skill"
MARKER = re.compile(r"<!-- rule:(r-[0-9a-f]+) -->")


def distill(paths: list[Path], out: Path) -> None:
    result = CliRunner().invoke(app, ["distill", *map(str, paths), "--out", str(out), "--skill", NAME])
    assert result.exit_code == 0, result.output


def provenance(out: Path) -> dict:
    return json.loads((out / NAME / "provenance.json").read_text())


def newest_entry(out: Path) -> str:
    text = (out / NAME / "CHANGELOG.md").read_text()
    return text.split("\n## ")[1].split("\n## ")[0]


@pytest.fixture
def skill(tmp_path):
    """A skill from 14 trajectories, 14 more to fold in, and a reference folder nobody edits."""
    first, second = traces(tmp_path / "a", IDS[:14]), traces(tmp_path / "b", IDS[14:28])
    out, reference = tmp_path / "out", tmp_path / "reference"
    distill([first], out)
    distill([first], reference)
    skill_md = out / NAME / "SKILL.md"
    rules = [(line, MARKER.search(line).group(1)) for line in skill_md.read_text().splitlines() if MARKER.search(line)]
    assert len(rules) >= 3, "the fixture needs a few rules to edit"
    return {"first": first, "second": second, "out": out, "reference": reference, "skill_md": skill_md, "rules": rules}


def test_reworded_rule_survives_distill_and_keeps_its_evidence(skill):
    line, rid = skill["rules"][0]
    reworded = f"- **Read the failing test first.** Words a person chose. <!-- rule:{rid} -->"
    skill["skill_md"].write_text(skill["skill_md"].read_text().replace(line, reworded))

    distill([skill["first"], skill["second"]], skill["out"])
    distill([skill["first"], skill["second"]], skill["reference"])
    assert reworded in skill["skill_md"].read_text().splitlines()
    entry = newest_entry(skill["out"])
    assert "### Edited by hand" in entry and f"`{rid}`): reworded by hand; kept as edited" in entry
    assert f"`{rid}`)\n" not in entry.split("### Edited by hand")[0], "not listed as a change the bot made"
    ours, unedited = provenance(skill["out"])["rules"][rid], provenance(skill["reference"])["rules"][rid]
    assert ours["trace_ids"] == unedited["trace_ids"] and ours["support"] == unedited["support"], "evidence accrues as without the edit"
    assert ours["text"] == reworded.split(" <!--")[0] and ours["rendered"]

    third = traces(skill["out"].parent / "c", IDS[28:34])
    distill([skill["first"], skill["second"], third], skill["out"])
    assert reworded in skill["skill_md"].read_text().splitlines(), "still kept on the run after"
    assert rid not in newest_entry(skill["out"]).split("### Edited by hand")[-1] or "### Edited by hand" not in newest_entry(skill["out"])


def test_rule_moved_to_another_file_stays_there(skill):
    line, rid = skill["rules"][1]
    text = skill["skill_md"].read_text().replace(line + "\n", "")
    text = text.rstrip("\n") + "\n\nSee [notes](references/notes.md).\n"
    skill["skill_md"].write_text(text)
    notes = skill["out"] / NAME / "references" / "notes.md"
    notes.parent.mkdir(exist_ok=True)
    notes.write_text(f"# Notes\n\n{line}\n")

    distill([skill["first"], skill["second"]], skill["out"])
    assert rid not in skill["skill_md"].read_text() and notes.read_text() == f"# Notes\n\n{line}\n"
    assert f"`{rid}`): moved by hand to references/notes.md" in newest_entry(skill["out"])


def test_deleted_rule_stays_deleted_and_is_recorded(skill):
    line, rid = skill["rules"][2]
    skill["skill_md"].write_text(skill["skill_md"].read_text().replace(line + "\n", ""))
    distill([skill["first"]], skill["out"])  # no new evidence: a deleted rule only returns on more support
    assert rid not in skill["skill_md"].read_text()
    assert f"`{rid}`): deleted by hand" in newest_entry(skill["out"])
    assert rid in provenance(skill["out"])["rejected"]
