"""Generic lesson wording, built from the evidence rather than picked from a catalogue.

A per-trace error lesson's text is a pure function of its signature (`error:<family>|<template>`),
so lessons from different traces merge by signature with exact counts; the corpus pass then
rewrites the rule with the counts, a real example and the recovery that worked. Behaviour
wording is built from the corpus test (`behaviours.Verdict`).
"""

from __future__ import annotations

from ..types import Lesson

TITLE_TEMPLATE = 90
"""Characters of the template shown in a title; the rule shows it whole."""
_DISPLAY = {"python script": "python SCRIPT.py", "unknown": "a tool", "shell": "a shell command",
            "script": "a shell script"}
_PHRASES = {
    "uses": ("use `{0}`", "used `{0}`"),
    "after-edit": ("run `{0}` after the last file edit", "ran `{0}` after the last file edit"),
    "sequence": ("run `{1}` right after `{0}`", "ran `{1}` right after `{0}`"),
}


def display(family: str) -> str:
    """How a family is named in text: never a pseudo-command such as `python script`."""
    return _DISPLAY.get(family, family)


def error_signature(family: str, template: str) -> str:
    return f"error:{family}|{template}"


def parse_error(signature: str) -> tuple[str, str]:
    """(family, template) of an `error:` signature."""
    family, _, template = signature.removeprefix("error:").partition("|")
    return family, template


def error_wording(signature: str) -> dict[str, str]:
    """Per-trace wording of a generic error lesson (a function of the signature alone)."""
    family, template = parse_error(signature)
    name = display(family)
    shown = template if len(template) <= TITLE_TEMPLATE else template[: TITLE_TEMPLATE - 1].rstrip() + "…"
    return {
        "title": f"`{name}` fails with \"{shown}\"",
        "rule": f"Expect `{name}` to fail with \"{template}\" and check for that before relying on its result.",
        "when": f"When calling `{name}`.",
        "kind": "pitfall",
        "polarity": "avoid",
        "subject": f"{family}: {template}"[:60],
    }


def counted_error_rule(lesson: Lesson, example: str, recovery: str) -> str:
    """The corpus-level rule of a generic error: template, exact run counts, example, recovery."""
    family, template = parse_error(lesson.signature)
    name = display(family)
    rule = (f"`{name}` failed with \"{template}\" in {_runs(lesson)}. Check for what causes it before calling "
            f"`{name}`. Example: {example}")
    return f"{rule.rstrip('.')}.{' ' + recovery if recovery else ''}"


def _runs(lesson: Lesson) -> str:
    """`13 runs (12 failed, 1 resolved)`: distinct trajectories by outcome."""
    parts = [f"{lesson.failing_support} failed" if lesson.failing_support else "",
             f"{lesson.succeeding_support} resolved" if lesson.succeeding_support else ""]
    unknown = lesson.support - lesson.failing_support - lesson.succeeding_support
    parts.append(f"{unknown} unlabelled" if unknown else "")
    return f"{lesson.support} run{'s' if lesson.support != 1 else ''} ({', '.join(p for p in parts if p)})"


def behaviour_shown(signature: str) -> str:
    """What a run that showed a generic behaviour did: `the run used `cat``."""
    kind, _, rest = signature.partition(":")
    names = [display(part) for part in rest.split(" > ")]
    return "the agent " + _PHRASES[kind][1].format(*names)


def behaviour_wording(signature: str, polarity: str) -> dict[str, str]:
    """Title, rule, when of a generic behaviour, in the direction its numbers point."""
    kind, _, rest = signature.partition(":")
    names = [display(part) for part in rest.split(" > ")]
    present, past = (text.format(*names) for text in _PHRASES[kind])
    subject = f"{kind}:{rest}"[:60]
    if polarity == "do":
        return {"title": present[0].upper() + present[1:], "kind": "procedure", "polarity": "do", "subject": subject,
                "rule": f"Resolved runs {past} more often than failed runs.", "when": "When the task allows it."}
    return {"title": f"Be wary when you {present}", "kind": "heuristic", "polarity": "avoid", "subject": subject,
            "rule": f"Failed runs {past} more often than resolved runs: it is a warning sign, not a proven cause; "
                    f"check that it is needed before you do it.", "when": "When the task allows a choice."}
