"""The executor protocol every alternative implements (see `executor`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # the package stays light: a run starts its fork server before reading (`process`)
    from ..stream import Shard, ShardJob, ShardResult

ExecutorName = Literal["local", "process", "ray"]
EXECUTORS: tuple[ExecutorName, ...] = ("local", "process", "ray")


class Executor(Protocol):
    """Runs `stream.run_shard` over shards; results come back in shard order."""

    name: ExecutorName
    workers: int

    def map(self, shards: Sequence[Shard], job: ShardJob) -> Iterator[ShardResult]:
        """One result per shard, in the order of `shards`, each `run_shard(shard, job)`."""
        ...

    def close(self) -> None:
        """Release workers (idempotent)."""
        ...
