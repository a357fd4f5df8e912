"""The Ray executor: the map stage (read, redact, analyse) of each shard on a Ray cluster.

Install it with `pip install 'trace2skill[ray]'` (on the driver and on every worker node) and run
`distill --executor ray [--ray-address ADDR]`: without an address a private local Ray is started
with this machine's CPUs; `auto` joins the cluster this machine belongs to, `ray://HOST:10001` a
remote one. Ray is imported only here, and only when asked for.

What crosses the wire, and what does not:

- a worker gets a *shard* (a trace file, or a byte range of a JSONL file) by its path: the traces
  must be readable at the same path on every node (a shared file system or the same copy);
- it sends back, per trajectory, its lessons, its index entry and its usage; consolidation,
  authoring and publishing run on the driver as on one machine, so the skill is byte-identical;
- workers never write the state folder: the driver journals each analysis as it arrives, so a
  rerun after a failure pays only for what had not come back (the journal's digests go out to
  the workers, who skip those trajectories);
- the model path's caps are global: every request on every worker reserves its call and its
  worst-case cost from one `BudgetKeeper` actor before it is sent, and waits there for the rate
  limit, so `--max-calls`, `--budget` and `llm.rate_limit` hold for the run as a whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..budget import Meter
from ..config import BudgetConfig, Config
from ..errors import BudgetExceeded, ConfigError
from ..llm.retry import RateLimiter

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from ..llm import LLMClient

INSTALL = "pip install 'trace2skill[ray]'"
LOCAL = "local"
"""`--ray-address` default: start a private Ray on this machine (never join someone else's)."""


def require_ray() -> ModuleType:
    """The `ray` module.

    Raises:
        ConfigError: Ray is not installed (exit 78), naming the command that installs it.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which cannot be imported here ({exc}); install it with {INSTALL}") from None
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[ModuleType]:
    """Ray, connected for the length of the block: a Ray the caller already initialised is used
    as it is (and left running); otherwise `address` is joined (`auto`, `ray://HOST:PORT`) or,
    when None or `local`, a private local Ray with this machine's CPUs is started, and shut down after.

    Raises:
        ConfigError: Ray is not installed, or no cluster answers at `address`.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    local = address in (None, LOCAL)
    options = dict(num_cpus=os.cpu_count() or 1, include_dashboard=False, runtime_env=_same_code()) if local else {}
    try:
        ray.init(address=LOCAL if local else address, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot connect to Ray at {address or LOCAL!r}: {' '.join(str(exc).split())}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _same_code() -> dict[str, dict[str, str]]:
    """A local Ray's workers import this very copy of trace2skill (the driver may be running it
    from a checkout that is not installed), ahead of anything on their own path."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@dataclass(frozen=True)
class Reservation:
    """The budget actor's answer to one request: its reserved cost, or why it may not be sent."""

    cost: float = 0.0
    refused: str = ""


class BudgetKeeper:
    """The run's one `Meter` and one `RateLimiter`, held in a Ray actor every worker calls.

    It starts from what the driver has already spent (the preflight request), and the driver
    carries its totals back (`Meter.carry`) before the merges, so the caps cover the whole run.
    """

    def __init__(self, budget: BudgetConfig, price: tuple[float, float] | None, calls: int, spent: float,
                 requests: int | None, tokens: int | None):
        self.meter = Meter(budget, price)
        self.meter.carry(calls, spent)
        self.limiter = RateLimiter(requests, tokens)

    def price(self) -> tuple[float, float] | None:
        return self.meter.price

    def reserve(self, tokens_in: int, tokens_out: int) -> Reservation:
        try:
            return Reservation(cost=self.meter.reserve(tokens_in, tokens_out))
        except BudgetExceeded as exc:
            return Reservation(refused=str(exc))

    def settle(self, reserved: float, cost: float | None) -> None:
        self.meter.settle(reserved, cost)

    async def acquire(self, tokens: int) -> None:
        await self.limiter.acquire(tokens)

    def totals(self) -> tuple[int, float]:
        """Calls made and dollars spent so far, the driver's share included."""
        return self.meter.calls, self.meter.spent


def start_keeper(ray: ModuleType, config: Config, driver: Meter | None) -> ActorHandle:
    """The run's budget actor, starting from the driver meter's totals (none offline)."""
    keeper = ray.remote(num_cpus=0, max_concurrency=1000)(BudgetKeeper)
    price = driver.price if driver is not None else None
    calls, spent = (driver.calls, driver.spent) if driver is not None else (0, 0.0)
    rate = config.llm.rate_limit
    return keeper.remote(config.budget, price, calls, spent, rate.requests, rate.tokens)


def carry_back(ray: ModuleType, keeper: ActorHandle, driver: Meter) -> None:
    """Add what the workers spent to the driver's meter, which then caps the merges."""
    calls, spent = ray.get(keeper.totals.remote())
    driver.carry(calls - driver.calls, spent - driver.spent)


class RemoteMeter:
    """`budget.Caps` on a worker: each reservation is made by the run's `BudgetKeeper`.

    `reserve` is synchronous, as the meter's contract is (one round trip, about 2 ms locally),
    so no two workers can both take the last call.
    """

    def __init__(self, keeper: ActorHandle, price: tuple[float, float] | None):
        self.keeper = keeper
        self.price = price

    def price_of(self, tokens_in: int, tokens_out: int) -> float | None:
        return None if self.price is None else tokens_in * self.price[0] + tokens_out * self.price[1]

    def reserve(self, tokens_in: int, tokens_out: int) -> float:
        import ray

        answer: Reservation = ray.get(self.keeper.reserve.remote(tokens_in, tokens_out))
        if answer.refused:
            raise BudgetExceeded(answer.refused)
        return answer.cost

    def settle(self, reserved: float, cost: float | None) -> None:
        import ray

        ray.get(self.keeper.settle.remote(reserved, cost))


class RemoteLimiter:
    """`budget.Limiter` on a worker: waits on the run's one rate limiter, in the budget actor."""

    def __init__(self, keeper: ActorHandle):
        self.keeper = keeper

    async def acquire(self, tokens: int) -> None:
        await self.keeper.acquire.remote(tokens)


def worker_llm(config: Config, keeper: ActorHandle) -> LLMClient | None:
    """The model client a worker analyses with, under the run's shared caps (None offline).

    The worker resolves the provider's key from its own environment, as the driver does; keys
    are never sent through Ray.
    """
    import ray

    from ..budget import with_budget
    from ..llm import build_llm

    client = build_llm(config)
    if client is None:
        return None
    price = ray.get(keeper.price.remote())
    return with_budget(client, config, RemoteMeter(keeper, price), RemoteLimiter(keeper))
