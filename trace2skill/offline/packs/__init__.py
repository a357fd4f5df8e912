"""Optional packs: domain knowledge that speaks only where its own signatures fire.

The generic analyst knows nothing about any one agent or task. A pack adds, for the runs it
recognises (`applies`), detectors whose failures get its own signatures and catalogue wording,
dismissals of failures that are normal in that domain, and behaviours of its own. Each pack is
a module with:

* `NAME`: its name, used in behaviour populations and docs;
* `applies(trace, runs) -> bool`;
* `judge(trace, runs, writes) -> (findings, judged run indices)`;
* `behaviours(trace, runs, writes) -> list[Shown]`;
* `wording(signature) -> dict | None`, `shown(signature) -> str` (what a run showing a
  behaviour did), `is_feedback(text) -> bool` (harness notices) and `catalogue_text() -> str`
  (its hand-written wording, which the leakage audit does not report).

Today there is one: `swe`, a bash agent fixing a bug in a Python repository (mini-swe-agent,
SWE-agent on SWE-bench).
"""

from __future__ import annotations

from . import swe

PACKS = (swe,)


def wording(signature: str) -> dict[str, str] | None:
    """The wording of a pack signature, or None when no pack owns it."""
    return next((w for pack in PACKS if (w := pack.wording(signature)) is not None), None)


def shown(signature: str) -> str:
    """What a run that showed a pack behaviour did, in words."""
    return next((w for pack in PACKS if (w := pack.shown(signature))), "")


def catalogue_text() -> str:
    """Every pack's hand-written wording, written before any trace was seen (for the leakage audit)."""
    return "\n".join(pack.catalogue_text() for pack in PACKS)


def is_noise(output: str) -> bool:
    return any(pack.is_feedback(output) for pack in PACKS)
