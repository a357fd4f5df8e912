"""The scheduled refresh's memory: `<state_dir>/state.json`, and the one-run-at-a-time lock.

Per skill, the state records the current version, which trajectories (by content hash) went
into which version, the watermark of the last successful refresh, and the rules reviewers
rejected with the support they had then. Invariants:
- The watermark and trajectory digests move only through `RefreshState.with_success`, which
  the refresh calls after the skill is committed (and pushed, when publishing to a remote):
  a run that dies earlier leaves them untouched, so its trajectories are read again.
- The file is replaced atomically (temporary file in the same folder, fsync, `os.replace`), so
  a crash or a concurrent reader never sees half a file.
- `run_lock` fails at once, never waits: a scheduler starting a second run while one is
  still going must get exit code 75, not a queue of blocked processes.
The models are frozen; every update returns a new `RefreshState` to be saved explicitly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import StateError

STATE_FILE = "state.json"
LOCK_FILE = "run.lock"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class RejectedRule(_Model):
    support: int
    """Trajectories behind the rule when it was rejected; re-proposal needs more than this."""
    title: str = ""
    """The rule's title then, for people reading the state file."""
    rejected_at: datetime
    """When the removal was noticed."""


class PendingPublish(_Model):
    """A change written and (about to be) committed whose push or pull request has not been
    confirmed; the next refresh finishes it before anything else, and only then counts its
    trajectories as used."""

    run_id: str
    version: str
    branch: str
    """The bot branch the change is committed on."""
    tag: str
    digests: tuple[str, ...] = ()
    """Trajectories folded into this change."""
    title: str = ""
    body: str = ""
    labels: tuple[str, ...] = ()


class SkillState(_Model):
    version: str | None = None
    """The skill's version after the last successful refresh."""
    trace_digests: dict[str, str] = Field(default_factory=dict)
    """Trajectory content hash -> the skill version it went into."""
    last_success_at: datetime | None = None
    """Watermark: when the last successful refresh finished."""
    last_run_id: str | None = None
    """Run id of the last successful refresh."""
    last_trace_cursor: str | None = None
    """Newest trajectory timestamp (or other cursor) the last successful refresh read."""
    rejected: dict[str, RejectedRule] = Field(default_factory=dict)
    """Rule id -> why it must not come back unless new evidence outnumbers the old."""
    pending: PendingPublish | None = None
    """A publish a killed or failed run left unfinished."""
    checkout: str | None = None
    """The branch checked out before the last refresh took the bot branch, to return to after a kill."""

    def new_digests(self, digests: Iterable[str]) -> list[str]:
        """The digests not yet consumed by any version, in the given order, without repeats."""
        return [d for d in dict.fromkeys(digests) if d not in self.trace_digests]


class Rejection(Protocol):
    """Anything that names a removed rule and its support (e.g. `publish.RemovedRule`)."""

    rule_id: str
    title: str
    support: int


class RefreshState(_Model):
    format: Literal[1] = 1
    """Version of this file's layout."""
    skills: dict[str, SkillState] = Field(default_factory=dict)
    """Skill name -> its refresh state."""

    def skill(self, name: str) -> SkillState:
        """The state of skill `name` (empty when never refreshed)."""
        return self.skills.get(name) or SkillState()

    def with_success(
        self,
        name: str,
        *,
        version: str,
        digests: Iterable[str],
        run_id: str,
        at: datetime | None = None,
        trace_cursor: str | None = None,
    ) -> RefreshState:
        """Advance the watermark and record `digests` as part of `version`.

        Call only after the skill is committed (and pushed, when there is a remote).
        """
        current = self.skill(name)
        update = {
            "version": version,
            "pending": None,
            "trace_digests": {**current.trace_digests, **{d: version for d in digests}},
            "last_success_at": at or datetime.now(timezone.utc),
            "last_run_id": run_id,
            "last_trace_cursor": trace_cursor if trace_cursor is not None else current.last_trace_cursor,
        }
        return self._replace(name, current.model_copy(update=update))

    def with_rejections(self, name: str, removed: Iterable[Rejection], at: datetime | None = None) -> RefreshState:
        """Remember rules people removed; a rule removed again keeps its highest support."""
        current = self.skill(name)
        rejected = dict(current.rejected)
        when = at or datetime.now(timezone.utc)
        for rule in removed:
            previous = rejected.get(rule.rule_id)
            support = max(rule.support, previous.support if previous else 0)
            rejected[rule.rule_id] = RejectedRule(support=support, title=rule.title, rejected_at=previous.rejected_at if previous else when)
        return self._replace(name, current.model_copy(update={"rejected": rejected}))

    def with_pending(self, name: str, pending: PendingPublish | None) -> RefreshState:
        """Record (or, with None, drop) the publish in flight."""
        return self._replace(name, self.skill(name).model_copy(update={"pending": pending}))

    def with_checkout(self, name: str, branch: str | None) -> RefreshState:
        """Remember the branch to go back to if this run is killed on the bot branch."""
        return self._replace(name, self.skill(name).model_copy(update={"checkout": branch}))

    def without_versions_after(self, name: str, version: tuple[int, int, int]) -> RefreshState:
        """Forget the trajectories folded into versions after `version` (a rollback took their
        evidence out of the skill), so the next refresh reads them again."""
        from .skillfmt.versions import parse_semver

        current = self.skill(name)
        kept = {d: v for d, v in current.trace_digests.items() if (parse_semver(v) or (0, 0, 0)) <= version}
        return self._replace(name, current.model_copy(update={"trace_digests": kept}))

    def _replace(self, name: str, skill: SkillState) -> RefreshState:
        return self.model_copy(update={"skills": {**self.skills, name: skill}})


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: Path) -> RefreshState:
    """Read `<state_dir>/state.json`; a missing file is an empty state.

    Raises:
        StateError: the file exists but is not a valid state file.
    """
    path = state_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RefreshState()
    except OSError as exc:
        raise StateError(f"cannot read state file {str(path)!r}: {exc}") from None
    try:
        return RefreshState.model_validate_json(text)
    except ValidationError as exc:
        raise StateError(
            f"state file {str(path)!r} is damaged ({exc.error_count()} problems); "
            "fix or delete it (the next refresh then re-reads every trajectory)"
        ) from None


def save_state(state_dir: Path, state: RefreshState) -> Path:
    """Write the state atomically; returns the file's path."""
    from .fsguard import inside

    path = inside(Path(state_dir), STATE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def run_lock(state_dir: Path) -> Iterator[Path]:
    """Hold `<state_dir>/run.lock` for the duration of a run.

    Raises:
        LockHeld: another process holds the lock (raised at once, without waiting).
    """
    from .fsguard import exclusive

    path = Path(state_dir) / LOCK_FILE
    with exclusive(path, f"another trace2skill run holds {str(path)!r}; try again when it has finished"):
        yield path
