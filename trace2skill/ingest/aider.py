"""Aider chat history: `.aider.chat.history.md`, Markdown appended by `aider/io.py`.

The file is a run of sessions, each opening with `# aider chat started at <time>`. Within a
session, user input lines start with `#### `, aider's own output (notices, prompts, command
echoes) is block-quoted with `> `, and everything else is the model's reply. Aider has no
tool-call protocol: the model writes SEARCH/REPLACE edits and shell commands in its reply,
and aider reports what it did in block quotes. Those reports are the tool calls read here:
- `> Applied edit to FILE`: an `edit` call on FILE, succeeded;
- `> # N SEARCH/REPLACE block(s) failed to match!`: an `edit` call that failed (an error),
  its result the explanation quoted after it;
- `> Running CMD`: a `bash` call, its result the quoted lines after it (often empty: the
  output reaches the history only when the user adds it to the chat).
Other notices (token counts, files added, commits, questions) are ignored by rule and
counted in the ledger. Each session is one trajectory; the outcome is `unknown`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..types import Observation, Skip, SourceRef, ToolCall, Trace
from ._steps import StepList, derived_id, looks_like_error
from .base import Document, Ledger

NAME = "aider"

SIGNATURE = "# aider chat started at"
_SESSION = re.compile(r"^# aider chat started at (.*)$", re.M)
_EDIT = re.compile(r"^Applied edit to (.+)$")
_FAILED_EDIT = re.compile(r"^# \d+ SEARCH/REPLACE blocks? failed to match", re.I)
_RUN = re.compile(r"^Running (.+)$")
_MODEL = re.compile(r"^Main model: (\S+)")
_VERSION = re.compile(r"^Aider (v[\d.]+\S*)")
_NOTICES = "aider notices (token counts, files added, commits, questions) are UI output, not agent actions"


def sniff(sample: object) -> bool:
    return isinstance(sample, str) and sample.lstrip().startswith(SIGNATURE)


def read(doc: Document) -> Iterator[Trace | Skip]:
    text = doc.value() if doc.kind == "text" else None
    if not isinstance(text, str) or not sniff(text):
        yield doc.skip("not an Aider chat history (no '# aider chat started at' line)")
        return
    starts = list(_SESSION.finditer(text))
    for number, match in enumerate(starts):
        end = starts[number + 1].start() if number + 1 < len(starts) else len(text)
        yield from _session(doc, match.group(1).strip(), text[match.end():end], f"session {number + 1}")


def _blocks(body: str) -> list[tuple[str, list[str]]]:
    """Consecutive lines grouped by who wrote them: `user`, `aider` (quotes) or `model`."""
    blocks: list[tuple[str, list[str]]] = []
    for raw in body.split("\n"):
        line = raw.rstrip()
        if line.startswith("#### ") or line == "####":
            kind, line = "user", line[5:]
        elif line.startswith("> ") or line == ">":
            kind, line = "aider", line[2:]
        else:
            kind = "model"
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(line)
        elif kind != "model" or line.strip():
            blocks.append((kind, [line]))
    return blocks


def _session(doc: Document, started: str, body: str, where: str) -> Iterator[Trace | Skip]:
    steps = StepList()
    info: dict[str, str] = {}
    for kind, lines in _blocks(body):
        doc.ledger.saw(records=1)
        text = "\n".join(lines).strip()
        if kind == "user":
            steps.add("user", text)
        elif kind == "model":
            steps.append_text(steps.open_agent_step(after_calls=True, after_message=True), text)
        else:
            _notices(doc.ledger, steps, lines, info)
    built = steps.build()
    if not built:
        doc.ledger.ignore("sessions with no user input or reply (started and closed)")
        return
    doc.ledger.version = doc.ledger.version or info.get("version")
    yield Trace(
        id=f"aider-{started.replace(' ', 'T')}-{derived_id(NAME, built)[-8:]}",
        task=steps.first_message("user"),
        agent=f"Aider {info['version']}" if "version" in info else "Aider",
        model=info.get("model"),
        steps=built,
        source=SourceRef(path=doc.path, record=where),
        format=NAME,
        extra={"started": started},
    )


def _notices(ledger: Ledger, steps: StepList, lines: list[str], info: dict[str, str]) -> None:
    """Turn aider's quoted reports into tool calls and results; count the rest as ignored."""
    open_result: list[str] | None = None
    acted = False
    for line in lines + [""]:
        edit, failed, run = _EDIT.match(line), _FAILED_EDIT.match(line), _RUN.match(line)
        if (edit or failed or run or not line.strip()) and open_result is not None:
            _finish(steps, open_result)
            open_result = None
        if edit or failed or run:
            acted = True
            ledger.saw(calls=1, results=1)
            last = steps.last()
            index = len(steps) - 1 if last is not None and last.source == "agent" else steps.add("agent")
            call_id = f"aider-call-{ledger.calls}"
            name, argument = ("bash", run.group(1)) if run else ("edit", edit.group(1) if edit else "")
            steps.add_call(index, ToolCall(id=call_id, name=name, arguments=argument))
            if edit:
                steps.attach(Observation(call_id=call_id, content=line))
            else:
                open_result = [call_id, "error" if failed else "", line if failed else ""]
        elif open_result is not None:
            open_result.append(line)
        else:
            for pattern, key in ((_MODEL, "model"), (_VERSION, "version")):
                found = pattern.match(line)
                if found:
                    info.setdefault(key, found.group(1))
    if not acted:
        ledger.ignore(_NOTICES)


def _finish(steps: StepList, pending: list[str]) -> None:
    call_id, flag, *lines = pending
    content = "\n".join(c for c in lines if c).strip()
    steps.attach(Observation(call_id=call_id, content=content, is_error=flag == "error" or looks_like_error(content)))
