"""Scratch files and source edits, as a bash agent fixing a bug in a repository makes them.

The agent's own reproduction and debug scripts (`reproduce_issue.py`, `/tmp/x.py`) are not
edits of the project: behaviours are judged around the *source* edits, and an exception raised
inside an edited source file is the agent's own regression.
"""

from __future__ import annotations

import re

from ...edits import repo_path

SCRATCH_NAME = re.compile(r"(^|/)(reproduc\w*|repro\w*|debug\w*|scratch\w*|tmp\w*|temp\w*|check\w*|verify\w*"
                          r"|test_(fix|issue|repro|bug|patch)\w*)\.(py|sh|txt|json|cfg)$", re.I)
_SCRATCH_DIR = re.compile(r"(^|/)(reproduc|repro|debug|scratch|tmp|temp)\w*/")


def is_scratch(path: str) -> bool:
    path = repo_path(path)
    return path.startswith("/tmp") or "/" not in path or bool(SCRATCH_NAME.search(path) or _SCRATCH_DIR.search(path))


def matches_edited(frame: str, edited: frozenset[str]) -> bool:
    frame = repo_path(frame)
    return any(e != "<patch>" and not is_scratch(e) and (frame == e or frame.endswith("/" + e)) for e in edited)


def runs_file(command: str, frame: str) -> bool:
    """Is `frame` the script the command runs with Python (so its syntax is the agent's own)?"""
    name = repo_path(frame)
    scripts = re.findall(r"\bpython[\d.]*\s+(?:-\w+\s+)*([\w./-]+\.py)\b", command)
    return any(repo_path(w) == name or name.endswith("/" + repo_path(w)) for w in scripts)
