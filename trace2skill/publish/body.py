"""The pull request's title, labels and body, rendered from plain data.

`PRContent` is a plain dataclass the refresh fills from its run result and skill build (or
from git with `describe_change`); `render_pr_body` lays it out with the Jinja template
`prompts/pr_body.md`. Every string that may come from a trajectory (titles, quotes, trace
ids) passes through `_inline` first: whitespace collapsed, length capped, HTML and table
pipes escaped, and `@` mentions defused, so a trace can neither break the layout nor ping
people. GitHub caps a body at 65,536 characters; past `MAX_BODY` the quotes, then the
evidence section, are dropped (provenance.json keeps them).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import jinja2

from ..types import Conflict
from .merge import Clash
from ..provenance import provenance_entries
from ..skillfmt.frontmatter import read_version
from ..skillfmt.markers import rule_lines, rule_title

MAX_BODY = 60_000
BASE_LABELS = ("skills", "automated")
REVIEW_LABEL = "needs-review"
_MAX_IDS = 12
_MAX_QUOTES = 3


@dataclass(frozen=True)
class RuleChange:
    rule_id: str
    title: str
    change: Literal["added", "changed", "removed"]
    trace_ids: tuple[str, ...] = ()
    quotes: tuple[str, ...] = ()
    failing_support: int = 0
    succeeding_support: int = 0


@dataclass(frozen=True)
class SkillChange:
    name: str
    version_to: str
    version_from: str | None = None
    """Version on the base branch (None: a new skill)."""
    trajectories: int = 0
    """Trajectories behind the added and changed rules."""
    rules: tuple[RuleChange, ...] = ()
    path: str = ""

    def count(self, change: str) -> int:
        return sum(1 for rule in self.rules if rule.change == change)


@dataclass(frozen=True)
class ReviewItem:
    skill: str
    summary: str
    detail: str = ""
    kind: Literal["conflict", "clash", "hand edit"] = "clash"

    @classmethod
    def from_clash(cls, skill: str, clash: Clash) -> ReviewItem:
        sides = (("kept (base branch)", clash.theirs), ("bot proposed", clash.ours), ("before", clash.base))
        parts = [f"{label}:\n{text}" for label, text in sides if text]
        return cls(skill, clash.summary(), "\n\n".join(parts), "clash")

    @classmethod
    def from_conflict(cls, skill: str, conflict: Conflict) -> ReviewItem:
        a, b = conflict.a, conflict.b
        detail = "\n\n".join(f"{lesson.title} ({lesson.support} trajectories):\n{lesson.rule}" for lesson in (a, b))
        return cls(skill, f"conflicting rules {a.title!r} and {b.title!r}: {conflict.reason}", detail, "conflict")


def review_items(skill: str, conflicts: tuple[Conflict, ...] = (), clashes: tuple[Clash, ...] = (),
                 hand_edits: Mapping[str, str] | None = None) -> tuple[ReviewItem, ...]:
    """Needs-review items: unresolved conflict-ledger entries, merge clashes, then managed rules
    people reworded, moved or deleted (kept as they left them; a reviewer may want to know)."""
    items = [ReviewItem.from_conflict(skill, c) for c in conflicts if c.status == "needs-review"]
    items += [ReviewItem.from_clash(skill, c) for c in clashes]
    items += [ReviewItem(skill, f"rule `{rid}` {what}", "", "hand edit") for rid, what in sorted((hand_edits or {}).items())]
    return tuple(items)


@dataclass(frozen=True)
class PRContent:
    skills: tuple[SkillChange, ...]
    run_id: str
    model: str
    trajectories_read: int = 0
    review: tuple[ReviewItem, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    window_start: str | None = None
    window_end: str | None = None
    tool_version: str = ""
    extra_labels: tuple[str, ...] = field(default_factory=tuple)
    gate: dict | None = None
    """The gate's decision (`gate.GateDecision.as_dict()`), when a gate ran."""


def render_pr_title(content: PRContent) -> str:
    """`chore(skills): refresh <skill> to v<X> from N trajectories` (or `refresh K skills ...`)."""
    count = sum(skill.trajectories for skill in content.skills) or content.trajectories_read
    noun = "trajectory" if count == 1 else "trajectories"
    if len(content.skills) == 1:
        skill = content.skills[0]
        return f"chore(skills): refresh {skill.name} to v{skill.version_to} from {count} {noun}"
    return f"chore(skills): refresh {len(content.skills)} skills from {count} {noun}"


def pr_labels(content: PRContent) -> tuple[str, ...]:
    labels = [*BASE_LABELS, *((REVIEW_LABEL,) if content.review else ()), *content.extra_labels]
    return tuple(dict.fromkeys(labels))


def render_pr_body(content: PRContent) -> str:
    """The Markdown body, at most `MAX_BODY` characters."""
    for quotes, evidence in ((True, True), (False, True), (False, False)):
        body = _template().render(**_view(content, quotes=quotes, evidence=evidence))
        if len(body) <= MAX_BODY:
            return body
    return body[: MAX_BODY - 40] + "\n\n*(body truncated)*\n"


def render_commit_message(content: PRContent) -> str:
    """Commit message (without trailers): the PR title, then one line per skill."""
    lines = [render_pr_title(content), ""]
    for skill in content.skills:
        lines.append(f"- {skill.name}: {skill.version_from or 'new'} -> {skill.version_to} "
                     f"(+{skill.count('added')} ~{skill.count('changed')} -{skill.count('removed')} rules)")
    return "\n".join(lines)


def describe_change(name: str, before: str | None, after: str, provenance: str | None, path: str = "") -> SkillChange:
    """Compare two SKILL.md texts (base branch vs. new) into a `SkillChange`.

    Args:
        before: SKILL.md on the base branch (None for a new skill).
        after: the new SKILL.md.
        provenance: the new provenance.json text, for evidence (trace ids, supports, quotes).
    """
    old, new = rule_lines(before or ""), rule_lines(after)
    entries = provenance_entries(provenance)
    rules = []
    for rid, line in new.items():
        if rid not in old or old[rid] != line:
            rules.append(_rule_change(rid, "added" if rid not in old else "changed", line, entries.get(rid, {})))
    rules += [_rule_change(rid, "removed", line, {}) for rid, line in old.items() if rid not in new]
    behind = {t for rule in rules if rule.change != "removed" for t in rule.trace_ids}
    return SkillChange(name, read_version(after) or "0.0.0", read_version(before or ""), len(behind), tuple(rules), path)


def _rule_change(rid: str, change: str, line: str, entry: dict) -> RuleChange:
    quotes = tuple(str(e.get("quote", "")) for e in entry.get("evidence", []) if isinstance(e, dict) and e.get("quote"))
    quotes += tuple(str(q) for q in entry.get("quotes", []) if isinstance(q, str))
    title = str(entry.get("title") or "") or rule_title(line)
    return RuleChange(
        rule_id=rid, title=title, change=change,  # type: ignore[arg-type]
        trace_ids=tuple(str(t) for t in entry.get("trace_ids", [])),
        quotes=quotes,
        failing_support=int(entry.get("failing_support", 0) or 0),
        succeeding_support=int(entry.get("succeeding_support", 0) or 0),
    )


def _inline(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return html.escape(flat, quote=False).replace("|", "\\|").replace("@", "@\u200b")


def _block(text: str, limit: int = 1500) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return html.escape(text, quote=False).replace("@", "@\u200b")


def _view(content: PRContent, *, quotes: bool, evidence: bool) -> dict:
    skills = []
    for skill in content.skills:
        rules = [{
            "id": _inline(rule.rule_id, 40), "title": _inline(rule.title, 120), "change": rule.change,
            "support": len(set(rule.trace_ids)) or rule.failing_support + rule.succeeding_support,
            "failing": rule.failing_support, "succeeding": rule.succeeding_support,
            "trace_ids": ", ".join(f"`{_inline(t, 60)}`" for t in rule.trace_ids[:_MAX_IDS]),
            "more_ids": max(0, len(rule.trace_ids) - _MAX_IDS),
            "quotes": [_inline(q, 240) for q in rule.quotes[:_MAX_QUOTES]] if quotes else [],
        } for rule in skill.rules]
        skills.append({
            "name": _inline(skill.name, 64), "path": _inline(skill.path, 200),
            "version_from": _inline(skill.version_from or "new", 20), "version_to": _inline(skill.version_to, 20),
            "added": skill.count("added"), "changed": skill.count("changed"), "removed": skill.count("removed"),
            "trajectories": skill.trajectories, "rules": rules,
        })
    review = [{"skill": _inline(i.skill, 64), "kind": i.kind, "summary": _inline(i.summary, 300), "detail": _block(i.detail)}
              for i in content.review]
    cost = "n/a (offline)" if content.model == "offline" else "unknown" if content.cost is None else f"${content.cost:.4f}"
    window = f"{content.window_start or 'beginning'} → {content.window_end or 'now'}"
    return {
        "title": render_pr_title(content), "skills": skills, "review": review, "evidence": evidence,
        "quotes": quotes, "run_id": _inline(content.run_id, 80), "model": _inline(content.model, 120),
        "input_tokens": content.input_tokens, "output_tokens": content.output_tokens, "cost": cost,
        "window": _inline(window, 120), "trajectories_read": content.trajectories_read,
        "tool_version": _inline(content.tool_version or "unknown", 40),
        "gate": _gate_view(content.gate),
    }


def _gate_view(gate: dict | None) -> dict | None:
    """The gate's decision, scores, command and ablation, escaped like every other value."""
    if not gate:
        return None

    def number(value: object) -> str:
        return "n/a" if value is None else f"{value:.1%}" if gate.get("kind") == "heldout" else f"{value:g}"

    ablation = [{"id": _inline(e["rule_id"], 40), "title": _inline(e["title"], 120), "without": f"{e['score_without']:g}",
                 "effect": f"{e['effect']:+g}", "mark": "⚠ no or negative effect" if e["no_effect"] else ""}
                for e in gate.get("ablation", [])]
    return {"kind": gate.get("kind"), "decision": "passed" if gate.get("accepted") else "refused",
            "reason": _inline(gate.get("reason", ""), 300), "current": number(gate.get("current")),
            "candidate": number(gate.get("candidate")), "tolerance": f"{gate.get('tolerance', 0):g}",
            "command": _inline(gate.get("command") or "", 300),
            "current_false_alarm": number(gate.get("current_false_alarm")) if gate.get("kind") == "heldout" else "",
            "candidate_false_alarm": number(gate.get("candidate_false_alarm")) if gate.get("kind") == "heldout" else "",
            "ablation": ablation}


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("trace2skill", "prompts"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    return environment.get_template("pr_body.md")

