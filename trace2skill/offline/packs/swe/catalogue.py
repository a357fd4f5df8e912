"""Lesson wording of the SWE pack, from its catalogue `data/swe_pack.toml`.

The text of a lesson is a pure function of its signature, so lessons from different traces
about the same thing are identical except for their evidence and consolidation can merge them
by signature with exact counts.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import cache
from importlib import resources

from ....types import Evidence, Lesson


def catalogue_text() -> str:
    return resources.files("trace2skill").joinpath("data", "swe_pack.toml").read_text(encoding="utf-8")


@cache
def _catalogue() -> tuple[dict[str, str], ...]:
    """The rule catalogue: ordered entries, first match wins."""
    return tuple(tomllib.loads(catalogue_text())["rule"])


def wording(signature: str) -> dict[str, str] | None:
    """Title, rule, when, kind, polarity and subject for a signature; None when it is not the pack's."""
    entry = next((e for e in _catalogue() if fnmatchcase(signature, e["match"])), None)
    if entry is None:
        return None
    prefix, _, rest = signature.partition(":")
    target, _, detail = rest.partition(":")
    fields = {"signature": signature, "prefix": prefix, "target": target or prefix, "detail": detail or target}
    text = {key: _fill(entry[key], fields) for key in ("title", "rule", "when")}
    return {**text, "kind": entry["kind"], "polarity": entry["polarity"],
            "subject": _fill(entry.get("subject", "{target}"), fields)}


def shown(signature: str) -> str:
    """What a run that showed a behaviour did, in words (`the submitted patch added scratch files`)."""
    entry = next((e for e in _catalogue() if fnmatchcase(signature, e["match"])), None)
    return entry.get("shown", "") if entry else ""


def _fill(template: str, fields: dict[str, str]) -> str:
    """Replace only the known placeholders, so rule texts may show Python dicts in braces."""
    return re.sub(r"\{(signature|prefix|target|detail)\}", lambda m: fields[m.group(1)], template).strip()


def lesson(signature: str, evidence: Iterable[Evidence]) -> Lesson:
    """The lesson for one of the pack's signatures, worded from the catalogue, with this evidence."""
    fields = wording(signature)
    if fields is None:
        raise KeyError(f"the SWE pack has no wording for {signature!r}")
    return Lesson.create(signature=signature, evidence=tuple(evidence), **fields)
