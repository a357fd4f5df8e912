"""Evidence quotes: short, verbatim, and telling at a glance.

A reviewer reads a quote to see the problem without opening the trajectory, so a quote is
built from the two things that show it: the agent's command (trimmed to the line that says
what ran) and the telling line of what came back (the error, the exception, the harness
notice), joined as `command -> line`. The first line of an observation is often markup
(`<returncode>0</returncode>`), which shows nothing, so it is never quoted on its own.
Every quote fits in `QUOTE_LIMIT` characters; a cut is marked with `…`.
"""

from __future__ import annotations

import re

from .shell import without_heredoc_bodies

QUOTE_LIMIT = 200
COMMAND_ROOM = 100
"""Characters the command may take in a `command -> line` quote when the line is long."""
ARROW = " -> "
GAP = " … "
"""Joins verbatim fragments taken from different places of one text."""

_MARKUP = re.compile(r"</?[A-Za-z_][\w-]*[^>]*>")
_TELLING = re.compile(r"error|exception|fatal|fail|not found|denied|invalid|cannot|can't|no such|usage:"
                      r"|refused|timed out|killed|abort", re.I)
_FENCE = re.compile(r"```([\w+-]*)[^\S\n]*\n(.*?)```", re.S)
_SHELL_FENCES = ("bash", "sh", "shell", "console")


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def line_at(text: str, offset: int) -> str:
    """The whole line of `text` that contains `offset` (or the next non-blank one), clipped."""
    offset += len(text[offset:]) - len(text[offset:].lstrip())
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return clip(text[start: end if end != -1 else len(text)])


def is_markup(text: str) -> bool:
    """True when nothing but tags, punctuation and blanks is left: nothing to read."""
    return not re.search(r"\w", _MARKUP.sub("", text))


def command_line(command: str) -> str:
    """The command as a reviewer recognises it: heredoc bodies and line continuations
    folded, then its first line, and its last when there are more (`cd tests … ./runtests.py
    x`, `cat <<'EOF' > fix.py … python fix.py`), within `COMMAND_ROOM` when it has several."""
    lines = _lines(without_heredoc_bodies(command))
    if len(lines) > 1 and re.search(r"\w\w", lines[-1]):
        first = clip(lines[0], max(COMMAND_ROOM - len(GAP) - len(lines[-1]), COMMAND_ROOM // 2))
        return f"{first}{GAP}{clip(lines[-1], COMMAND_ROOM - len(GAP) - len(first))}"
    return clip(lines[0]) if lines else ""


def _lines(text: str) -> list[str]:
    """The non-blank lines of shell text, stripped, with `\\`-continued lines joined."""
    text = re.sub(r"[ \t]*\\\n\s*", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip()]


def names_error(line: str) -> bool:
    """Does this line name an error, a failure, a refusal or a timeout?"""
    return bool(_TELLING.search(line))


def telling_line(output: str, exit_code: int | None = None) -> str:
    """The line of an output that says what went wrong: the first that names an error,
    else the last readable line, else the exit code."""
    lines = [line.strip() for line in output.splitlines() if not is_markup(line)]
    line = next((text for text in lines if _TELLING.search(text)), lines[-1] if lines else "")
    if line:
        return clip(line)
    return f"exit code {exit_code}" if exit_code else "no output"


def joined(left: str, right: str, limit: int = QUOTE_LIMIT) -> str:
    """`left -> right` within `limit`, cutting the longer side (the command keeps at least
    `COMMAND_ROOM` characters when it has them)."""
    if not left or not right:
        return clip(left or right, limit)
    room = limit - len(ARROW)
    left = clip(left, max(room - len(right), min(len(left), COMMAND_ROOM)))
    return f"{left}{ARROW}{clip(right, room - len(left))}"


def failure(command: str, line: str) -> str:
    """The quote of a failure: the command that ran and the line that shows it failed."""
    return joined(command_line(command), line)


def sent_commands(message: str) -> str:
    """The first command line of each fenced shell block of a response (of every block when
    none is marked as shell), for feedback that rejected the response as a whole."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(message)]
    shell = [body for lang, body in blocks if lang in _SHELL_FENCES] or [body for _, body in blocks]
    firsts = (next((line for line in _lines(body) if not line.startswith("#")), "") for body in shell[:3])
    return GAP.join(clip(line, 50) for line in firsts if line)
