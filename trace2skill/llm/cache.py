"""A response cache that cannot replay the wrong answer.

The official Trace2Skill cache keyed only on (model, messages), so a rerun with a new seed
replayed old answers. Ours keys on the model, every sampling parameter (seed included), the
output schema and the messages (which embed the prompt template's version), in SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from ..config import LLMConfig
from ..types import content_hash
from .litellm_backend import sampling_params

M = TypeVar("M", bound=BaseModel)


class CachedClient:
    """Wraps an `LLMClient`; identical requests are answered from the cache without a call."""

    def __init__(self, inner: Any, config: LLMConfig, path: Path):
        self.inner = inner
        self.model = inner.model
        self._params = sampling_params(config)
        self._path = path
        self.hits = 0
        self._ready = False

    @property
    def usage(self):
        return self.inner.usage

    def _run(self, sql: str, params: tuple) -> tuple | None:
        """One statement on a short-lived connection, so concurrent analysts never share one."""
        if not self._ready:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self._path, timeout=30)) as db, db:
            if not self._ready:
                db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
                self._ready = True
            return db.execute(sql, params).fetchone()

    def key(self, messages: list[dict[str, str]], output: type[BaseModel]) -> str:
        return content_hash(
            {"model": self.model, "params": self._params, "schema": output.model_json_schema(), "messages": messages}
        )

    async def complete(self, messages: list[dict[str, str]], *, output: type[M], purpose: str) -> M:
        key = self.key(messages, output)
        row = self._run("SELECT reply FROM responses WHERE key = ?", (key,))
        if row is not None:
            self.hits += 1
            return output.model_validate_json(row[0])
        value = await self.inner.complete(messages, output=output, purpose=purpose)
        self._run("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(value.model_dump(mode="json"))))
        return value
