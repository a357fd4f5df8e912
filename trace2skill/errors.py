"""Exceptions raised by the core.

Library code raises these and lets them propagate; only `trace2skill.cli` turns them into a
message and an exit code, so every error class carries the exit code a user should see.
"""

from __future__ import annotations


class Trace2SkillError(Exception):
    """Root of every error trace2skill raises on purpose."""

    exit_code = 1


class ConfigError(Trace2SkillError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = 78


class NoInputError(Trace2SkillError):
    """No trajectory could be read from the given paths."""

    exit_code = 66


class NothingLearned(Trace2SkillError):
    """The trajectories were read and analysed but taught nothing that recurs; nothing was written.

    Exit 3 (partial): the run did its work, and more or labelled trajectories can change the answer.
    `notes` (the fidelity summary) and `warnings` (input files not read in full) carry what the
    run would have reported beside the skill, so they are not lost with it.
    """

    exit_code = 3

    def __init__(self, reason: str, warnings: tuple[str, ...] = (), notes: tuple[str, ...] = ()):
        self.warnings = warnings
        self.notes = notes
        super().__init__(reason)


class TraceFormatError(Trace2SkillError):
    """A file or record is not a trajectory in a format we can read."""

    exit_code = 65


class LLMError(Trace2SkillError):
    """The model provider failed after retries, or answered with something unusable."""

    exit_code = 69


class ProviderUnavailable(LLMError):
    """The provider could not be reached or failed (connection, timeout, 5xx); retried with back-off."""

    exit_code = 69


class RateLimited(ProviderUnavailable):
    """The provider kept refusing for rate limits; a later rerun can succeed."""

    exit_code = 75

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ProviderRejected(LLMError):
    """The provider refused the request as configured (key, permission, model, parameters).

    Never retried: the same request would be refused again. The message carries the
    provider's whole text and what to set.
    """

    exit_code = 78


class ContextTooLong(ProviderRejected):
    """The prompt exceeds the model's context window; the analyst shrinks the trajectory once."""


class LLMRequestsBlocked(LLMError):
    """A real model call was attempted while requests are blocked (the test suite)."""

    exit_code = 1


class LessonParseError(LLMError):
    """The model's reply did not validate against the output schema.

    Deliberately not a `ValueError`, so retry policies can treat it as retryable.
    """


class SkillValidationError(Trace2SkillError):
    """A rendered skill breaks the Agent Skills spec or our own checks."""

    exit_code = 65

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class EditError(Trace2SkillError):
    """An edit to the skill's section tree could not be applied."""

    exit_code = 65


class BudgetExceeded(Trace2SkillError):
    """A hard cost or call cap was reached; the run stops and stays resumable."""

    exit_code = 75


class BudgetRefused(BudgetExceeded):
    """The quote is above the cap or needs approval: nothing was sent, and rerunning the same
    command cannot succeed, so this is a configuration error, not a temporary one."""

    exit_code = 78


class Interrupted(Trace2SkillError):
    """The run was drained (SIGTERM) or interrupted; rerunning the command resumes it."""

    exit_code = 75


class LockHeld(Trace2SkillError):
    """Another run holds the lock for this skill target."""

    exit_code = 75


class StateError(Trace2SkillError):
    """The refresh state file exists but cannot be read or is damaged."""

    exit_code = 65


class GateError(Trace2SkillError):
    """The gate's benchmark command failed or did not print a number on its last line."""

    exit_code = 1


class PublishError(Trace2SkillError):
    """Committing, pushing or opening a pull request failed."""

    exit_code = 1


class RuleLookupError(Trace2SkillError):
    """`explain` found no rule, or several, for the given id or title (or no provenance file)."""

    exit_code = 66


class InstallConflict(Trace2SkillError):
    """`install` found a different skill of the same name where it would put the skill."""

    exit_code = 1
