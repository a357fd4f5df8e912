"""First steps: the commented config file `init` writes, the configuration reference in the
docs, and the trace folders a user already has.

Both the file and the reference are generated from the `Config` model (its fields, defaults
and docstrings), so a key added to the model appears in both without anyone remembering to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from .config import ENV_PREFIX, Config
from .types import JSONObject, JSONValue

KNOWN_TRACE_FOLDERS = ("~/.claude/projects", "~/.codex/sessions", "./traces")
"""Where Claude Code and Codex CLI keep their sessions, and the conventional project folder."""


@dataclass(frozen=True)
class Key:
    dotted: str
    default: JSONValue
    """The default as JSON-able data; None when the key is unset by default."""
    doc: str
    type: str


def config_keys() -> Iterator[Key]:
    """Every key a user may set, in model order, sections after top-level keys."""
    yield from _keys(Config, "")


def _keys(model: type[BaseModel], prefix: str) -> Iterator[Key]:
    sections = []
    defaults = model().model_dump(mode="json")
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, annotation))
            continue
        doc = " ".join((field.description or "").split())
        yield Key(prefix + name, defaults.get(name), doc, _type_name(annotation))
    for name, section in sections:
        yield from _keys(section, f"{prefix}{name}.")


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def toml_value(value: JSONValue) -> str:
    """A TOML literal for a JSON-able value (strings, numbers, booleans, lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def config_template(chosen: JSONObject | None = None, offered: list[str] | None = None) -> str:
    """The commented `trace2skill.toml`: every key with its default and what it does.

    Keys in `chosen` (dotted) are written live with that value; every other key is written
    commented out at its default, so the file changes nothing until a line is uncommented.
    `offered` trace folders are listed beside `sources` as a ready-to-uncomment line.
    """
    chosen = chosen or {}
    lines = ["# trace2skill configuration. Every key is listed with its default; uncomment a line to change it.",
             f"# Precedence: command-line flags > {ENV_PREFIX}* environment variables > this file > defaults.",
             "# Relative paths are relative to this file.", ""]
    section = ""
    for key in config_keys():
        head, _, name = key.dotted.rpartition(".")
        if head != section:
            section = head
            lines += ["", f"[{section}]"]
        lines.append(f"# {key.doc}" if key.doc else f"# ({key.type})")
        if key.dotted == "sources" and offered:
            lines.append(f"# found on this machine: {toml_value(offered)}")
        if key.dotted in chosen:
            lines.append(f"{name} = {toml_value(chosen[key.dotted])}")
        elif key.default is None:
            lines.append(f"# {name} = ...   (unset by default; {key.type})")
        else:
            lines.append(f"# {name} = {toml_value(key.default)}")
    return "\n".join(lines).rstrip() + "\n"


def config_reference() -> str:
    """docs/configuration.md: a table of every key, generated from the model."""
    lines = ["# Configuration reference", "",
             "<!-- Generated from trace2skill/config.py by `python -m trace2skill.onboard > docs/configuration.md`; "
             "tests/test_ux.py fails when it is stale. -->", "",
             "Every key of `trace2skill.toml` (or `[tool.trace2skill]` in `pyproject.toml`). Flags override "
             f"`{ENV_PREFIX}*` environment variables (`{ENV_PREFIX}LLM__MODEL` for `llm.model`; also "
             f"`{ENV_PREFIX}MODEL`, `{ENV_PREFIX}API_BASE`, `{ENV_PREFIX}CONCURRENCY`), which override the file, which "
             "overrides the defaults. `--set KEY=VALUE` sets any key from the command line. "
             "`trace2skill init` writes a commented file listing them all. `publish.token` is never read from a "
             "file: it comes from `GITHUB_TOKEN` or `GH_TOKEN`.", "",
             "| key | default | what it does |", "|---|---|---|"]
    for key in config_keys():
        default = "unset" if key.default is None else f"`{toml_value(key.default)}`"
        lines.append(f"| `{key.dotted}` | {default} | {key.doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def find_trace_folders(home: Path | None = None, cwd: Path | None = None) -> list[str]:
    """Known trace folders that exist here, as absolute paths (config files anchor relative ones)."""
    home, cwd = home or Path.home(), cwd or Path.cwd()
    found = []
    for candidate in KNOWN_TRACE_FOLDERS:
        path = home / candidate[2:] if candidate.startswith("~/") else cwd / candidate
        if path.is_dir():
            found.append(str(path.resolve()))
    return found


if __name__ == "__main__":
    print(config_reference(), end="")
