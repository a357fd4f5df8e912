"""Leakage audit: rules must transfer, so they must not quote what only one task contains.

A lesson that names a trajectory's id, or a literal that appears only in one task statement
(a test id, a dotted path, a file path), is likely to encode that task's answer rather than a
transferable rule. Such lessons are reported, with the literal and the trace it came from, so a
reviewer can judge them; nothing is rewritten or dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from .types import Lesson

_LITERAL = re.compile(r"\b(?:test_[A-Za-z0-9_]{4,}|[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*){2,}|[\w.-]+/[\w./-]+\.\w{1,4})\b")


class HasLiterals(Protocol):
    """A trajectory as the audit sees it (`stream.IndexEntry`): its id and its task's literals."""

    @property
    def id(self) -> str: ...

    @property
    def literals(self) -> tuple[str, ...]: ...


def literals_of(task: str) -> tuple[str, ...]:
    """The literals of one task statement that could leak its answer (sorted, distinct)."""
    return tuple(sorted(set(_LITERAL.findall(task))))


def task_literals(traces: Iterable[HasLiterals]) -> dict[str, str]:
    """Literal -> trace id, for literals that occur in exactly one task statement (or are trace ids)."""
    traces = list(traces)
    found = {t.id: set(t.literals) for t in traces}
    seen = Counter(literal for literals in found.values() for literal in literals)
    unique = {literal: tid for tid, literals in found.items() for literal in literals if seen[literal] == 1}
    unique.update({t.id: t.id for t in traces if len(t.id) >= 6})
    return unique


def leakage(lessons: Iterable[Lesson], traces: Iterable[HasLiterals], written_before: str = "") -> list[str]:
    """One warning per lesson that quotes a task-specific literal in its title, rule or when.

    `written_before` is text written before any trace was seen (an offline pack's catalogue):
    a literal it contains, such as a framework module (`django.db.backends`), was not learnt
    from a task, so it is not reported.
    """
    literals = {k: v for k, v in task_literals(traces).items() if k not in written_before}
    warnings = []
    for lesson in sorted(lessons, key=lambda l: l.id):
        text = " ".join((lesson.title, lesson.rule, lesson.when))
        hits = sorted(literal for literal in literals if literal in text)
        if hits:
            sources = ", ".join(f"{hit!r} (from {literals[hit]})" for hit in hits[:3])
            warnings.append(f"lesson {lesson.title!r} quotes task-specific literals: {sources}")
    return warnings
