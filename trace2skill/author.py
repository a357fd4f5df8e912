"""Stage 4: turn the consolidated lessons into the skill folder's files, without clobbering.

`author_skill` reads, top to bottom: parse the existing skill -> previous rules from
provenance.json -> merge them with the new lessons -> route each rule (conflicts, reviewer
rejections, minimum support) -> build typed edits and apply them to the section trees ->
enforce the size budgets -> render the files -> version, changelog and provenance.

It is pure apart from reading `skill_dir`: the same skill folder and the same inputs give the
same files, byte for byte (no timestamps; every ordering is by rank or id). When the content
equals what is on disk the existing files are returned untouched and the version stays.

Hand-written text is never changed: only lines carrying a trace2skill marker are edited, locked
sections are left alone (see `layout` for where rules go instead), and the frontmatter keeps
every line that already holds the wanted value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import Config
from .errors import ConfigError
from .layout import Layout, Placement, Rule, fit_layout, pinned_rules, rule_locations
from .provenance import Provenance, iter_provenance, load_provenance, render_conflicts
from .rules import RuleRecord, clean, merge_records, rank_key, record_lesson, render_rule, rendered_key, rule_id
from .skill import (CHANGELOG_FILE, CONFLICTS_FILE, GENERATED_FILES, MAX_DESCRIPTION, PROVENANCE_FILE, FileSet,
                    explain_rule, read_skill_files, validate_build, validate_skill_dir, write_skill_dir)
from .skillfmt.frontmatter import edit_frontmatter, frontmatter_data, split_frontmatter
from .skillfmt.markers import VERSION_KEY
from .skillfmt.sections import (REFERENCES_DIR, SKILL_FILE, Section, Workspace, code_mask, item_locations, item_text,
                                items, parse, render, split_lines, walk)
from .types import Conflict, Lesson, LessonSet, content_hash, evidence_rows
from .skillfmt.versions import changelog_entry, next_version, parse_semver, prepend_entry

__all__ = ["RunInfo", "SkillBuild", "author_skill", "validate_skill_dir", "validate_build", "write_skill_dir",
           "explain_rule"]

INTRO = ("Rules distilled by trace2skill from recorded agent runs. Gotchas come from errors the runs hit; each "
         "rule ends with how many failed and successful runs are its evidence, and `provenance.json` maps every "
         "rule to the traces and steps behind it.")
_VOLATILE_METADATA = re.compile(r"^\s+trace2skill-(run|source-digest)\s*:")
_AVOID_WORDS = re.compile(r"\b(never|avoid|don't|do not|must not|mustn't|should not|shouldn't|stop)\b", re.I)
_DO_WORDS = re.compile(r"\b(always|use|prefer|must|should|make sure|ensure)\b", re.I)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    """Deterministic, derived from the inputs (no wall clock)."""
    model: str
    """`offline` or the model string."""
    mode: Literal["offline", "llm"]
    source_digest: str
    """Hash of the input traces."""
    trace_outcomes: dict[str, str]
    """Trace id -> success / failure / unknown, for every trace analysed in this run."""
    tool_version: str
    settings: dict = field(default_factory=dict)
    """Effective parameters: sampling parameters actually sent, prompt versions, merge settings."""
    trace_tasks: dict[str, str] = field(default_factory=dict)
    """Trace id -> task key, set for model runs: their minimum support counts distinct *tasks*, so
    several attempts at one task (or one trajectory copied under several ids) never make a rule on
    their own. Evidence from earlier runs whose task is not known here counts as its own task.
    Not written to provenance.json."""


@dataclass(frozen=True)
class SkillBuild:
    files: Mapping[str, str]
    """Relative path -> full text: SKILL.md, references/*.md, CHANGELOG.md, provenance.json, CONFLICTS.md
    (a `skill.FileSet`, which streams provenance.json, for a changed build)."""
    version: str
    previous_version: str | None
    changed: bool
    """False when the content equals the existing skill (version kept, files byte-identical)."""
    rules_written: int
    """Rule bullets in SKILL.md."""
    added: list[str]
    changed_rules: list[str]
    removed: list[str]
    rejected: dict[str, int]
    """Rules reviewers removed and that stay out -> the support they had when removed."""
    skill_dir: Path | None = field(default=None, compare=False)
    """The folder the build was authored against; `validate_build` counts its other files."""
    hand_edits: dict[str, str] = field(default_factory=dict, compare=False)
    """Rules people reworded, moved or deleted since the last run -> what they did (kept as they left them)."""
    provenance: Provenance | None = field(default=None, compare=False)
    """What `files` writes as provenance.json, as objects (the report reads it without parsing
    the text); None when the build keeps the files on disk (`changed` False)."""


@dataclass(frozen=True)
class _Existing:
    files: dict[str, str]
    front: list[str]
    data: dict[str, Any]
    workspace: Workspace
    provenance: Provenance
    version: str | None


def author_skill(skill_dir: Path, final: LessonSet, config: Config, run: RunInfo,
                 rejected: Mapping[str, int] | None = None) -> SkillBuild:
    """Create the skill, or deepen the existing one, from the final lesson set.

    Args:
        skill_dir: the skill folder (may not exist yet); its name must be `config.skill.name`.
        final: consolidated lessons and conflicts.
        config: uses `skill.name`, `skill.description`, `consolidate.min_support` and
            `consolidate.below_support`.
        run: this run's identity and the outcomes of every trace it analysed.
        rejected: rule id -> support when a reviewer removed it (added to what is detected from
            rules missing from the skill since the last build).

    Raises:
        ConfigError: the folder name differs from the skill name.
        SkillValidationError: the existing SKILL.md frontmatter or provenance.json is unreadable.
        EditError: an edit could not be applied (for example a rule marker appears twice).
    """
    skill_dir = Path(skill_dir)
    if skill_dir.name != config.skill.name:
        raise ConfigError(f"skill.name {config.skill.name!r} must equal the skill folder's name {skill_dir.name!r}")
    old = _read_existing(skill_dir, config)
    present = {key[5:] for key in item_locations(old.workspace) if key.startswith("rule:")}
    frozen, edits = hand_edits(old.workspace, old.provenance, present)
    pinned = pinned_rules(old.workspace) | frozen
    rejections = _rejections(old.provenance, present, rejected or {})
    previous = {**old.provenance.withheld, **old.provenance.rules}
    records = merge_records(_without_losers(final), previous, run.trace_outcomes, run.run_id)
    conflicts = _ledger(old, final, records, present)
    targets, withheld = _route(records, conflicts, rejections, present, pinned, config, run.trace_tasks)
    ranked = sorted(records, key=lambda rid: rank_key(records[rid]))
    rules = {rid: Rule(rid, record.kind, render_rule(record)) for rid, record in records.items()}
    managed = (set(records) | set(old.provenance.rules)) - pinned
    layout, targets = fit_layout(old.workspace, rules, targets, ranked, managed,
                                 set(old.provenance.sections), set(old.provenance.files) & set(old.workspace))
    rejections = {rid: s for rid, s in sorted(rejections.items()) if rid not in targets and rid not in pinned}
    return _finish(skill_dir, old, layout, records, withheld, conflicts, rejections, config, run, (frozen, edits))


# --------------------------------------------------------------------------------------------
# Reading the existing skill


def _read_existing(skill_dir: Path, config: Config) -> _Existing:
    files = read_skill_files(skill_dir) if skill_dir.is_dir() else {}
    references = {name: parse(text) for name, text in files.items() if name.startswith(REFERENCES_DIR)}
    if SKILL_FILE not in files:
        title = skill_title(config.skill.name)
        workspace = {SKILL_FILE: parse(f"\n# {title}\n\n{INTRO}\n"), **references}
        return _Existing({}, [], {}, workspace, Provenance(), None)
    front, body = split_frontmatter(files[SKILL_FILE])
    data = frontmatter_data(front) if front else {}
    provenance = load_provenance(files[PROVENANCE_FILE]) if PROVENANCE_FILE in files else Provenance()
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    version = metadata.get(VERSION_KEY) if parse_semver(metadata.get(VERSION_KEY)) else None
    return _Existing(files, front, data, {SKILL_FILE: parse(body), **references}, provenance, version)


def _rejections(provenance: Provenance, present: set[str], given: Mapping[str, int]) -> dict[str, int]:
    """Earlier rejections (unless a person put the rule back), rules written last time whose
    marker a person removed, and `given` (from review)."""
    found = {rid: support for rid, support in provenance.rejected.items() if rid not in present}
    missing = {rid: record.support for rid, record in provenance.rules.items() if rid not in present}
    for rid, support in [*missing.items(), *given.items()]:
        found[rid] = max(found.get(rid, 0), int(support))
    return found


def hand_edits(workspace: Workspace, provenance: Provenance, present: set[str]) -> tuple[set[str], dict[str, str]]:
    """Rules people edited: `(kept, new)`.

    `kept`: rules whose bullet or file differs from what trace2skill last wrote (`text` and
    `file` in provenance.json, or `rendered` once an edit was recorded); they are left exactly
    as people left them, like rules in locked sections, while their evidence keeps accruing.
    `new`: rule id -> what changed since the last run (reworded, moved to another file,
    deleted), for the changelog and the pull request.
    """
    locations = rule_locations(workspace)
    kept: set[str] = set()
    new: dict[str, str] = {}
    for rid, record in sorted(provenance.rules.items()):
        if rid not in present:
            new[rid] = "deleted by hand; stays out until new evidence outnumbers what it had"
            continue
        if rid not in locations:
            continue
        file, text = locations[rid][0], item_text(workspace, f"rule:{rid}")
        if rendered_key(text, file) != (record.rendered or rendered_key(record.text, record.file)):
            kept.add(rid)
            if text != record.text:
                new[rid] = "reworded by hand; kept as edited"
            elif file != record.file:
                new[rid] = f"moved by hand to {file}; kept there"
    return kept, new


def _without_losers(final: LessonSet) -> list[Lesson]:
    losers = {c.b.id if c.winner == c.a.id else c.a.id
              for c in final.conflicts if c.status == "resolved" and c.winner in (c.a.id, c.b.id)}
    return [lesson for lesson in final.lessons if lesson.id not in losers]


# --------------------------------------------------------------------------------------------
# Conflicts and routing


def _ledger(old: _Existing, final: LessonSet, records: Mapping[str, RuleRecord], present: set[str]) -> list[Conflict]:
    """Earlier conflicts, conflicts with the existing skill (re-detected each run) and this
    run's conflicts, later ones replacing earlier ones with the same id."""
    ledger = {c.id: c for c in old.provenance.conflicts if c.detected_by != "existing-skill"}
    candidates = [records[rid] for rid in sorted(records) if rid not in present]
    written = [records[rid] for rid in sorted(records) if rid in present]
    for conflict in _existing_skill_conflicts(candidates, written, old.workspace[SKILL_FILE]):
        ledger.setdefault(conflict.id, conflict)
    ledger.update({c.id: c for c in final.conflicts})
    return sorted(ledger.values(), key=lambda c: c.id)


def _existing_skill_conflicts(candidates: list[RuleRecord], written: list[RuleRecord], skill: Section) -> Iterable[Conflict]:
    """A new rule with the opposite polarity on the same subject as a rule already in SKILL.md:
    a managed rule (from provenance) or, as a cheap signal, a hand-written bullet that names the
    subject with opposite wording (never / avoid / don't against always / use)."""
    bullets = list(_hand_written_bullets(skill))
    by_subject: dict[str, list[RuleRecord]] = {}
    for other in written:  # in order, so each candidate meets the same rules in the same order
        by_subject.setdefault(other.subject.strip().casefold(), []).append(other)
    for record in candidates:
        subject = record.subject.strip()
        if not subject:
            continue
        for other in by_subject.get(subject.casefold(), ()):
            if other.polarity != record.polarity and _same_topic(other, record):
                yield _conflict(record_lesson(other), record_lesson(record), f"opposite advice on {subject!r} to rule {other.id}")
        if not bullets:
            continue
        mention = re.compile(rf"(?<![\w-]){re.escape(subject)}(?![\w-])", re.I) if len(subject) >= 3 else None
        for title, line in bullets:
            polarity = _line_polarity(line)
            if mention and polarity and polarity != record.polarity and mention.search(line):
                yield _conflict(_hand_written_lesson(title, line, polarity, record), record_lesson(record),
                                f"opposite advice on {subject!r} to a hand-written bullet in {title!r}")


def _same_topic(a: RuleRecord, b: RuleRecord) -> bool:
    """Opposite advice on one subject only conflicts when both rules talk about the same thing:
    similar title and condition wording, or the same signature family (as consolidation judges)."""
    words_a, words_b = (set(re.findall(r"\w+", f"{r.when} {r.title}".casefold())) for r in (a, b))
    overlap = len(words_a & words_b) / len(words_a | words_b) if words_a | words_b else 0.0
    return overlap >= 0.3 or a.signature.split(":")[:2] == b.signature.split(":")[:2]


def _hand_written_bullets(skill: Section) -> Iterable[tuple[str, str]]:
    for path, section in walk(skill):
        managed = {index for _, index in items(section)}
        for index, (line, code) in enumerate(zip(section.body, code_mask(section.body))):
            if not code and index not in managed and _BULLET.match(line):
                yield (path[-1] if path else "preamble"), _BULLET.sub("", line).strip()


def _line_polarity(line: str) -> Literal["do", "avoid"] | None:
    if _AVOID_WORDS.search(line):
        return "avoid"
    return "do" if _DO_WORDS.search(line) else None


_ACRONYMS = frozenset({"ai", "api", "aws", "ci", "cli", "css", "db", "gpu", "html", "http", "json", "llm", "mcp",
                       "pr", "qa", "sdk", "sql", "sre", "swe", "ui", "url", "xml", "yaml"})


def skill_title(name: str) -> str:
    """`swe-agent-lessons` -> `SWE agent lessons`: the H1 of a new skill."""
    words = [w.upper() if w in _ACRONYMS else w for w in name.split("-")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _hand_written_lesson(title: str, line: str, polarity: Literal["do", "avoid"], record: RuleRecord) -> Lesson:
    return Lesson.create(title=f"Hand-written rule in {title}", rule=line, when="as written in SKILL.md", kind=record.kind,
                         signature="hand-written:" + content_hash(line), polarity=polarity, subject=record.subject,
                         evidence=())


def _conflict(existing: Lesson, new: Lesson, reason: str) -> Conflict:
    return Conflict(id="C-" + content_hash(sorted([existing.signature, new.signature]))[:10], a=existing, b=new,
                    reason=reason, detected_by="existing-skill", status="needs-review")


def _route(records: Mapping[str, RuleRecord], conflicts: list[Conflict], rejections: Mapping[str, int],
           present: set[str], pinned: set[str], config: Config,
           task_of: Mapping[str, str]) -> tuple[dict[str, Placement], dict[str, str]]:
    """Placement of each rule to write, and the reason each other rule is withheld (support counts
    distinct tasks when `task_of` is given, see `RunInfo.trace_tasks`)."""
    held, lost = _conflict_sides(conflicts, present)
    targets: dict[str, Placement] = {}
    withheld: dict[str, str] = {}
    for rid, record in sorted(records.items()):
        if rid in pinned:
            continue
        reason = ("lost-conflict" if rid in lost else "needs-review" if rid in held
                  else "rejected" if rid in rejections and record.support <= rejections[rid] else None)
        if reason is None and _support(record, task_of) < config.consolidate.min_support:
            if config.consolidate.below_support == "reference":
                targets[rid] = "low"
                continue
            reason = "below-min-support"
        if reason:
            withheld[rid] = reason
        else:
            targets[rid] = "skill"
    return targets, withheld


def _support(record: RuleRecord, task_of: Mapping[str, str]) -> int:
    """Distinct tasks behind `record` when tasks are known (`task_of`), else distinct trajectories."""
    if not task_of:
        return record.support
    return len({task_of.get(row[0], row[0]) for row in evidence_rows(record.evidence)})


def _conflict_sides(conflicts: list[Conflict], present: set[str]) -> tuple[set[str], set[str]]:
    """Rules held back by needs-review conflicts (unless already written), and resolved losers."""
    held, lost = set(), set()
    for conflict in conflicts:
        side_a, side_b = rule_id(conflict.a.signature), rule_id(conflict.b.signature)
        if conflict.status == "needs-review":
            held |= {rid for rid in (side_a, side_b) if rid not in present}
        elif conflict.winner in (conflict.a.id, conflict.b.id):
            winner, loser = (side_a, side_b) if conflict.winner == conflict.a.id else (side_b, side_a)
            if loser != winner:
                lost.add(loser)
    return held, lost


# --------------------------------------------------------------------------------------------
# Rendering, versioning, provenance


def _finish(skill_dir: Path, old: _Existing, layout: Layout, records: Mapping[str, RuleRecord],
            withheld: Mapping[str, str], conflicts: list[Conflict], rejections: dict[str, int],
            config: Config, run: RunInfo, edited: tuple[set[str], dict[str, str]]) -> SkillBuild:
    workspace = layout.workspace
    frozen, edits = edited
    placed = _placed(workspace, {**old.provenance.rules, **records}, old.provenance.rules, frozen)
    description, derived = _description(config, old, placed.values())
    provenance = Provenance(
        skill=config.skill.name, run={k: v for k, v in asdict(run).items() if k != "trace_tasks"}, description=derived, rules=placed,
        withheld={rid: records[rid].model_copy(update={"reason": reason}) for rid, reason in sorted(withheld.items())},
        conflicts=tuple(conflicts), rejected=rejections, sections=tuple(sorted(layout.sections)),
        files=tuple(sorted(set(GENERATED_FILES) | layout.files)),
    )

    def render_files(version: str, changelog: str | None = None) -> FileSet:
        metadata = {VERSION_KEY: version, "trace2skill-source-digest": run.source_digest, "trace2skill-run": run.run_id}
        front = edit_frontmatter(old.front, {"name": config.skill.name, "description": description}, metadata)
        files = {name: render(root) for name, root in workspace.items() if name != SKILL_FILE}
        files[SKILL_FILE] = "".join(front) + render(workspace[SKILL_FILE])
        files[CONFLICTS_FILE] = render_conflicts(conflicts, rule_id)
        if changelog is not None:
            files[CHANGELOG_FILE] = changelog
        versioned = provenance.model_copy(update={"version": version})
        return FileSet(files, {PROVENANCE_FILE: lambda: iter_provenance(versioned)})  # encoded as it is written

    added, changed, removed, reversed_ = _rule_changes(old.provenance.rules, placed)
    changed = [rid for rid in changed if rid not in frozen]
    rules_written = sum(1 for key in item_locations({SKILL_FILE: workspace[SKILL_FILE]}) if key.startswith("rule:"))
    summary = dict(rules_written=rules_written, added=added, changed_rules=changed, removed=removed,
                   rejected=rejections, skill_dir=skill_dir, hand_edits=dict(edits))
    if old.version is not None and _content_key(render_files(old.version)) == _content_key(old.files):
        return SkillBuild(files=dict(old.files), version=old.version, previous_version=old.version, changed=False, **summary)
    version = next_version(old.version, added=added, removed=removed, reversed_=reversed_)
    titles = {rid: clean(record.title) for rid, record in {**old.provenance.rules, **placed}.items()}
    run_line = f"Run `{run.run_id}` ({run.mode}, model `{run.model}`, trace2skill {run.tool_version})."
    entry = changelog_entry(version, run_line, titles, added=added, changed=changed, removed=removed, reversed_=reversed_,
                            edited=edits)
    files = render_files(version, prepend_entry(old.files.get(CHANGELOG_FILE), entry))
    return SkillBuild(files=files, version=version, previous_version=old.version, changed=True,
                      provenance=provenance.model_copy(update={"version": version}), **summary)


def _placed(workspace: Workspace, known: Mapping[str, RuleRecord], before: Mapping[str, RuleRecord],
            frozen: set[str]) -> dict[str, RuleRecord]:
    """Records of the rules written in the files, with where they sit and their text; a rule
    people edited keeps the key of what trace2skill last wrote (`rendered`)."""
    placed = {}
    for rid, (file, path) in sorted(rule_locations(workspace).items()):
        if rid in known:
            text, prior = item_text(workspace, f"rule:{rid}"), before.get(rid)
            rendered = (prior.rendered or rendered_key(prior.text, prior.file)) if rid in frozen and prior else ""
            placed[rid] = known[rid].model_copy(update={
                "file": file, "section": " > ".join(path), "text": text, "reason": None, "rendered": rendered})
    return placed


def _rule_changes(before: Mapping[str, RuleRecord], after: Mapping[str, RuleRecord]) -> tuple[list[str], ...]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    common = sorted(set(after) & set(before))
    changed = [rid for rid in common if (after[rid].text, after[rid].file, after[rid].polarity)
               != (before[rid].text, before[rid].file, before[rid].polarity)]
    reversed_ = [rid for rid in changed if after[rid].polarity != before[rid].polarity]
    return added, changed, removed, reversed_


def _content_key(files: Mapping[str, str]) -> dict[str, str]:
    """The files minus what changes on every run without changing the skill: the run id and
    source digest in the metadata, the run block and first/last-seen runs in provenance, and the
    changelog (which only grows when the version does)."""
    key = {}
    for name, text in files.items():
        if name == CHANGELOG_FILE:
            continue
        if name == SKILL_FILE:
            text = "".join(line for line in split_lines(text) if not _VOLATILE_METADATA.match(line))
        elif name == PROVENANCE_FILE:
            text = _stable_provenance(text)
        key[name] = text
    return key


def _stable_provenance(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text
    data.pop("run", None)
    data.pop("gate", None)
    for table in ("rules", "withheld"):
        for record in (data.get(table) or {}).values():
            record.pop("first_seen_run", None)
            record.pop("last_seen_run", None)
    return json.dumps(data, sort_keys=True)


def _description(config: Config, old: _Existing, placed: Iterable[RuleRecord]) -> tuple[str, str | None]:
    """`(description, the derived one or None)`: configured, else hand-written, else derived."""
    if config.skill.description:
        return " ".join(config.skill.description.split()), None
    current = old.data.get("description")
    if isinstance(current, str) and current.strip() and current != old.provenance.description:
        return current, None
    derived = derive_description(placed)
    return derived, derived


def derive_description(records: Iterable[RuleRecord]) -> str:
    """What the skill does and when to use it, with the most-supported subjects as trigger words."""
    weight: dict[str, int] = {}
    for record in records:
        subject = clean(record.subject)
        if subject and len(subject) <= 40:
            weight[subject] = weight.get(subject, 0) + record.support
    subjects = sorted(weight, key=lambda s: (-weight[s], s))[:6]
    text = ("Lessons distilled from recorded agent runs: gotchas that made runs fail and procedures that worked. ")
    if subjects:
        listed = subjects[0] if len(subjects) == 1 else ", ".join(subjects[:-1]) + " or " + subjects[-1]
        text += f"Use when working with {listed}, or when a command, build or test fails the way it did in those runs."
    else:
        text += "Use when a command, build or test fails, or before starting a task like the recorded runs."
    text = re.sub(r"-{3,}", "-", re.sub(r"[<>]", "", text))
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "."
