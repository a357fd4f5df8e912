"""Reading, checking and writing a skill folder on disk.

The SKILL.md format itself (frontmatter, sections, markers, versions) lives in `skillfmt`;
this module reads, checks and writes folders of it. `validate_skill_dir` collects
every problem (skills-ref's plus our budget, link, heading and layout checks) instead of
stopping at the first. `write_skill_dir` stages the new folder next to the old one, validates
it there and swaps it in with renames, so a reader never sees a half-written folder and a
failed write leaves the old folder untouched; a write killed half way is completed or undone
by `recover_write` at the start of the next one. `validate_build` checks a build in memory
(nothing is staged, so `--dry-run` writes nothing). Every write and delete goes through
`fsguard`, and a skill folder holding a symlink is refused.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import skills_ref
from skills_ref.errors import ParseError
from skills_ref.parser import parse_frontmatter
from skills_ref.validator import validate_metadata

from .errors import ConfigError, RuleLookupError, SkillValidationError
from .fsguard import (crash_point, inside, no_symlinks, refuse_symlink, remove_file, safe_relative, write_bytes,
                      write_chunks)
from .skillfmt.frontmatter import frontmatter_data, split_frontmatter
from .types import JSONObject

if TYPE_CHECKING:
    from .rules import RuleRecord
from .skillfmt.sections import (REFERENCES_DIR, SKILL_FILE, code_mask, heading_problem, parse, same_title, split_lines,
                       walk)

MAX_BODY_LINES = 500
"""SKILL.md's body must stay under this many lines."""
MAX_BODY_TOKENS = 5000
"""At most this many tokens (cl100k_base, the same count the compressor uses) in SKILL.md's body."""
TOC_AFTER_LINES = 300
"""Reference files longer than this need a table of contents."""
MAX_DESCRIPTION = 1024
PROVENANCE_FILE = "provenance.json"
CHANGELOG_FILE = "CHANGELOG.md"
CONFLICTS_FILE = "CONFLICTS.md"
GENERATED_FILES = (SKILL_FILE, CHANGELOG_FILE, PROVENANCE_FILE, CONFLICTS_FILE)

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_CITED_PATH = re.compile(r"`(?:\./)?(references/[^`\s]+)`")
"""A reference file's path in backticks (`references/schemas.md`): skills often cite them so."""
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


# --------------------------------------------------------------------------------------------
# Reading


def read_skill_files(skill_dir: Path) -> dict[str, str]:
    """The text files trace2skill reads and may rewrite: the generated files and every
    `references/*.md`, decoded exactly (no newline translation). Missing files are absent.

    Raises:
        SkillValidationError: the folder holds a symlink (named), or a file is not UTF-8.
            Treating it as absent would overwrite a hand-written SKILL.md, so the run stops.
    """
    no_symlinks(skill_dir)
    files: dict[str, str] = {}
    candidates = [skill_dir / name for name in GENERATED_FILES]
    references = skill_dir / REFERENCES_DIR
    if references.is_dir():
        candidates += sorted(p for p in references.iterdir() if p.suffix == ".md" and p.is_file())
    for path in candidates:
        if path.is_file():
            name = path.relative_to(skill_dir).as_posix()
            try:
                files[name] = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SkillValidationError([f"{str(path)!r} is not UTF-8 ({exc.reason} at byte {exc.start}); "
                                            "convert it to UTF-8 so trace2skill can edit it without losing anything"]) from None
    return files


def body_size(body: str) -> tuple[int, int]:
    """`(lines, tokens)` of a SKILL.md body; tokens as `compress.count_tokens` counts them
    (cl100k_base), imported lazily so reading a skill does not load the tokenizer."""
    from .compress import count_tokens

    return len(split_lines(body)), count_tokens(body)


def body_overage(body: str) -> tuple[int, int]:
    """How many lines and tokens the body must lose to fit the budgets (0, 0 when it fits)."""
    lines, tokens = body_size(body)
    return max(0, lines - (MAX_BODY_LINES - 1)), max(0, tokens - MAX_BODY_TOKENS)


# --------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class _View:
    """What validation needs of a skill folder, read from disk or assembled from a build."""

    name: str
    """The folder's name (skills-ref compares it with the skill name)."""
    paths: frozenset[str]
    """Every regular file, relative POSIX path."""
    data: Mapping[str, bytes]
    """Bytes of SKILL.md (or skill.md) and the Markdown files directly in references/."""
    links: tuple[str, ...] = ()
    """Symlinks found (relative paths); a skill folder must hold none."""

    def exists(self, relative: str) -> bool:
        return relative == "." or relative in self.paths or any(p.startswith(relative + "/") for p in self.paths)

    def text(self, name: str) -> str:
        return self.data[name].decode("utf-8", errors="replace")


def _wanted(relative: str) -> bool:
    head, _, rest = relative.partition("/")
    return relative in (SKILL_FILE, "skill.md") or (head + "/" == REFERENCES_DIR and "/" not in rest and rest.endswith(".md"))


def _disk_view(path: Path, skip: frozenset[str] = frozenset()) -> _View:
    paths, data, found_links = set(), {}, []
    for top, dirs, names in os.walk(path):
        for name in [*dirs, *names]:
            full = Path(top, name)
            relative = full.relative_to(path).as_posix()
            if full.is_symlink():
                found_links.append(relative)
            elif name in names and full.is_file() and relative not in skip:
                paths.add(relative)
                if _wanted(relative):
                    data[relative] = full.read_bytes()
    return _View(path.name, frozenset(paths), data, tuple(sorted(found_links)))


def validate_skill_dir(path: Path) -> list[str]:
    """Every problem with a skill folder, errors and warnings alike (see `check_skill_dir`).

    trace2skill holds what it writes to both: a skill it writes fits every recommended limit.

    Returns:
        Problem descriptions; empty when the folder is valid.
    """
    errors, warnings = check_skill_dir(path)
    return errors + warnings


def check_skill_dir(path: Path) -> tuple[list[str], list[str]]:
    """`(errors, warnings)` for a skill folder.

    Errors break the Agent Skills spec or make the skill unusable: skills-ref's checks, metadata
    values that are not strings, `<` or `>` in the description, relative links that do not
    resolve or leave the folder, a file that is not UTF-8. Warnings are recommended limits and
    house style: body under 500 lines and at most 5,000 tokens, reference files over 300 lines
    start with a table of contents, every file under references/ sits directly there and is
    cited from SKILL.md (a Markdown link, or its path in backticks), no empty, generic or
    duplicate sibling heading.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return ([f"{str(path)!r} is a symbolic link"] if path.is_symlink() else list(skills_ref.validate(path))), []
    return _view_problems(_disk_view(path))


class FileSet(Mapping[str, str]):
    """A build's files by relative path: texts held in memory, and files too large to hold
    (provenance.json, whose evidence grows with the corpus) as a source of their text in
    pieces. Reading such a file by name joins its pieces (small builds, tests, the gate); the
    writer (`write_skill_dir`) streams them to disk and validation never reads them, so a large
    run never holds that text."""

    def __init__(self, texts: Mapping[str, str], streamed: Mapping[str, Callable[[], Iterator[str]]] | None = None):
        self.texts = dict(texts)
        self.streamed = {name: source for name, source in (streamed or {}).items() if name not in self.texts}

    def __getitem__(self, name: str) -> str:
        if name in self.streamed:
            return "".join(self.streamed[name]())
        return self.texts[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self.texts, *self.streamed])

    def __len__(self) -> int:
        return len(self.texts) + len(self.streamed)

    def __contains__(self, name: object) -> bool:
        return name in self.texts or name in self.streamed

    def __repr__(self) -> str:
        return f"FileSet({sorted(self)!r})"

    def chunks(self, name: str) -> Iterator[str]:
        """The text of `name` in pieces (one piece for a text held whole)."""
        return self.streamed[name]() if name in self.streamed else iter((self.texts[name],))


def encoded_chunks(files: Mapping[str, str], name: str, size: int = 1 << 20) -> Iterator[bytes]:
    """`files[name]` as UTF-8, in pieces of about `size` characters when `files` streams it.

    Raises:
        SkillValidationError: the text holds a character UTF-8 cannot encode (a lone surrogate).
    """
    pieces = files.chunks(name) if isinstance(files, FileSet) else iter((files[name],))
    pending: list[str] = []
    held = 0
    try:
        for piece in pieces:
            pending.append(piece)
            held += len(piece)
            if held >= size:
                yield "".join(pending).encode("utf-8")
                pending, held = [], 0
        yield "".join(pending).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SkillValidationError([f"{name}: cannot be written as UTF-8 ({exc.reason})"]) from None


class BuiltFiles(Protocol):
    """What validation needs of a build (`author.SkillBuild`): its files by relative path."""

    @property
    def files(self) -> Mapping[str, str]: ...


def validate_build(build: BuiltFiles, name: str, existing: Path | None = None) -> list[str]:
    """Validate a build's files as they would be written, in memory (nothing is staged).

    Returns errors and warnings together: a skill trace2skill writes fits every recommended limit.

    Args:
        build: a `SkillBuild` (anything with a `files` mapping).
        name: the skill name, the folder's name as written (skills-ref compares them).
        existing: the current skill folder, whose files that are not ours count too, as
            `write_skill_dir` would keep them (so links to scripts/ or hand-written references
            resolve). Defaults to the folder the build was authored against (`build.skill_dir`).
    """
    existing = existing if existing is not None else getattr(build, "skill_dir", None)
    base = _View(name, frozenset(), {})
    if existing is not None and Path(existing).is_dir():
        stale = frozenset(n for n in _generated_by_us(Path(existing)) if n not in build.files)
        base = _disk_view(Path(existing), stale)
    for relative in build.files:
        safe_relative(relative)
    encoded = {k: build.files[k].encode("utf-8") for k in build.files if _wanted(k)}  # only these are read: no provenance.json
    view = _View(name, base.paths | frozenset(build.files), {**base.data, **encoded}, base.links)
    errors, warnings = _view_problems(view)
    return errors + warnings


def _view_problems(view: _View) -> tuple[list[str], list[str]]:
    """`(errors, warnings)` for a skill folder as `view` sees it (see `check_skill_dir`)."""
    errors = [f"{link}: symbolic links are not allowed in a skill folder" for link in view.links]
    errors += _spec_problems(view)
    if SKILL_FILE not in view.data:
        return errors, []
    front, body = split_frontmatter(view.text(SKILL_FILE))
    ours = _frontmatter_problems(front)
    if any("not valid block-style YAML" in p for p in ours):  # the same fault, said in one line
        errors = [p for p in errors if not p.startswith("Invalid YAML in frontmatter")]
    errors += ours
    warnings = []
    lines, tokens = body_size(body)
    if lines >= MAX_BODY_LINES:
        warnings.append(f"SKILL.md body has {lines} lines; keep it under {MAX_BODY_LINES} (move detail to references/)")
    if tokens > MAX_BODY_TOKENS:
        warnings.append(f"SKILL.md body is {tokens} tokens; keep it at or under {MAX_BODY_TOKENS} (move detail to references/)")
    documents = {SKILL_FILE: body}
    documents.update({name: view.text(name) for name in sorted(view.data) if name.startswith(REFERENCES_DIR)})
    for name, text in documents.items():
        warnings += [f"{name}: {p}" for p in heading_problems(text)]
        errors += [f"{name}: {p}" for p in _link_problems(view, name, text)]
        if name != SKILL_FILE and len(split_lines(text)) > TOC_AFTER_LINES and not has_toc(text):
            warnings.append(f"{name}: over {TOC_AFTER_LINES} lines without a table of contents")
    return errors, warnings + _reference_layout_problems(view, body)


def _spec_problems(view: _View) -> list[str]:
    """skills-ref's `validate`, on the view: SKILL.md present, frontmatter parsed, metadata valid."""
    raw = view.data.get(SKILL_FILE, view.data.get("skill.md"))
    if raw is None:
        return ["Missing required file: SKILL.md"]
    try:
        content = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        return [f"SKILL.md is not UTF-8 ({exc.reason} at byte {exc.start})"]
    try:
        metadata, _ = parse_frontmatter(content)
    except ParseError as exc:
        return [str(exc)]
    return list(validate_metadata(metadata, Path(view.name)))


def heading_problems(text: str) -> list[str]:
    """Empty, generic and duplicate sibling headings in one Markdown document."""
    problems = []
    for path, section in walk(parse(text)):
        if path:
            problem = heading_problem(section.title)
            if problem:
                problems.append(f"{problem} at {' > '.join(path)!r}")
        seen: list[str] = []
        for child in section.children:
            if child.title.strip() and any(same_title(child.title, other) for other in seen):
                problems.append(f"duplicate heading {child.title!r} under {' > '.join(path) or 'the top level'!r}")
            seen.append(child.title)
    return problems


def has_toc(text: str) -> bool:
    """A table of contents: in-page links (`](#...)`) or a Contents heading near the top."""
    head = split_lines(text)[:60]
    return any("](#" in line or re.match(r"^#+\s+(table of )?contents\s*$", line.strip(), re.I) for line in head)


def links(text: str) -> list[str]:
    """Link targets in Markdown text, ignoring fenced and inline code."""
    found = []
    for line, code in zip(split_lines(text), code_mask(split_lines(text))):
        if code:
            continue
        line = _INLINE_CODE.sub("", line)
        found += _LINK.findall(line)
        definition = _LINK_DEFINITION.match(line)
        if definition:
            found.append(definition.group(1))
    return found


def _frontmatter_problems(front: list[str]) -> list[str]:
    if not front:
        return []
    try:
        data = frontmatter_data(front)
    except SkillValidationError as exc:
        return list(exc.problems)
    problems = []
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        problems.append("frontmatter `metadata` must be a map of strings")
    for key, value in (metadata or {}).items() if isinstance(metadata, dict) else ():
        if not isinstance(value, str):
            problems.append(f"metadata value for {key!r} must be a string, not a nested structure")
    description = data.get("description")
    if isinstance(description, str) and re.search(r"[<>]", description):
        problems.append("description must not contain '<' or '>'")
    return problems


def _target(base: str, link: str) -> str:
    """A link's target relative to the folder root, normalised (`../x` when it leaves)."""
    relative = urllib.parse.unquote(link.split("#", 1)[0].split("?", 1)[0])
    if relative.startswith("/"):
        return "../" + relative
    return posixpath.normpath(posixpath.join(base, relative)) if relative else ""


def _link_problems(view: _View, name: str, text: str) -> list[str]:
    problems = []
    base = posixpath.dirname(name)
    for link in links(text):
        if link.startswith("#") or _SCHEME.match(link):
            continue
        target = _target(base, link)
        if not target:
            continue
        if target == ".." or target.startswith("../"):
            problems.append(f"link {link!r} points outside the skill folder")
        elif not view.exists(target):
            problems.append(f"link {link!r} does not resolve")
    return problems


def _reference_layout_problems(view: _View, body: str) -> list[str]:
    cited = [t for t in links(body) if not _SCHEME.match(t)] + _CITED_PATH.findall(body)
    linked = {_target("", t) for t in cited}
    problems = []
    for relative in sorted(p for p in view.paths if p.startswith(REFERENCES_DIR)):
        if "/" in relative[len(REFERENCES_DIR):]:
            problems.append(f"{relative}: references must sit directly in references/ (one level deep)")
        elif relative not in linked:
            problems.append(f"{relative}: orphan reference file; link it from SKILL.md or remove it")
    return problems


# --------------------------------------------------------------------------------------------
# Writing


def check_skill_target(path: Path) -> None:
    """Fail before any work when the skill folder could not be written at the end of the run:
    the nearest existing ancestor must be a writable folder (a skill folder may not exist yet).

    Raises:
        ConfigError: that ancestor is a file, or a folder this user cannot write to.
    """
    existing = next(p for p in [Path(path), *Path(path).absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot write the skill folder {str(path)!r}: {str(existing)!r} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the skill folder {str(path)!r}: {str(existing)!r} is not writable; choose another --out")


WRITE_SUFFIX = ".trace2skill-write"
"""`.<skill>.trace2skill-write`, beside the skill folder: the one staging folder of a write."""
READY_MARK = "READY"
"""Written in the staging folder once the new version is complete and valid."""


def staging_dir(path: Path) -> Path:
    """Where `write_skill_dir` stages the new version of the skill folder `path`."""
    return Path(path).parent / f".{Path(path).name}{WRITE_SUFFIX}"


def write_skill_dir(path: Path, files: Mapping[str, str], *, validate: bool = True) -> None:
    """Replace the skill folder with `files`, never leaving a half-written folder behind.

    The new folder is staged in `staging_dir(path)`: files of the old folder that are not ours
    (scripts/, assets/, hand-written references; "ours" = the files the old provenance.json
    lists) are copied over, then `files` are written. When `validate` is true the staged folder
    must pass `validate_skill_dir`. A READY mark is written, then the old folder is renamed
    away and the staged one renamed into place. A process killed at any point leaves the old
    folder whole, the new one whole, or (between the renames) both in the staging folder, and
    `recover_write` (run first here, and by distil before it reads the skill) finishes the job.
    The caller holds the skill lock (`pipeline.skill_lock`).

    Raises:
        SkillValidationError: the staged folder is invalid, a path escapes it, or the folder
            holds a symlink; nothing changed.
        OSError: the filesystem refused; the old folder is restored.
    """
    path = Path(path)
    for name in files:
        safe_relative(name)
    recover_write(path)
    no_symlinks(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = staging_dir(path)
    work.mkdir()
    try:
        staged = work / path.name
        _stage(staged, files, path if path.is_dir() else None)
        problems = validate_skill_dir(staged) if validate else []
        if problems:
            raise SkillValidationError(problems)
        crash_point("staged")
        write_bytes(work, READY_MARK, b"")
        _swap(staged, path, work / "previous")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recover_write(path: Path) -> bool:
    """Finish or undo a write of the skill folder `path` that was killed half way.

    With the folder missing, a READY staged folder is moved into place (the kill came between
    the two renames), else the previous folder is put back; then the staging folder is removed.

    Returns:
        True when there was something to clean up.
    """
    path = Path(path)
    work = staging_dir(path)
    refuse_symlink(work)
    if not work.is_dir():
        return False
    staged, previous = work / path.name, work / "previous"
    if not os.path.lexists(path):
        if (work / READY_MARK).is_file() and staged.is_dir():
            os.rename(staged, path)
        elif previous.is_dir():
            os.rename(previous, path)
    shutil.rmtree(work)
    return True


def _stage(staged: Path, files: Mapping[str, str], old: Path | None) -> None:
    if old is not None:
        shutil.copytree(old, staged, symlinks=True)
        for name in _generated_by_us(old):
            if name not in files:
                remove_file(staged, name)
    staged.mkdir(parents=True, exist_ok=True)
    for name in sorted(files):
        write_chunks(staged, name, encoded_chunks(files, name))


def _generated_by_us(folder: Path) -> list[str]:
    """The files the folder's provenance.json says trace2skill generated, each checked to be
    a plain relative path inside the folder (a hostile list must never aim a delete outside).

    Raises:
        SkillValidationError: an entry is absolute or climbs out with `..`.
    """
    try:
        listed = json.loads(inside(folder, PROVENANCE_FILE).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    names = [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []
    for name in names:
        safe_relative(name, f"{PROVENANCE_FILE} lists the file")
    return names


def _swap(staged: Path, path: Path, backup: Path) -> None:
    if not path.exists():
        os.rename(staged, path)
        crash_point("after-rename")
        return
    os.rename(path, backup)
    crash_point("after-first-rename")
    try:
        os.rename(staged, path)
    except OSError:
        os.rename(backup, path)
        raise
    crash_point("after-second-rename")


# --------------------------------------------------------------------------------------------
# Explaining


def explain_rule(skill_dir: Path, rule: str) -> JSONObject:
    """The evidence behind one rule, from the skill's provenance.json.

    Args:
        skill_dir: a folder written by trace2skill.
        rule: a rule id (`r-1a2b3c4d`) or a case-insensitive substring of exactly one title.

    Returns:
        id, title, rule, when, status (`in skill` or why it is withheld), file, section,
        support counts, trace ids, lesson ids, evidence (trace id, outcome, steps, quote),
        first and last run that saw it.

    Raises:
        RuleLookupError: no provenance.json, or no rule / several rules match.
    """
    from .provenance import load_provenance

    source = inside(Path(skill_dir), PROVENANCE_FILE)
    if not source.is_file():
        raise RuleLookupError(f"no {PROVENANCE_FILE} in {str(skill_dir)!r}; was this skill written by trace2skill?")
    provenance = load_provenance(source.read_bytes().decode("utf-8", errors="replace"))
    records = {**{rid: (rec, "withheld: " + (rec.reason or "")) for rid, rec in provenance.withheld.items()},
               **{rid: (rec, "in skill") for rid, rec in provenance.rules.items()}}
    wanted = rule.strip().lower()
    if wanted in records:
        return _explanation(*records[wanted])
    needle = rule.casefold().strip()
    matches = sorted(rid for rid, (rec, _) in records.items() if needle and needle in rec.title.casefold())
    if len(matches) == 1:
        return _explanation(*records[matches[0]])
    if not matches:
        raise RuleLookupError(f"no rule {rule!r} in {str(skill_dir)!r}; give a rule id (r-...) or part of a title")
    listed = "; ".join(f"{rid} {records[rid][0].title!r}" for rid in matches[:8])
    raise RuleLookupError(f"{rule!r} matches {len(matches)} rules ({listed}); give the rule id")


def _explanation(record: RuleRecord, status: str) -> JSONObject:
    return {
        "id": record.id, "title": record.title, "rule": record.rule, "when": record.when, "kind": record.kind,
        "status": status, "file": record.file, "section": record.section, "text": record.text,
        "support": record.support, "failing_support": record.failing_support,
        "succeeding_support": record.succeeding_support, "trace_ids": list(record.trace_ids),
        "lesson_ids": list(record.lesson_ids), "signature": record.signature,
        "evidence": [{"trace_id": e.trace_id, "outcome": e.outcome, "steps": list(e.steps), "quote": e.quote}
                     for e in record.evidence],
        "first_seen_run": record.first_seen_run, "last_seen_run": record.last_seen_run,
    }
