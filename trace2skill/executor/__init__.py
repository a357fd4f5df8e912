"""Where the map stage runs: the executor seam.

An `Executor` takes the run's shards and one `ShardJob` and yields one `ShardResult` per
shard, **in shard order** (never completion order), each computed by `stream.run_shard`, a
pure top-level function of picklable arguments. Alternatives, one module each:

* `local` (default, `local.py`): in this process, one shard after another;
* `process` (`process.py`): `--workers N` worker processes (the offline analyst is CPU-bound);
* `ray` (optional extra): Ray tasks, on this machine or a cluster (`executor/ray.py`).

The model path does not ship its analyses through `map` on the local executors: its requests
go out from the driver's event loop, and its worker processes (`off_driver`: one per CPU core
unless `--workers N`) read the shards and prepare the analysts' prompts ahead (`prefetch`), so the
driver's one interpreter only sends requests and merges; a remote executor may run the
analyses where the shard is read instead
(`ShardJob.analysis == "llm"`), sharing the run's caps through `budget.Meter`'s
`reserve`/`settle` (see SEAM notes in `docs/scale.md`).

The protocol (`Executor`, `ExecutorName`) is in `base.py`, which every alternative imports.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import EXECUTORS, Executor, ExecutorName
from .local import LocalExecutor

if TYPE_CHECKING:
    from ..config import Config


def map_executor(config: Config, offline: bool) -> Executor:
    """The executor `analyse.executor` names; on the model path the local ones run in worker
    processes (one per CPU core unless `--workers`), which read and prepare prompts while the
    driver sends requests."""
    return executor_for(config.analyse.executor, config.analyse.workers, config.analyse.ray_address, off_driver=not offline)


def executor_for(name: str, workers: int | None = None, address: str | None = None, *, off_driver: bool = False) -> Executor:
    """The executor a run asked for (`--executor`, `--workers`, `--ray-address`); with
    `off_driver` (the model path), `local` and `process` run in worker processes, one per CPU
    core unless `workers` says (the driver mostly waits on the network meanwhile).

    Raises:
        ConfigError: unknown name, workers below 1, or Ray asked for but not installed.
    """
    if workers is None:
        workers = _cores() if off_driver and name in ("local", "process") else 1
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    if name in ("local", "process") and (off_driver or name == "process"):
        from .process import ProcessExecutor

        return ProcessExecutor(workers, inline=not off_driver)
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        try:
            from .ray import RayExecutor  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigError(f"--executor ray needs the ray extra: pip install 'trace2skill[ray]' ({exc})") from None
        return RayExecutor(workers, address)
    raise ConfigError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


__all__ = ["EXECUTORS", "Executor", "ExecutorName", "LocalExecutor", "executor_for", "map_executor"]
