"""Prompt templates, one Jinja file per model task.

Templates render with `StrictUndefined` so a missing variable fails loudly. A template's
content hash is its version; it is written into provenance and, because the rendered text is
part of every request, into the response-cache key.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

import jinja2


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("trace2skill", "prompts"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # package files: checking their mtimes on every render cost a stat per prompt
    )


def render(name: str, **variables: object) -> str:
    """Render prompt template `name` with `variables`."""
    return _environment().get_template(name).render(**variables)


def load(*names: str) -> None:
    """Compile templates `names` ahead of their first render (done once in the model path's
    fork server, so no worker forked from it compiles them again)."""
    for name in names:
        _environment().get_template(name)


def version(name: str) -> str:
    """Short content hash of template `name`."""
    text = resources.files("trace2skill").joinpath("prompts", name).read_bytes()
    return hashlib.sha256(text).hexdigest()[:12]
