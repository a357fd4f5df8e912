"""Strip secrets from trajectory text before any other stage can see it.

The ingest core runs every trace through a `Redactor` before it leaves ingest, so prompts,
caches, checkpoints, lessons, skill files, logs and PR text are built from redacted text only.
Each match is replaced by a typed placeholder such as `[REDACTED:openai-key]` and counted per
type, so the run summary can say what was removed without repeating it.

Three families of rules, written for this project after reading the public rule sets of
gitleaks and detect-secrets (no rule text is copied):

- **Tokens with a recognisable shape** (`_TOKENS`): a fixed prefix or layout, e.g. OpenAI,
  Anthropic, Stripe, AWS, GitHub, GitLab, Slack (tokens and webhook URLs), Google, npm, Hugging
  Face, PyPI, SendGrid, Twilio, Azure, DigitalOcean, Shopify and two dozen more, JWTs and PEM
  private keys (also JSON-escaped or cut off before the END line).
- **Secrets recognised by their context** (`_CONTEXT`): `Authorization:` header values,
  `Basic` credentials, `Bearer` tokens (short ones too, when they hold a digit), passwords in
  URLs, `mysql -pSECRET`, `curl -u user:pass`, `sshpass -p`, a GCP `private_key_id`.
- **Assignments to a secret-looking name** (`_ASSIGNMENT_WORDS`): `.env` and shell lines
  (`DATABASE_PASSWORD=...`, `SECRET_KEY=...`, `API_TOKEN=...`), JSON/YAML/dict entries
  (`"SecretAccessKey": "..."`, `x-api-key: ...`), keyword arguments with a string literal and
  command-line flags (`--password ...`). Only the value is replaced. A lower-case or camelCase
  name (code) needs a value that holds a digit or is at least 16 characters long, and a bare
  value followed by `(`, `.` or `[` is code, not a secret; an upper-case name (configuration)
  takes any value. Placeholders (`$VAR`, `{name}`, `<token>`, `None`, `true`) are kept.

E-mail addresses are replaced when `config.emails` is set, and every regular expression in
`config.patterns` is applied.

Speed: this runs on every byte of every trace. Each rule has literal keywords, one of which
occurs wherever the rule can match. A trace is gated once on its text: every string in it (keys
too) joined by newlines, exactly as the field walk sees them (not its JSON dump, whose escaping
can hide a match: `Bearer\\n<token>`). One pass of a keyword automaton over its UTF-8 bytes (a DFA
over the rules' keywords and every upper/lower spelling of the assignment words' first
characters) says which rules can apply and
where each assignment word stands, so no regular expression runs on a clean trace and no
lower-cased copy is made; only the rules whose keywords occur are tried, on that text (a
newline between strings reads as the start and end of each, as the .env-line check needs; a
user's own pattern, which may be anchored, is tried string by string), and only a trace where
one matches, or that holds a string under a secret-looking key, is walked field by field. Token patterns start with their literal (a lookbehind, when there is
one, follows it: `_starts`), so the regular expression engine scans for the literal instead of
trying every position. Assignment rules try an anchored pattern at each occurrence of their
word instead of scanning with a case-insensitive expression.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .config import RedactConfig
from .errors import ConfigError
from .types import Skip, Trace

_L = r"(?<![A-Za-z0-9_])"
"""Left boundary of a token: not in the middle of a word."""
_R = r"(?![A-Za-z0-9_])"
_W = "A-Za-z0-9_"
"""The characters `_L` keeps out, as the content of a class for `_starts`."""


def _starts(before: str, *literals: str) -> str:
    """One of `literals`, not preceded by a character of the class `[before]`.

    The same as `(?<![before])(?:lit|...)`, with each lookbehind written after its literal:
    a pattern that starts with a literal is searched for with a fast scan for it, where one
    that starts with a lookbehind is tried at every position of the text."""
    return "(?:" + "|".join(f"{re.escape(lit)}(?<![{before}]{re.escape(lit)})" for lit in literals) + ")"


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    keywords: tuple[str, ...] = ()
    """Literal substrings, one of which occurs wherever `pattern` matches; the pattern runs only
    where one does. Empty: always run."""
    group: int = 0
    """The group replaced; the rest of the match (a key name, a scheme) is kept."""
    accept: Callable[[str], bool] | None = None
    """A check on the matched secret; a rejected match is left as it is and not counted."""
    anchored: bool = False
    """Every match starts with one of `keywords`, so the gate tries the pattern only where one
    starts (a test checks it on the secret corpus) instead of scanning the whole text."""

    def gate(self, text: str) -> bool:
        return not self.keywords or any(keyword in text for keyword in self.keywords)


def _token(kind: str, pattern: str, *keywords: str, group: int = 0, accept: Callable[[str], bool] | None = None,
           anchored: bool = False) -> _Rule:
    return _Rule(kind, re.compile(pattern), keywords, group, accept, anchored)


def _basic_credentials(value: str) -> bool:
    """`Basic X` is a credential when X is base64 of `user:password`, not an English word."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def _short_bearer(value: str) -> bool:
    return len(value) >= 16 or (len(value) >= 8 and any(c.isdigit() for c in value))


def _header_value(value: str) -> bool:
    return _real_value(value) and (len(value) >= 16 or any(c.isdigit() for c in value))


_PLACEHOLDER_WORDS = frozenset({"none", "null", "nil", "true", "false", "undefined", "required", "optional",
                                "string", "str", "bytes", "bearer", "basic", "token", "digest"})


def _real_value(value: str) -> bool:
    """False for placeholders and references: `$VAR`, `{name}`, `<token>`, `%s`, `None`, `***`."""
    return not (value[:1] in "${<%*(" or value.startswith("[REDACTED") or value.lower() in _PLACEHOLDER_WORDS)


_TOKENS = (
    _token("private-key",
           r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"
           r"(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|(?:(?:\s|\\n)*[A-Za-z0-9+/=]{16,})*)", "PRIVATE KEY"),
    _token("anthropic-key", _starts(r"\w-", "sk-ant-") + r"[A-Za-z0-9_\-]{20,}", "sk-ant-"),
    _token("openai-key", _starts(r"\w-", "sk-") + r"(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}", "sk-"),
    _token("stripe-key", _starts(_W, "sk", "rk") + r"_(?:live|test|prod)_[A-Za-z0-9]{10,99}" + _R, "k_live_", "k_test_", "k_prod_"),
    _token("stripe-webhook-secret", r"whsec_(?<![A-Za-z0-9_]whsec_)[A-Za-z0-9+/=]{24,}", "whsec_"),
    _token("aws-access-key", _starts("A-Z0-9", "AKIA", "ASIA") + r"[A-Z0-9]{16}(?![A-Z0-9])", "AKIA", "ASIA"),
    _token("aws-session-token", _starts(_W, "IQoJb3JpZ2luX2", "FwoGZXIvYXdz", "AQoDYXdz") + r"[A-Za-z0-9+/=]{40,}",
           "IQoJb3JpZ2lu", "FwoGZXIvYXdz", "AQoDYXdz"),
    _token("github-token", r"(?:" + _starts(r"\w", "gh") + r"[pousr]_[A-Za-z0-9]{36,}|" + _starts(r"\w", "github_pat_") + r"[A-Za-z0-9_]{22,})",
           "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    _token("gitlab-token", r"(?:" + _starts(_W, "gl") + r"(?:pat|dt|rt|ptt|oas|cbt)-[A-Za-z0-9_\-.]{20,}|" + _starts(_W, "GR1348941")
           + r"[A-Za-z0-9_\-]{20,})", "glpat-", "gldt-", "glrt-", "glptt-", "gloas-", "glcbt-", "GR1348941"),
    _token("slack-token", r"(?:" + _starts(r"\w", "xox") + r"[abeoprs]-[A-Za-z0-9-]{10,}|" + _starts(r"\w", "xapp-") + r"\d-[A-Za-z0-9-]{10,})",
           "xox", "xapp-"),
    _token("slack-webhook", r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,}", "hooks.slack.com"),
    _token("discord-webhook", r"discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_\-]{20,}", "/api/webhooks/"),
    _token("google-api-key", _starts(r"\w", "AIza") + r"[0-9A-Za-z_\-]{35}", "AIza"),
    _token("google-oauth-secret", r"GOCSPX-(?<![A-Za-z0-9_]GOCSPX-)[A-Za-z0-9_\-]{20,}", "GOCSPX-"),
    _token("google-oauth-token", r"ya29\.(?<![A-Za-z0-9_]ya29\.)[A-Za-z0-9_\-]{20,}", "ya29."),
    _token("jwt", _starts(r"\w-", "eyJ") + r"[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "eyJ"),
    _token("npm-token", r"npm_(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{36}" + _R, "npm_"),
    _token("huggingface-token", _starts(_W, "hf_", "api_org_") + r"[A-Za-z0-9]{30,40}" + _R, "hf_", "api_org_"),
    _token("pypi-token", _starts(_W, "pypi-AgE") + r"[A-Za-z0-9_\-]{40,}", "pypi-AgE"),
    _token("sendgrid-key", r"SG\.(?<![A-Za-z0-9_]SG\.)[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{30,50}", "SG."),
    _token("twilio-api-key", r"SK(?<![A-Za-z0-9_]SK)[0-9a-fA-F]{32}" + _R, "SK", anchored=True),
    _token("azure-storage-key", r"AccountKey=([A-Za-z0-9+/]{40,}={0,2})", "AccountKey=", group=1),
    _token("azure-shared-access-key", r"SharedAccessKey=([A-Za-z0-9+/]{20,}={0,2})", "SharedAccessKey=", group=1),
    _token("azure-sas-signature", r"[?&;]sig=([A-Za-z0-9%+/]{20,}(?:%3[Dd]|=){0,2})", "sig=", group=1),
    _token("azure-client-secret", r"(?<![A-Za-z0-9_~.\-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}(?![A-Za-z0-9_~.\-])", "Q~"),
    _token("shopify-token", r"shp(?<![A-Za-z0-9_]shp)(?:at|ca|pa|ss)_[a-fA-F0-9]{32}" + _R, "shp"),
    _token("digitalocean-token", r"do(?<![A-Za-z0-9_]do)[opr]_v1_[a-f0-9]{64}" + _R, "_v1_"),
    _token("linear-api-key", _starts(_W, "lin_api_") + r"[A-Za-z0-9]{40}" + _R, "lin_api_"),
    _token("databricks-token", r"dapi(?<![A-Za-z0-9_]dapi)[a-f0-9]{32}(?:-\d)?" + _R, "dapi"),
    _token("postman-key", r"PMAK-(?<![A-Za-z0-9_]PMAK-)[a-f0-9]{24}-[a-f0-9]{34}" + _R, "PMAK-"),
    _token("pulumi-token", r"pul-(?<![A-Za-z0-9_]pul-)[a-f0-9]{40}" + _R, "pul-"),
    _token("doppler-token", r"dp\.(?<![A-Za-z0-9_]dp\.)(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}" + _R, "dp."),
    _token("newrelic-key", r"NR(?<![A-Za-z0-9_]NR)(?:AK|II)-[A-Za-z0-9\-]{27,32}" + _R, "NRAK-", "NRII-"),
    _token("grafana-token", r"(?:" + _starts(_W, "glsa_") + r"[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|" + _starts(_W, "glc_") + r"[A-Za-z0-9+/]{32,}={0,2})",
           "glsa_", "glc_"),
    _token("vault-token", r"hv(?<![A-Za-z0-9_]hv)[sb]\.[A-Za-z0-9_\-]{90,}", "hvs.", "hvb."),
    _token("age-secret-key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", "AGE-SECRET-KEY-"),
    _token("atlassian-token", r"ATATT3(?<![A-Za-z0-9_]ATATT3)[A-Za-z0-9_\-=]{150,}", "ATATT3"),
    _token("sentry-token", r"sntry(?<![A-Za-z0-9_]sntry)[su]_[A-Za-z0-9+/=_]{40,}", "sntry"),
    _token("replicate-token", r"r8_(?<![A-Za-z0-9_]r8_)[A-Za-z0-9]{37}" + _R, "r8_"),
    _token("groq-key", r"gsk_(?<![A-Za-z0-9_]gsk_)[A-Za-z0-9]{48,56}" + _R, "gsk_"),
    _token("perplexity-key", r"pplx-(?<![A-Za-z0-9_]pplx-)[A-Za-z0-9]{48}" + _R, "pplx-"),
    _token("xai-key", r"xai-(?<![A-Za-z0-9_]xai-)[A-Za-z0-9]{70,90}" + _R, "xai-"),
    _token("notion-token", r"(?:" + _starts(_W, "ntn_") + r"[A-Za-z0-9]{40,50}|" + _starts(_W, "secret_") + r"[A-Za-z0-9]{43})" + _R, "ntn_", "secret_"),
    _token("supabase-token", r"sbp_(?<![A-Za-z0-9_]sbp_)[a-f0-9]{40}" + _R, "sbp_"),
    _token("square-token", _starts(_W, "sq0atp-", "sq0csp-", "EAAA") + r"[A-Za-z0-9_\-]{22,60}" + _R, "sq0", "EAAA", anchored=True),
    _token("telegram-bot-token", _L + r"\d{8,10}:AA[A-Za-z0-9_\-]{33}" + _R, ":AA"),
    _token("mailgun-key", r"key-(?<![A-Za-z0-9_]key-)[0-9a-f]{32}" + _R, "key-"),
    _token("heroku-key", _starts(_W, "HRKU-AA") + r"[A-Za-z0-9_\-]{58}", "HRKU-"),
    _token("terraform-token", r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{60,70}", "atlasv1"),
    _token("mapbox-secret", r"sk\.eyJ(?<![A-Za-z0-9_]sk\.eyJ)[A-Za-z0-9_\-]{50,}\.[A-Za-z0-9_\-]{20,}", "sk.eyJ"),
    _token("openshift-token", _starts(_W, "sha256~") + r"[A-Za-z0-9_\-]{43}", "sha256~"),
    _token("rubygems-key", r"rubygems_(?<![A-Za-z0-9_]rubygems_)[a-f0-9]{48}" + _R, "rubygems_"),
)

def _cased(kind: str, word: str, rest: str, *, group: int = 1, accept: Callable[[str], bool] | None = None) -> tuple[_Rule, ...]:
    """One rule per spelling (`Bearer`, `bearer`, `BEARER`): a pattern that starts with a
    literal is found by a fast substring search, where a case-insensitive one tests every
    position of the text."""
    spellings = dict.fromkeys((word, word.lower(), word.upper()))
    return tuple(_token(kind, re.escape(w) + rest, w, group=group, accept=accept, anchored=True) for w in spellings)


_CONTEXT = (
    _token("gcp-private-key-id", r"private_key_id\\?[\"']?\s*[:=]\s*\\?[\"']?([0-9a-f]{40})" + _R, "private_key_id", group=1),
    *_cased("basic-auth", "Basic", r"[ \t]+([A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])", accept=_basic_credentials),
    *_cased("bearer-token", "Bearer", r"\s+([A-Za-z0-9\-._~+/]{8,}=*)", accept=_short_bearer),
    *_cased("authorization", "Authorization", r"\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?(?:(?:[Bb]earer|[Tt]oken|[Bb]asic|[Dd]igest)[ \t]+)?"
            r"([^\s\"'\\,;]{3,})", accept=_header_value),
    _token("url-password", r"://[^\s:/@\"'<>]+:([^\s@/\"'<>\[\]]+)@", "://", group=1, anchored=True),
    _token("mysql-password", r"mysql(?<![A-Za-z0-9_]mysql)(?:dump|admin|import|show|check|slap|sh)?\b[^\n|;&]{0,200}?\s(?:-p|--password=)"
           r"([^\s'\"]+|'[^'\n]+'|\"[^\"\n]+\")", "mysql", group=1, anchored=True),
    _token("curl-password", r"curl(?<![A-Za-z0-9_]curl)\b[^\n|;&]{0,200}?\s(?:-u|--user)[ \t=]+[\"']?[^\s:\"']+:([^\s\"']+)", "curl", group=1,
           accept=_real_value, anchored=True),
    _token("sshpass-password", r"sshpass(?<![A-Za-z0-9_]sshpass)\s+-p[ \t]*[\"']?([^\s\"']+)", "sshpass", group=1, accept=_real_value),
)

_ASSIGNMENT_WORDS = {
    # keyword (lower case): (kind, what may follow the keyword inside the same name)
    "pass": ("password", r"(?:word|wd|phrase)?"),
    "pwd": ("password", r""),
    "secret": ("secret", r"(?:[_-]?(?:key|access[_-]?key))?"),
    "token": ("token", r""),
    "credential": ("credentials", r"s?"),
    "api_key": ("api-key", r""),
    "apikey": ("api-key", r""),
    "api-key": ("api-key", r""),
    "access_key": ("access-key", r""),
    "accesskey": ("access-key", r""),
    "private_key": ("private-key", r""),
    "privatekey": ("private-key", r""),
}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_ASSIGNMENT_TAIL = (
    r"(?P<sep>\\?[\"']?[ \t]*(?::=|=>|=|:)[ \t]*|[ \t]+)"
    r"(?:\\?\"(?P<dq>[^\"\\\n]{4,300})\\?\"|\\?'(?P<sq>[^'\\\n]{4,300})\\?'|(?P<bare>[^\s\"'`,;&|(){}\[\]<>\\]{4,300}))"
)
_ASSIGNMENTS = {word: (kind, re.compile(rest + _ASSIGNMENT_TAIL, re.IGNORECASE)) for word, (kind, rest) in _ASSIGNMENT_WORDS.items()}
_NAME_ENDINGS = {word: re.compile(rest, re.IGNORECASE) for word, (_, rest) in _ASSIGNMENT_WORDS.items()}

_EMAIL = _token("email", r"(?<![\w.+-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", "@")
_SHORTEST_SECRET = 8


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


class _Keywords:
    """Where the rules' keywords, and the assignment words in any letter case, occur in a text.

    Token keywords are matched exactly; an assignment word (`token`, `pass`, ...) is matched
    in every upper/lower-case spelling, which is what finding it in the lower-cased text does.
    With `ahocorasick-rs` installed (a dependency) both are found in one pass over the text's
    UTF-8 bytes, without lower-casing it (see `_automaton`); without it, substring tests and
    `str.find` on the lower-cased text give the same answer, several times slower. Two
    characters lower-case to ASCII letters (`\u0130` and the Kelvin sign `\u212a`); a text
    holding one is scanned the slow way.
    """

    def __init__(self, tokens: Iterable[str], words: Iterable[str] = ()):
        self.tokens = tuple(sorted(set(tokens)))
        self.words = tuple(dict.fromkeys(words))
        self._automaton, self._owners = _automaton(self.tokens, self.words)

    def scan(self, text: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """The start of every occurrence of each token keyword in `text`, and of each
        assignment word (any case), for those that occur (ascending)."""
        if self._automaton is None or (not text.isascii() and ("\u0130" in text or "\u212a" in text)):
            return self._scan_slowly(text)
        data = text.encode("utf-8", "surrogatepass")
        tokens: dict[str, list[int]] = {}
        spots: dict[str, list[int]] = {}
        for index, start, end in self._automaton.find_matches_as_indexes(data, overlapping=True):
            for is_word, name in self._owners[index]:
                if not is_word:
                    tokens.setdefault(name, []).append(start)
                elif len(name) == end - start or data[start:start + len(name)].lower() == name.encode():
                    spots.setdefault(name, []).append(start)
        found = {token: sorted(starts) for token, starts in tokens.items()}, {word: sorted(starts) for word, starts in spots.items()}
        return found if len(data) == len(text) else _char_offsets(data, found)

    def present(self, text: str) -> frozenset[str]:
        """The token keywords present in `text`."""
        return frozenset(self.scan(text)[0])

    def _scan_slowly(self, text: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        lower = _lower(text)
        return _starts_of(text, self.tokens), _starts_of(lower, self.words)


def _char_offsets(data: bytes, found: tuple[dict[str, list[int]], ...]) -> tuple[dict[str, list[int]], ...]:
    """`found` with its offsets into the UTF-8 bytes `data` turned into offsets into the text.
    Every keyword is ASCII, so each offset is the start of a character; the bytes between two
    offsets are decoded once, left to right."""
    offsets = sorted({at for starts_of in found for starts in starts_of.values() for at in starts})
    chars: dict[int, int] = {}
    last = count = 0
    for at in offsets:
        count += len(data[last:at].decode("utf-8", "surrogatepass"))
        chars[at], last = count, at
    return tuple({key: [chars[at] for at in starts] for key, starts in starts_of.items()} for starts_of in found)


def _starts_of(text: str, needles: Iterable[str]) -> dict[str, list[int]]:
    """Where each needle occurs in `text` (overlaps included), for those that occur."""
    found: dict[str, list[int]] = {}
    for needle in needles:
        at = text.find(needle)
        while at >= 0:
            found.setdefault(needle, []).append(at)
            at = text.find(needle, at + 1)
    return found


def _spellings(word: str) -> list[str]:
    """Every upper/lower-case spelling of an ASCII word: `pwd`, `pwD`, ..., `PWD`."""
    return ["".join(letters) for letters in itertools.product(*(sorted({c.lower(), c.upper()}) for c in word))]


_SPELLED = 5
"""The automaton holds every spelling of an assignment word's first five characters only (a
longer word is checked at each such place): 337 patterns instead of 4,497, so building it
costs a tenth (about as much as scanning eight mini-swe-agent trajectories) and scanning no more."""


@functools.lru_cache(maxsize=8)
def _automaton(tokens: tuple[str, ...], words: tuple[str, ...]) -> tuple[object, tuple[tuple[tuple[bool, str], ...], ...]]:
    """An automaton over the tokens' UTF-8 bytes and every spelling of the words' first
    `_SPELLED` characters (None without `ahocorasick-rs`, or for a keyword that is not ASCII),
    and what each of its patterns stands for: `(is a word, name)` pairs. Bytes, because
    finding the offsets of characters costs the scan more than encoding the text. Cached:
    every `Redactor` has the same one."""
    try:
        import ahocorasick_rs
    except ImportError:  # pragma: no cover - exercised by test_keyword_index_without_the_automaton_gives_the_same_answer
        return None, ()
    if not all(keyword.isascii() for keyword in (*tokens, *words)):
        return None, ()
    table: dict[str, list[tuple[bool, str]]] = {}
    for token in tokens:
        table.setdefault(token, []).append((False, token))
    for word in words:
        for spelling in _spellings(word[:_SPELLED]):
            table.setdefault(spelling, []).append((True, word))
    # A DFA scans three to five times faster than the default NFA.
    patterns = [pattern.encode() for pattern in table]
    automaton = ahocorasick_rs.BytesAhoCorasick(patterns, implementation=ahocorasick_rs.Implementation.DFA) if table else None
    return automaton, tuple(tuple(v) for v in table.values())


_SURROGATE = re.compile("[\ud800-\udfff]")
"""A surrogate code point in a Python string: always a lone one (a whole pair is one character)."""


class Redactor:
    """Replaces secrets with typed placeholders and counts them (per instance, not globally)."""

    def __init__(self, config: RedactConfig | None = None):
        config = config or RedactConfig()
        rules = list(_TOKENS + _CONTEXT)
        if config.emails:
            rules.append(_EMAIL)
        for n, source in enumerate(config.patterns):
            try:
                rules.append(_Rule("custom", re.compile(source)))
            except re.error as exc:
                raise ConfigError(f"redact.patterns[{n}] {source!r} is not a valid regular expression: {exc}") from None
        self._rules = tuple(rules)
        self._keywords = _Keywords((k for rule in rules for k in rule.keywords), _ASSIGNMENTS)
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> dict[str, int]:
        """How many secrets of each type were replaced so far, sorted by type."""
        return dict(sorted(self._counts.items()))

    def redact_text(self, text: str) -> str:
        """`text` with every secret replaced by its placeholder."""
        return self._redact(text, self._rules, tuple(_ASSIGNMENTS))

    def _redact(self, text: str, rules: tuple[_Rule, ...], words: tuple[str, ...]) -> str:
        if len(text) < _SHORTEST_SECRET:
            return text
        for rule in rules:
            if rule.gate(text):
                text = rule.pattern.sub(lambda m, r=rule: self._replace(m, r), text)
        return self._redact_assignments(text, words) if words else text

    def _replace(self, match: re.Match[str], rule: _Rule) -> str:
        secret = match.group(rule.group)
        if secret is None or (rule.accept is not None and not rule.accept(secret)):
            return match.group(0)
        self._counts[rule.kind] += 1
        if rule.group == 0:
            return placeholder(rule.kind)
        start, end = match.span(rule.group)
        offset = match.start(0)
        whole = match.group(0)
        return whole[: start - offset] + placeholder(rule.kind) + whole[end - offset :]

    def _redact_assignments(self, text: str, words: tuple[str, ...]) -> str:
        """Replace the values assigned to secret-looking names (see the module docstring)."""
        lower = _lower(text)
        spans: list[tuple[int, int, int, str]] = []
        for word in words:
            kind, tail = _ASSIGNMENTS[word]
            at = lower.find(word)
            while at >= 0:
                found = _assignment_at(text, at, word, tail)
                if found is not None:
                    spans.append((found[0], at, found[1], _refine(kind, found[2])))
                at = lower.find(word, at + len(word))
        if not spans:
            return text
        pieces: list[str] = []
        last = 0
        for start, _, end, kind in sorted(spans):  # one value, several keywords: the first names it
            if start < last:
                continue
            pieces += [text[last:start], placeholder(kind)]
            self._counts[kind] += 1
            last = end
        return "".join(pieces) + text[last:]

    def _redact_value(self, value: Any, rules: tuple[_Rule, ...], words: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            return self._redact(value, rules, words)
        if isinstance(value, dict):
            return {k: self._redact_entry(k, v, rules, words) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact_value(v, rules, words) for v in value]
        return value

    def _redact_entry(self, key: Any, value: Any, rules: tuple[_Rule, ...], words: tuple[str, ...]) -> Any:
        """A string stored under a secret-looking key (`{"password": "..."}`) is a secret itself."""
        if isinstance(value, str) and isinstance(key, str) and words:
            kind = _secret_key_kind(key)
            if kind is not None and _real_value(value) and (key.isupper() or _looks_secret(value, value, len(value), bare=False)):
                kind = _refine(kind, key)
                self._counts[kind] += 1
                return placeholder(kind)
        return self._redact_value(value, rules, words)

    def repair_surrogates(self, trace: Trace) -> Trace:
        """The trace with each lone surrogate replaced by U+FFFD and counted (`lone-surrogate`).

        A lone surrogate is half of a UTF-16 pair: a logger that cuts text by UTF-16 units (as
        JavaScript does) writes one as a `\\udXXX` escape, and `json.loads` keeps it. UTF-8 cannot
        encode it, so the trace could be neither hashed nor written: without the repair it was
        skipped whole for one broken character. (A pair that is whole decodes to one character
        and is untouched.)
        """
        def fix(value: object) -> object:
            if isinstance(value, str):
                fixed, n = _SURROGATE.subn("\ufffd", value)
                self._counts["lone-surrogate"] += n
                return fixed
            if isinstance(value, dict):
                return {fix(k): fix(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [fix(v) for v in value]
            return value

        return Trace.model_validate(fix(trace.model_dump(mode="python")))

    def redact_trace(self, trace: Trace) -> Trace:
        """The trace with secrets removed from every text field; `source` is left alone.

        The gate (see the module docstring) reads the same strings the walk redacts, so it never
        lets a secret through; it may let a trace through to the walk that then has nothing to
        replace. A trace the gate clears is returned as the same object.
        """
        texts: list[str] = []
        keyed = _trace_strings(trace, texts)
        text = "\n".join(texts)
        found, spots = self._keywords.scan(text)
        rules = tuple(rule for rule in self._rules if not rule.keywords or not found.keys().isdisjoint(rule.keywords))
        if not keyed and not _could_match(text, texts, rules, found, spots):
            return trace
        words = tuple(word for word in _ASSIGNMENTS if word in spots)
        before = sum(self._counts.values())
        cleaned = self._redact_value(trace.model_dump(exclude={"source"}), rules, words)
        if sum(self._counts.values()) == before:
            return trace
        return Trace.model_validate({**cleaned, "source": trace.source})

    def redact_skip(self, skip: Skip) -> Skip:
        reason = self.redact_text(skip.reason)
        return skip if reason == skip.reason else skip.model_copy(update={"reason": reason})


def _trace_strings(trace: Trace, into: list[str]) -> bool:
    """`_strings(trace.model_dump(exclude={"source"}), into)`, the same strings in the same
    order (field names included), read from the objects instead of a dump: dumping and walking
    every trace cost more than the gate's scan. `_DUMP_FIELDS` pins the field order it follows
    (checked against the models by a test)."""
    keyed = False
    for name in ("id", "task", "agent", "model"):
        into.append(name)
        if (value := getattr(trace, name)) is not None:
            into.append(value)
    into.append("steps")
    append = into.append
    for step in trace.steps:
        into += ("index", "source", step.source, "message", step.message, "reasoning")
        if step.reasoning is not None:
            append(step.reasoning)
        append("tool_calls")
        for call in step.tool_calls:
            append("id")
            if call.id is not None:
                append(call.id)
            into += ("name", call.name, "arguments", call.arguments)
        append("observations")
        for seen in step.observations:
            append("call_id")
            if seen.call_id is not None:
                append(seen.call_id)
            into += ("content", seen.content, "is_error", "exit_code")
        append("extra")
        keyed = _strings(step.extra, into) or keyed
    into += ("outcome", trace.outcome, "reward", "format", trace.format, "extra")
    return _strings(trace.extra, into) or keyed


_DUMP_FIELDS = {
    "Trace": ("id", "task", "agent", "model", "steps", "outcome", "reward", "source", "format", "extra"),
    "Step": ("index", "source", "message", "reasoning", "tool_calls", "observations", "extra"),
    "ToolCall": ("id", "name", "arguments"),
    "Observation": ("call_id", "content", "is_error", "exit_code"),
}
"""The fields `_trace_strings` reads, in model order; none is a secret-looking key."""


def _strings(value: object, into: list[str]) -> bool:
    """Append every string in `value` (dict keys included) to `into`, in walk order; True when
    a string sits under a secret-looking key (`{"password": "..."}`), which the walk checks
    apart from any pattern."""
    keyed = False
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                into.append(key)
                keyed = keyed or (isinstance(item, str) and _secret_key_kind(key) is not None)
            keyed = _strings(item, into) or keyed
    elif isinstance(value, (list, tuple)):
        for item in value:
            keyed = _strings(item, into) or keyed
    return keyed


def _could_match(text: str, texts: list[str], rules: tuple[_Rule, ...], found: dict[str, list[int]],
                 spots: dict[str, list[int]]) -> bool:
    """True when some rule matches somewhere in a trace's strings: `text` is them joined by
    newlines, `found` and `spots` where each token keyword and assignment word occurs in it.
    An anchored rule is tried where its keywords start (every match `finditer` would find is
    among those), any other on the whole text; a user's pattern (kind `custom`) on each string
    alone, since it may be anchored to the start or end of one."""
    for rule in rules:
        if rule.anchored:
            matches = (m for k in rule.keywords for at in found.get(k, ()) if (m := rule.pattern.match(text, at)))
        elif rule.kind != "custom":
            matches = rule.pattern.finditer(text)
        else:
            matches = (m for piece in texts for m in rule.pattern.finditer(piece))
        for match in matches:
            secret = match.group(rule.group)
            if secret is not None and (rule.accept is None or rule.accept(secret)):
                return True
    for word, starts in spots.items():
        tail = _ASSIGNMENTS[word][1]
        if any(_assignment_at(text, at, word, tail) for at in starts):
            return True
    return False


def _lower(text: str) -> str:
    """`text.lower()` with the same length (only U+0130 lower-cases to two characters)."""
    lower = text.lower()
    return lower if len(lower) == len(text) else text.replace("\u0130", "I").lower()


def _assignment_at(text: str, at: int, word: str, tail: re.Pattern[str]) -> tuple[int, int, str] | None:
    """The span of the value assigned to the name containing `word` at `at`, if it is a secret."""
    before = text[at - 1] if at else " "
    if before.isalpha() and not text[at].isupper():
        return None  # inside a word: `bypass`, `compass`
    if word == "pwd" and before not in "_-.":
        return None  # `PWD=/testbed` is the working directory
    match = tail.match(text, at + len(word))
    if match is None or (word == "pass" and match.start("sep") == at + 4 and before not in "_-."):
        return None  # `PASS: test_x` is a test result; `DB_PASS=` and `--pass` are names
    start = at
    while start and text[start - 1] in _NAME_CHARS:
        start -= 1
    name = text[start:match.start("sep")].lstrip("-.")
    flag = text[start:at].startswith("-")
    if not match.group("sep").strip() and not flag:
        return None  # `NAME value` is an assignment only as a command-line flag
    group = next(g for g in ("dq", "sq", "bare") if match.group(g) is not None)
    value = match.group(group)
    if not _real_value(value):
        return None
    env = _env_line(text, start, match)
    if group == "bare" and _is_expression(value, text, match.end(), env_line=env):
        return None
    if not ((env and name.isupper()) or _looks_secret(value, text, match.end(), bare=group == "bare")):
        return None
    return (*match.span(group), name)


def _refine(kind: str, name: str) -> str:
    """AWS credentials keep their own kinds: `aws_secret_access_key`, `SecretAccessKey`,
    `aws_session_token`, `SessionToken` (what `aws sts assume-role` prints)."""
    lower = name.lower().replace("-", "_")
    if kind == "secret" and ("aws" in lower or lower.endswith("secretaccesskey")):
        return "aws-secret-key"
    if kind == "token" and ("aws" in lower or lower.endswith("sessiontoken") or lower.endswith("security_token")):
        return "aws-session-token"
    return kind


def _env_line(text: str, start: int, match: re.Match[str]) -> bool:
    """`NAME=value` or `NAME: value` alone on its line (optionally after `export`): a .env,
    shell or YAML line, where any value is data. In code (`SECRET_KEY='secret',` in a call,
    `PASSWORD = 'x'`) a value must look like a secret."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", match.end())
    head = text[line_start:start].strip()
    rest = text[match.end():len(text) if line_end < 0 else line_end].strip(" \t\r;").split("#")[0]
    return head in ("", "export") and match.group("sep").rstrip() in ("=", ":") and not rest


def _is_expression(value: str, text: str, end: int, *, env_line: bool) -> bool:
    """A bare value that is code, not data: a call or index (`f(`, `x[`), an attribute chain
    (`self.password`), or a plain identifier (`password`) outside a .env line."""
    if text[end:end + 1] in ("(", "["):
        return True
    identifier = value.replace(".", "_").replace("_", "a").isalpha()
    return identifier and (not env_line or "." in value)


def _looks_secret(value: str, text: str, end: int, *, bare: bool) -> bool:
    """For a name written in code style: a value with a digit or of 16+ characters, and for a
    bare value, not the start of an expression (`self.token`, `make_password(...)`)."""
    if not (len(value) >= 16 or any(c.isdigit() for c in value)):
        return False
    return not (bare and (text[end:end + 1] in ("(", "[") or ("." in value and value.replace(".", "").replace("_", "").isalnum())))


@functools.lru_cache(maxsize=4096)
def _secret_key_kind(key: str) -> str | None:
    """The kind of secret a dict key names (`password`, `DB_PASSWORD`, `apiKey`), if any."""
    lower = key.lower()
    for word, (kind, _) in _ASSIGNMENTS.items():
        at = lower.rfind(word)
        if at >= 0 and _NAME_ENDINGS[word].fullmatch(key, at + len(word)):
            if at == 0 or not key[at - 1].isalpha() or key[at].isupper():
                return None if word == "pwd" and (at == 0 or key[at - 1] not in "_-.") else kind
    return None
