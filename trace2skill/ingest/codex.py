"""Reader for Codex CLI rollouts (`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`).

Each line is `{timestamp, type, payload}`. `session_meta` names the session (id, cwd, CLI
version, git state), `turn_context` the model, and `response_item` holds one Responses API
item, read with the Responses reader's `ItemAssembler`. `event_msg` lines mostly repeat the
items for the UI and are not turned into steps; the last token count is kept. Codex injects
its environment and the user's AGENTS.md instructions as *user* messages; those are dropped
(counted in `extra["injected_messages"]`) so the task is the user's real request. Encrypted
reasoning keeps a placeholder, and a shell call's JSON output string is unpacked into text
and exit code. Rollouts carry no task outcome: outcome stays `unknown`.

`codex exec --json` writes a different event stream; it is not this format.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..types import JSONObject, JSONValue, Skip, SourceRef, Trace
from ._steps import derived_id, kind_of, text_of
from .base import Document, Ledger, Sample
from .responses import ItemAssembler

NAME = "codex"

_LINE_TYPES = ("session_meta", "turn_context", "response_item", "event_msg", "compacted")
INJECTED_PREFIXES = ("<environment_context>", "<user_instructions>", "# AGENTS.md instructions")
"""User-message openings Codex uses for text it injects itself."""


def sniff(sample: Sample) -> bool:
    """True for a rollout line `{timestamp, type: session_meta|..., payload}`."""
    return isinstance(sample, dict) and sample.get("type") in _LINE_TYPES and "payload" in sample


def read(doc: Document) -> Iterator[Trace | Skip]:
    """Yield one trajectory per session in the rollout, and a `Skip` per unusable line."""
    if doc.kind != "jsonl":
        yield doc.skip(f"Codex rollouts are JSONL, got a JSON {kind_of(doc.value())}")
        return
    session = _Session(doc.ledger)
    for entry in doc.records():
        if isinstance(entry, Skip):
            doc.ledger.saw(records=1)
            yield entry
            continue
        line, event = entry
        doc.ledger.saw(records=1)
        if (
            isinstance(event, dict)
            and event.get("type") == "session_meta"
            and session.starts_another(event.get("payload"))
        ):
            yield from session.finish(doc)
            session = _Session(doc.ledger)
        if (reason := session.feed(event)) is not None:
            yield doc.skip(reason, f"line {line}")
    yield from session.finish(doc)


def _is_injected(role: str, text: str) -> bool:
    return role == "user" and text.lstrip().startswith(INJECTED_PREFIXES)


class _Session:
    """State of the session being read."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.items = ItemAssembler(is_injected=_is_injected, ledger=ledger, count_records=False)
        self.meta: JSONObject = {}
        self.model: str | None = None
        self.extra: JSONObject = {}

    def starts_another(self, payload: JSONValue) -> bool:
        new_id = payload.get("id") if isinstance(payload, dict) else None
        return bool(self.items.steps) and new_id is not None and new_id != self.meta.get("id")

    def feed(self, event: JSONValue) -> str | None:
        """Use one rollout line; return why it cannot be used, or None."""
        if not isinstance(event, dict):
            return f"expected a rollout line object, got {kind_of(event)}"
        kind, payload = event.get("type"), event.get("payload")
        if kind not in _LINE_TYPES:
            return f"unknown rollout line type {kind!r}"
        if not isinstance(payload, dict):
            return f"{kind} payload must be an object, got {kind_of(payload)}"
        if kind == "session_meta":
            self.meta.update(payload)
            if isinstance(payload.get("cli_version"), str):
                self.ledger.version = payload["cli_version"]
        elif kind == "turn_context":
            self.model = payload.get("model") if isinstance(payload.get("model"), str) else self.model
        elif kind == "response_item":
            return self._item(payload, event.get("timestamp"))
        elif kind == "event_msg":
            self.ledger.ignore("event_msg lines repeat the response items for the UI (token counts and aborted turns kept)")
            self._event(payload)
        else:
            text = text_of(payload.get("message")) or "[conversation compacted]"
            self.items.steps.add("system", text, extra={"compacted": True})
        return None

    def _item(self, payload: dict, timestamp: JSONValue) -> str | None:
        steps = self.items.steps
        before = len(steps)
        reason = self.items.feed(payload)
        if len(steps) > before and isinstance(timestamp, str):
            steps.set_extra(len(steps) - 1, "timestamp", timestamp)
        return reason

    def _event(self, payload: dict) -> None:
        kind = payload.get("type")
        if kind == "token_count" and isinstance(payload.get("info"), dict):
            usage = payload["info"].get("total_token_usage")
            if isinstance(usage, dict):
                self.extra["token_usage"] = usage
        elif kind == "turn_aborted":
            self.extra["turns_aborted"] = self.extra.get("turns_aborted", 0) + 1

    def finish(self, doc: Document) -> Iterator[Trace | Skip]:
        steps = self.items.steps.build()
        if not steps:
            if self.meta or self.extra:
                yield doc.skip("rollout has no conversation items")
            return
        meta = self.meta
        extra = dict(self.extra)
        for key in ("cwd", "originator", "model_provider", "git"):
            if meta.get(key) is not None:
                extra[key] = meta[key]
        if self.items.injected:
            extra["injected_messages"] = self.items.injected
        version = meta.get("cli_version")
        session_id = meta.get("id")
        yield Trace(
            id=session_id if isinstance(session_id, str) and session_id else derived_id(NAME, steps),
            task=self.items.steps.first_message("user"),
            agent=f"codex {version}" if isinstance(version, str) else "codex",
            model=self.model,
            steps=steps,
            source=SourceRef(path=doc.path, record=None),
            format=NAME,
            extra=extra,
        )
