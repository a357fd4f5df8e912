"""The HTML report of a run: one self-contained page to read or share.

`report_context` gathers what a run produced (the `RunResult`, the skill's provenance.json, the
rule changes, the quote and the calls per stage) into plain data; `render_report` renders it
with `templates/report.html.j2` into one file with inline CSS and SVG: no script, no font, no
request of any kind, so it opens from `file://` and on a phone. `eval` (held-out figures and a
learning curve, filled by the eval command) is an optional dict:

    {"figures": [{"label": "resolved with skill", "value": "0.42"}, ...],
     "curve": [{"x": 10, "y": 0.31}, ...], "x_label": "training traces", "y_label": "resolved",
     "note": "free text"}
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from markupsafe import Markup, escape

from .provenance import Provenance
from .rules import RuleRecord, clean, rank_key, sentence, when_clause
from .types import Evidence, JSONValue, RunResult, evidence_rows

if TYPE_CHECKING:
    from .budget import Quote

REPORTS_DIR = "reports"
MAX_EVIDENCE = 25
"""Evidence rows shown per rule (failures first); `explain` and provenance.json have them all."""


def report_context(result: RunResult, provenance: str | Provenance | None, *, added: list[str] = (), changed: list[str] = (),
                   removed: list[str] = (), previous_titles: Mapping[str, str] | None = None, quote: Quote | None = None,
                   calls: Mapping[str, int] | None = None, sources: Mapping[str, str] | None = None,
                   command: str = "distill", dry_run: bool = False) -> dict[str, object]:
    """Everything the template shows, as plain data (also what a test can check). `provenance`
    is provenance.json's text, or the build's `Provenance` itself (`SkillBuild.provenance`:
    nothing to parse, which at scale would hold every evidence item twice)."""
    if isinstance(provenance, Provenance):
        data = {"skill": provenance.skill, "conflicts": [c.model_dump(mode="json") for c in provenance.conflicts]}
        rules = sorted(provenance.rules.values(), key=rank_key)
        withheld = sorted(provenance.withheld.values(), key=rank_key)
    else:
        data = json.loads(provenance) if provenance else {}
        rules = sorted((RuleRecord.model_validate(r) for r in (data.get("rules") or {}).values()), key=rank_key)
        withheld = sorted((RuleRecord.model_validate(r) for r in (data.get("withheld") or {}).values()), key=rank_key)
    sources = sources or {}
    top = max([r.support for r in rules + withheld] or [1])
    titles = {**(previous_titles or {}), **{r.id: r.title for r in rules + withheld}}
    return {
        "command": command, "dry_run": dry_run, "skill": data.get("skill") or Path(result.skill_dir).name,
        "skill_dir": result.skill_dir, "result": result, "needs_review": sum(c.status == "needs-review" for c in result.conflicts),
        "rules": [_rule(r, top, sources) for r in rules], "withheld": [_rule(r, top, sources) for r in withheld],
        "changes": {"added": [(rid, titles.get(rid, rid)) for rid in added],
                    "changed": [(rid, titles.get(rid, rid)) for rid in changed],
                    "removed": [(rid, titles.get(rid, rid)) for rid in removed]},
        "conflicts": [_conflict(c) for c in data.get("conflicts") or []],
        "stages": _stages(quote, calls or {}), "usage": result.usage,
        "anchors": {r.id for r in rules + withheld},
    }


def _rule(record: RuleRecord, top: int, sources: Mapping[str, str]) -> dict[str, Any]:
    unlabelled = record.support - record.failing_support - record.succeeding_support
    scale = 100.0 / top
    order = {"failure": 0, "success": 1}
    shown = [Evidence(trace_id=t, outcome=o, steps=s, quote=q) for t, o, s, q in  # sorted()[:MAX_EVIDENCE], without the sort
             heapq.nsmallest(MAX_EVIDENCE, evidence_rows(record.evidence), key=lambda r: (order.get(r[1], 2), r[0], r[2]))]
    return {
        "id": record.id, "title": record.title, "text": sentence(clean(record.rule)), "when": when_clause(clean(record.when)),
        "kind": record.kind, "where": f"{record.file} > {record.section}" if record.file else "",
        "reason": record.reason, "support": record.support, "failed": record.failing_support,
        "succeeded": record.succeeding_support, "unlabelled": unlabelled,
        "bar": {"failed": record.failing_support * scale, "succeeded": record.succeeding_support * scale,
                "unlabelled": unlabelled * scale},
        "evidence": [{"trace_id": e.trace_id, "outcome": e.outcome, "steps": [s + 1 for s in e.steps],
                      "quote": e.quote, "source": sources.get(e.trace_id, "")} for e in shown],
        "more_evidence": len(record.evidence) - len(shown),
        "runs": (record.first_seen_run, record.last_seen_run),
    }


def _conflict(conflict: Mapping[str, Any]) -> dict[str, Any]:
    from .rules import rule_id

    def side(lesson: Mapping[str, Any]) -> dict[str, Any]:
        evidence = lesson.get("evidence") or []
        return {"title": lesson.get("title", ""), "rule": lesson.get("rule", ""), "polarity": lesson.get("polarity", "do"),
                "rule_id": rule_id(lesson.get("signature", "")),
                "failed": len({e["trace_id"] for e in evidence if e.get("outcome") == "failure"}),
                "succeeded": len({e["trace_id"] for e in evidence if e.get("outcome") == "success"}),
                "traces": sorted({e["trace_id"] for e in evidence})}

    return {"id": conflict.get("id"), "status": conflict.get("status"), "reason": conflict.get("reason", ""),
            "resolution": conflict.get("resolution"), "detected_by": conflict.get("detected_by"),
            "a": side(conflict.get("a") or {}), "b": side(conflict.get("b") or {})}


def _stages(quote: Quote | None, calls: Mapping[str, int]) -> list[dict[str, Any]]:
    """Quoted and actual calls per stage (analysts' purposes count as `analyse`)."""
    actual: dict[str, int] = {}
    for purpose, count in calls.items():
        stage = "analyse" if purpose.startswith("analyse") else purpose
        actual[stage] = actual.get(stage, 0) + count
    quoted = {s.stage: s for s in (quote.stages if quote is not None else ())}
    names = list(quoted) + sorted(set(actual) - set(quoted))
    return [{"stage": name, "calls": actual.get(name, 0),
             "quoted_calls": quoted[name].calls if name in quoted else None,
             "quoted_tokens": (quoted[name].input_tokens, quoted[name].output_tokens) if name in quoted else None}
            for name in names]


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("trace2skill", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["code"] = _code_spans
    return env


def _code_spans(text: str) -> Markup:
    """Escaped text with `code` spans as <code> elements (nothing else of Markdown is read)."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: show the text as it is
        return Markup(escape(text))
    return Markup("".join(str(escape(p)) if i % 2 == 0 else f"<code>{escape(p)}</code>" for i, p in enumerate(parts)))


def render_report(context: Mapping[str, object], eval: Mapping[str, JSONValue] | None = None) -> str:
    """The page for `context`, with the held-out section filled from `eval` when given."""
    return _environment().get_template("report.html.j2").render(**context, eval=_eval(eval))


def _eval(data: Mapping[str, JSONValue] | None) -> dict[str, Any] | None:
    """The eval dict with the learning curve scaled to a 600x200 SVG box."""
    if not data:
        return None
    curve = [(float(p["x"]), float(p["y"])) for p in data.get("curve") or []]
    points = ""
    if len(curve) >= 2:
        (x0, x1), (y0, y1) = (min(x for x, _ in curve), max(x for x, _ in curve)), (min(y for _, y in curve), max(y for _, y in curve))
        points = " ".join(f"{20 + 560 * (x - x0) / ((x1 - x0) or 1):.1f},{180 - 160 * (y - y0) / ((y1 - y0) or 1):.1f}" for x, y in curve)
    return {"figures": list(data.get("figures") or []), "curve": curve, "points": points,
            "x_label": data.get("x_label", ""), "y_label": data.get("y_label", ""), "note": data.get("note", "")}


def report_path(state_dir: Path, skill: str, run_id: str) -> Path:
    """Where every run's report is kept: `<state_dir>/reports/<skill>-<run id>.html`."""
    return Path(state_dir) / REPORTS_DIR / f"{skill}-{run_id}.html"


def write_report(path: Path, html: str, *, inside: Path | None = None) -> None:
    """Write the page atomically; a symlink at `path` is replaced, never written through.

    Raises:
        OSError: with `inside`, the page would land outside that folder (a symlinked
            `reports/`), or the filesystem refused.
    """
    path = Path(path)
    if inside is not None:
        folder = path.parent
        if folder.is_symlink() or not folder.resolve().is_relative_to(Path(inside).resolve()):
            raise OSError(f"{str(folder)!r} is a link or leads outside {str(inside)!r}; not writing through it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(html)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(partial, 0o666 & ~mask)  # a report to share, not a private temporary file
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
