"""The map stage in this process, one shard after another (the default executor)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .base import ExecutorName

if TYPE_CHECKING:
    from ..stream import Shard, ShardJob, ShardResult


class LocalExecutor:
    """One shard at a time in this process: memory holds one trace at a time."""

    name: ExecutorName = "local"
    workers = 1

    def map(self, shards: Sequence[Shard], job: ShardJob) -> Iterator[ShardResult]:
        from ..stream import run_shard

        for shard in shards:
            yield run_shard(shard, job)

    def close(self) -> None:
        return None
