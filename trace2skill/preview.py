"""What a run would change, shown before anything is written (`--dry-run`).

`file_diffs` compares a build's files with the skill folder on disk and returns one unified
diff per file that would change (created, edited or deleted); `preview_refresh` runs the
refresh selection and a distil without writing, taking no lock and touching no state.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .skill import read_skill_files

if TYPE_CHECKING:
    from .author import SkillBuild
    from .config import Config
    from .llm import LLMClient
    from .types import RunResult


def file_diffs(skill_dir: Path, files: Mapping[str, str]) -> list[str]:
    """Unified diffs (`a/NAME` -> `b/NAME`) of every file the build would write or delete."""
    skill_dir = Path(skill_dir)
    before = read_skill_files(skill_dir) if skill_dir.is_dir() else {}
    ours = set(_generated(before)) | set(files)
    diffs = []
    for name in sorted(ours | (set(before) & set(files))):
        old, new = before.get(name), files.get(name)
        if old == new or (new is None and name not in before):
            continue
        lines = difflib.unified_diff((old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
                                     fromfile=f"a/{name}" if old is not None else "/dev/null",
                                     tofile=f"b/{name}" if new is not None else "/dev/null")
        diffs.append("".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines))
    return diffs


def _generated(before: Mapping[str, str]) -> list[str]:
    """Files the previous build listed as generated (they are deleted when no longer produced)."""
    try:
        listed = json.loads(before.get("provenance.json", "{}")).get("files", [])
    except (ValueError, AttributeError):
        return []
    return [name for name in listed if isinstance(name, str) and name in before]


def rule_counts(build: SkillBuild) -> str:
    """`+A ~C -R rules` for a build."""
    return f"+{len(build.added)} ~{len(build.changed_rules)} -{len(build.removed)} rules"


def preview_refresh(config: Config, llm: LLMClient | None, paths: list[Path] | None,
                    since: datetime | None) -> tuple[RunResult, SkillBuild] | None:
    """`(result, build)` of the refresh that would run now, or None when nothing is new.

    Reads the state and the traces, distils the new ones in memory; takes no lock, writes no
    state, checkpoint or skill file.
    """
    from .errors import NoInputError
    from .pipeline import distill, no_input_message
    from .analyse import is_offline
    from .refresh import read_new
    from .state import load_state

    state = load_state(config.state_dir)
    index, fresh = read_new(config, is_offline(llm), paths, state, config.skill.name, since)
    if not index.entries:
        raise NoInputError(no_input_message(index.skips))
    if fresh is None:
        return None
    rejected = {rid: r.support for rid, r in state.skill(config.skill.name).rejected.items()}
    return distill(config, llm, corpus=fresh, write=False, rejected=rejected)
