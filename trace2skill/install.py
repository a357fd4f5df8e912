"""Put a skill folder where an agent loads skills from (`trace2skill install`).

Each agent documents a project folder (inside the repository) and a user folder (in the home
directory) it scans for `NAME/SKILL.md`; see docs/install.md for the sources. Installing copies
the folder (or, with `link`, makes a symlink to it) as `<folder>/<NAME>`. A folder already there
is replaced only when it holds the same skill files, or with `force`; a symlink found there is
removed as a link, never followed.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InstallConflict, NoInputError, SkillValidationError
from .skill import check_skill_dir

AGENT_DIRS: dict[str, tuple[str, str]] = {
    "claude": (".claude/skills", "~/.claude/skills"),
    "codex": (".agents/skills", "~/.agents/skills"),
    "agents": (".agents/skills", "~/.agents/skills"),
    "gemini": (".agents/skills", "~/.gemini/skills"),
    "cursor": (".agents/skills", "~/.cursor/skills"),
    "copilot": (".agents/skills", "~/.copilot/skills"),
}
"""Agent -> (project folder relative to the project root, user folder)."""

_IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".DS_Store")


@dataclass(frozen=True)
class Installed:
    target: Path
    action: str
    """`installed`, `linked`, `replaced` or `unchanged`."""


def skills_folder(agent: str, *, user: bool, project: Path, home: Path | None = None) -> Path:
    """The folder `agent` loads skills from: the project's, or the user's with `user`.

    Raises:
        ConfigError: an agent we do not know.
    """
    if agent not in AGENT_DIRS:
        raise ConfigError(f"unknown agent {agent!r}; choose one of {', '.join(AGENT_DIRS)}")
    project_dir, user_dir = AGENT_DIRS[agent]
    if user:
        return (home or Path.home()) / user_dir.removeprefix("~/")
    return project / project_dir


def install_skill(skill_dir: Path, folder: Path, *, link: bool = False, force: bool = False) -> Installed:
    """Copy (or symlink) `skill_dir` to `folder/<its name>`.

    Raises:
        NoInputError: `skill_dir` is not a folder.
        SkillValidationError: `skill_dir` holds no SKILL.md, or breaks the spec (warnings
            such as a long body do not stop an install).
        InstallConflict: a different skill is installed under that name and `force` is false.
    """
    source = Path(skill_dir).resolve()
    if not source.is_dir():
        raise NoInputError(f"{str(skill_dir)!r} is not a folder; give the skill folder (the one holding SKILL.md)")
    if not (source / "SKILL.md").is_file():
        raise SkillValidationError([f"{str(skill_dir)!r} holds no SKILL.md; give the skill folder itself"])
    errors, _ = check_skill_dir(source)
    if errors:
        raise SkillValidationError(errors)
    target = Path(folder) / source.name
    if target.resolve() == source and not target.is_symlink():
        return Installed(target, "unchanged")
    exists = target.is_symlink() or target.exists()
    if exists and _same_install(source, target, link):
        return Installed(target, "unchanged")
    if exists and not force:
        what = f"a link to {os.readlink(target)!r}" if target.is_symlink() else "a different skill"
        raise InstallConflict(f"{str(target)!r} already holds {what}; rerun with --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        _replace_with_link(source, target)
    else:
        _replace_with_copy(source, target)
    return Installed(target, "replaced" if exists else ("linked" if link else "installed"))


def _same_install(source: Path, target: Path, link: bool) -> bool:
    if target.is_symlink():
        return link and Path(os.readlink(target)) == source
    return not link and target.is_dir() and _same_tree(source, target)


def _same_tree(a: Path, b: Path) -> bool:
    compare = filecmp.dircmp(a, b, ignore=[".git", "__pycache__", ".DS_Store"])
    if compare.left_only or compare.right_only or compare.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, compare.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in compare.common_dirs)


def _replace_with_copy(source: Path, target: Path) -> None:
    """Stage the copy beside the target, then swap it in, so a failure leaves the old install."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".install", dir=target.parent))
    try:
        staged = staging / target.name
        shutil.copytree(source, staged, symlinks=True, ignore=_IGNORED)
        _remove(target)
        os.rename(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_with_link(source: Path, target: Path) -> None:
    _remove(target)
    target.symlink_to(source, target_is_directory=True)


def _remove(target: Path) -> None:
    """Remove what is at `target`: a link as a link (never its target), a folder, or a file."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
