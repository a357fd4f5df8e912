"""Error templates: one message with its variable parts masked, so recurrences meet.

The same mistake in different runs prints different numbers, ids, paths and values
("total price is 305, but paid 255" / "total price is 375, but paid 299"). Masking them gives
one *template* ("total price is N, but paid N") that the corpus pass can count across runs.
The masker is deliberately small and ordered from the most specific shape to the least, so a
path is masked as a path before its digits are masked as numbers.
"""

from __future__ import annotations

import re

TEMPLATE_LIMIT = 120
"""Characters a template keeps: enough to say what went wrong, short enough to be a key."""
_MASKS = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "<email>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|sec|seconds|m|min|h)\b"), "<duration>"),
    (re.compile(r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b|\b(?:0x)?[0-9a-f]*[a-f][0-9a-f]*\d[0-9a-f]*\b", re.I),
     "<hash>"),
    (re.compile(r"""(["'`])(?:(?!\1).){1,200}?\1"""), r"\1…\1"),
    (re.compile(r"(?<![\w<])(?:[A-Za-z]:)?(?:\.{0,2}/)?(?:[\w.@+-]+/)+[\w.@+-]*"), "<path>"),
    (re.compile(r"\b[\w.-]+\.(?:py|js|ts|tsx|jsx|go|rs|java|rb|c|h|cpp|json|toml|ya?ml|md|txt|cfg|ini|sh)\b"), "<file>"),
    (re.compile(r"\b(?=[\w-]*[A-Za-z])(?=[\w-]*\d)[\w-]+\b"), "<id>"),
    (re.compile(r"[-+]?\b\d+(?:[.,]\d+)*\b"), "N"),
)
_HASH_MIN = 7
"""Hex runs shorter than this stay as they are (`0x1f` is a value, `a3f9c2e1` a hash)."""


def mask(message: str) -> str:
    """The template of one error line: variable parts replaced, spaces folded, clipped."""
    first = message.split("\\n", 1)[0]  # an escaped newline ends the message as a real one does
    text = " ".join(re.sub(r"</?[A-Za-z_][\w-]*>", " ", first).split()).strip("=-*_#~ ")
    for pattern, replacement in _MASKS:
        if replacement == "<hash>":
            text = pattern.sub(lambda m: "<hash>" if len(m.group(0)) >= _HASH_MIN else m.group(0), text)
        else:
            text = pattern.sub(replacement, text)
    text = re.sub(r"(<\w+>|N)(?:[ ,]*\1)+", r"\1", text) if len(text) > TEMPLATE_LIMIT else text
    return text if len(text) <= TEMPLATE_LIMIT else text[: TEMPLATE_LIMIT - 1].rstrip() + "…"
