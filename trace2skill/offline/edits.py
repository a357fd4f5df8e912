"""What the agent wrote and what it touched: edited files, scratch files, operands.

Behaviours such as "tests after the last edit" are judged around the files a run wrote, and
a recovery must touch what the failure touched, so this module finds writes (shell
redirections, `sed -i`, `tee`, `cp`/`mv`, `patch`, inline Python, editor tools) and a
command's operands. Paths are compared workspace-relative (`/workspace/pkg/mod.py` and
`./pkg/mod.py` are `pkg/mod.py`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .runs import Run
from .shell import HEREDOC, is_shell, program, simple_commands, without_heredoc_bodies

_REDIRECT = re.compile(r"(?<![<>&\d])>>?\s*([\w./@+-]+)")
_WRITES = re.compile(r"""open\([^)]*['"](?:w|a|r\+|wb|w\+)['"]|\.write_text\(|\.writelines?\(|fileinput""")
_PATH_LITERAL = re.compile(r"""['"]((?:\./|/testbed/)?[\w.-]+/[\w./-]*\w\.\w+)['"]""")
_HEREDOC_TO_FILE = re.compile(r"<<-?\s*(['\"]?)(\w+)\1\s*>\s*(?P<file>[\w./-]+\.py)[^\n]*\n(?P<body>.*?)"
                              r"\n\s*\2[ \t]*(?=\n|$)", re.S)
_EDIT_TOOL = re.compile(r"edit|write|create|replace|patch|insert", re.I)
_PATH_KEYS = ("path", "file_path", "filename", "file", "target_file")


def edited_files(runs: list[Run]) -> list[set[str]]:
    """The files each run wrote, aligned with `runs`.

    Besides shell writes it follows the common indirection of writing a Python script that
    rewrites a source file and running it (later, or in the same command line): the script's
    targets count where it runs without an error.
    """
    scripts: dict[str, set[str]] = {}
    result = []
    for run in runs:
        if not is_shell(run.tool, run.command):
            result.append(_tool_targets(run))
            continue
        targets = _shell_targets(run.command)
        for match in _HEREDOC_TO_FILE.finditer(run.command):
            written = _python_writes(match.group("body"))
            if written:
                scripts[repo_path(match.group("file"))] = written
        if re.search(r"\bpython[\d.]*\s+(-c|-\s*<<|<<)", run.command):
            targets |= _python_writes(run.command)
        ran_ok = not run.is_error and not run.exit_code
        ran = re.findall(r"\bpython[\d.]*\s+(?:-\w+\s+)*([\w./-]+\.py)\b", without_heredoc_bodies(run.command))
        for script in ran if ran_ok else ():
            targets |= scripts.get(repo_path(script), set())
        result.append({repo_path(t) for t in targets if not t.startswith("/dev/")})
    return result


def _tool_targets(run: Run) -> set[str]:
    """Files an editor-style tool call wrote (`edit`, `Write`, `str_replace_editor` ...)."""
    if not _EDIT_TOOL.search(run.tool) or run.is_error:
        return set()
    try:
        value: Any = json.loads(run.arguments)
    except json.JSONDecodeError:
        return set()
    if not isinstance(value, dict) or value.get("command") in ("view", "read"):
        return set()
    paths = (value.get(key) for key in _PATH_KEYS)
    return {repo_path(p) for p in paths if isinstance(p, str) and p} or {"<patch>"}


def _python_writes(code: str) -> set[str]:
    return set(_PATH_LITERAL.findall(code)) if _WRITES.search(code) else set()


def _shell_targets(command: str) -> set[str]:
    """Files a shell command writes: sed -i, perl -i, redirections, tee, cp/mv, patch."""
    targets: set[str] = set()
    for words in simple_commands(command):
        name, args = program(words)
        base = name.rsplit("/", 1)[-1]
        if base in ("sed", "perl") and any(a.startswith(("-i", "-pi")) for a in args):
            targets.update(a.strip("'\"") for a in args[1:] if _looks_like_path(a))
        elif base == "tee":
            targets.update(a for a in args if _looks_like_path(a))
        elif base in ("cp", "mv") and args and _looks_like_path(args[-1]):
            targets.add(args[-1])
        elif base in ("patch", "ed") or (base == "git" and args[:1] == ["apply"]):
            targets.add("<patch>")
    redirects = _REDIRECT.finditer(without_heredoc_bodies(command))
    targets.update(m.group(1) for m in redirects if _looks_like_path(m.group(1)))
    folder = _cd_folder(command)
    return {f"{folder}/{t}" if folder and not t.startswith(("/", "~", "$", "<")) else t for t in targets}


def _cd_folder(command: str) -> str:
    """The workspace-relative folder a command line first `cd`s into ("" for none or the root),
    so `cd reproduce_issue && cat <<EOF > src/x.py` writes `reproduce_issue/src/x.py`."""
    for words in simple_commands(command):
        if words[0] == "cd" and len(words) > 1:
            folder = repo_path(words[1].rstrip("/") + "/").rstrip("/")
            return "" if folder.startswith(("/", "~", "$", "-")) or folder in ("", ".") else folder
    return ""


def writes_files(command: str) -> bool:
    return bool(_shell_targets(command))


def _looks_like_path(word: str) -> bool:
    word = word.strip("'\"")
    return bool(re.fullmatch(r"[\w./@+-]*\w\.\w+|[\w.@+-]+/[\w./@+-]+", word)) and not word.startswith("-")


def repo_path(path: str) -> str:
    path = path.strip("'\"")
    path = re.sub(r"^(\./)+", "", path)
    return re.sub(r"^/(testbed|workspace|repo|app|src)/", "", path)


def operands(command: str) -> set[str]:
    """Paths and dotted test labels a command operates on, plus their last names without
    extension, so `tests/app/test_x.py` and the label `app.test_x` meet on `test_x`."""
    words = re.findall(r"[\w./:@+-]+", HEREDOC.sub("", command))
    paths = {repo_path(w).split("::")[0] for w in words
             if ("/" in w or re.fullmatch(r"\w+(\.\w+)+", w)) and not w.startswith("-") and len(w) > 3}
    stems = {re.sub(r"\.(py|pyx|txt|cfg|toml|json|rst|sh)$", "", p).replace("/", ".").rsplit(".", 1)[-1]
             for p in paths}
    return paths | {s for s in stems if len(s) > 3 and s not in ("tests", "test", "__init__", "testbed")}
