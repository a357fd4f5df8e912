"""Strip secrets from trajectory text before any other stage can see it.

The ingest core runs every trace through a `Redactor` before it leaves ingest, so prompts,
caches, lessons, skill files, logs and PR text are built from redacted text only. Each match
is replaced by a typed placeholder such as `[REDACTED:openai-key]` and counted per type, so
the run summary can say what was removed without repeating it.

Built-in types: OpenAI, Anthropic, AWS access key ids (`AKIA`/`ASIA`, the credential kinds;
`AROA`-style ids name roles and users and are not secrets) and `aws_secret_access_key=` values,
GitHub, Slack and Google API tokens, JWTs, PEM private key blocks (also when cut off before
the END line), passwords in URLs (`scheme://user:pass@host`) and `Bearer` tokens; e-mail
addresses when `config.emails` is set; and every regular expression in `config.patterns`.
More specific types run first (an Anthropic key also looks like an OpenAI one). Each rule is
guarded by a cheap gate (substrings, or a looser pattern starting with a literal) that is
true wherever the rule can match, even in JSON-escaped text; a whole trace is checked once on
its JSON dump, so a clean trace costs a dozen fast scans and no field-by-field walk.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import RedactConfig
from .errors import ConfigError
from .types import Skip, Trace


def _contains(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(needle in text for needle in needles)


def _search(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(pattern)
    return lambda text: compiled.search(text) is not None


def _always(text: str) -> bool:
    return True


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    gate: Callable[[str], bool] = _always
    """A cheap test (substrings, or a pattern starting with a literal) that is true wherever
    `pattern` matches, also in the JSON dump of a trace; the pattern runs only when it is."""
    group: int = 0
    """The group replaced; the rest of the match (a key name, a scheme) is kept."""


_BUILTIN = (
    _Rule(
        "private-key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"
            r"(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|(?:(?:\s|\\n)*[A-Za-z0-9+/=]{16,})*)"
        ),
        _contains("PRIVATE KEY"),
    ),
    _Rule("anthropic-key", re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_\-]{20,}"), _contains("sk-ant-")),
    _Rule(
        "openai-key",
        re.compile(r"(?<![\w-])sk-(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}"),
        _search(r"sk-[A-Za-z0-9_\-]{20}"),
    ),
    _Rule("aws-access-key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), _contains("AKIA", "ASIA")),
    _Rule(
        "aws-secret-key",
        re.compile(r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
        _contains("ecret", "ECRET"),
        group=1,
    ),
    _Rule(
        "github-token",
        re.compile(r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        _search(r"gh(?:[pousr]|ithub_pat)_"),
    ),
    _Rule("slack-token", re.compile(r"(?<!\w)xox[baprs]-[A-Za-z0-9-]{10,}"), _contains("xox")),
    _Rule("google-api-key", re.compile(r"(?<!\w)AIza[0-9A-Za-z_\-]{35}"), _contains("AIza")),
    _Rule(
        "jwt",
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        _search(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ"),
    ),
    _Rule(
        "url-password",
        re.compile(r"://[^\s:/@\"'<>]+:([^\s@/\"'<>\[\]]+)@"),
        _search(r"://[^\s:/@\"'<>]+:[^\s@/\"'<>\[\]]+@"),
        group=1,
    ),
    _Rule("bearer-token", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{16,}=*)"), _contains("earer", "EARER"), group=1),
)
_EMAIL = _Rule(
    "email",
    re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
    _contains("@"),
)
_SHORTEST_SECRET = 8


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


class Redactor:
    """Replaces secrets with typed placeholders and counts them (per instance, not globally)."""

    def __init__(self, config: RedactConfig | None = None):
        config = config or RedactConfig()
        rules = list(_BUILTIN)
        if config.emails:
            rules.append(_EMAIL)
        for n, source in enumerate(config.patterns):
            try:
                rules.append(_Rule("custom", re.compile(source)))
            except re.error as exc:
                raise ConfigError(f"redact.patterns[{n}] {source!r} is not a valid regular expression: {exc}") from None
        self._rules = tuple(rules)
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> dict[str, int]:
        """How many secrets of each type were replaced so far, sorted by type."""
        return dict(sorted(self._counts.items()))

    def redact_text(self, text: str) -> str:
        """`text` with every secret replaced by its placeholder."""
        if len(text) < _SHORTEST_SECRET:
            return text
        for rule in self._rules:
            if rule.gate(text):
                text = rule.pattern.sub(lambda m, r=rule: self._replace(m, r), text)
        return text

    def _replace(self, match: re.Match[str], rule: _Rule) -> str:
        self._counts[rule.kind] += 1
        if rule.group == 0 or match.group(rule.group) is None:
            return placeholder(rule.kind)
        start, end = match.span(rule.group)
        whole = match.group(0)
        offset = match.start(0)
        return whole[: start - offset] + placeholder(rule.kind) + whole[end - offset :]

    def redact_value(self, value: Any) -> Any:
        """Any JSON-like value with every string inside it redacted (dict keys are kept)."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v) for v in value]
        return value

    def redact_trace(self, trace: Trace) -> Trace:
        """The trace with secrets removed from every text field; `source` is left alone.

        One scan of the trace's JSON decides whether any rule could match at all; a clean
        trace (the common case) is returned as the same object without a field-by-field walk.
        """
        dump = trace.model_dump_json(exclude={"source"})
        if not any(rule.gate(dump) for rule in self._rules):
            return trace
        before = sum(self._counts.values())
        cleaned = self.redact_value(trace.model_dump(exclude={"source"}))
        if sum(self._counts.values()) == before:
            return trace
        return Trace.model_validate({**cleaned, "source": trace.source})

    def redact_skip(self, skip: Skip) -> Skip:
        reason = self.redact_text(skip.reason)
        return skip if reason == skip.reason else skip.model_copy(update={"reason": reason})
