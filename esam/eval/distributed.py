"""Sharding the benchmark's images across processes started by ``torchrun``.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) each process
takes every ``world_size``-th image, and the per-instance rows are gathered on rank 0, which
sorts them and computes the metrics. Because prompts are seeded per instance and the metrics
are order-independent, N processes give exactly the numbers of one. Without those variables
everything runs in a single process.

Backends: NCCL for CUDA devices (one process per GPU), gloo on CPU (several processes allowed).
Collectives time out after ``ESAM_DIST_TIMEOUT_S`` seconds (default 600), and a process that
fails tells the others before the rows are gathered (:func:`run_collectively`), so every rank
stops with the failing rank's message instead of waiting in ``all_gather``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch

from esam.errors import InputError, UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_ENV = "ESAM_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0


class RankFailedError(UserError, RuntimeError):
    """Another process of a distributed run failed; the message names its rank and error.

    Attributes:
        failures: (rank, "ExceptionType: message") of every failed process.
    """

    def __init__(self, failures: list[tuple[int, str]]) -> None:
        text = "; ".join(f"rank {r} failed: {m}" for r, m in failures)
        super().__init__(f"distributed run stopped because {text}")
        self.failures = failures


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        owns_group: this module started the process group and destroys it at the end.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from e


def dist_timeout() -> timedelta:
    """Timeout of the process group's collectives: ``ESAM_DIST_TIMEOUT_S`` seconds (default 600).

    Raises:
        ValueError: the variable is not a positive number.
    """
    value = os.environ.get(TIMEOUT_ENV)
    if value is None or value.strip() == "":
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError as e:
        raise InputError(f"environment variable {TIMEOUT_ENV}={value!r} is not a number") from e
    if not seconds > 0 or seconds == float("inf"):
        raise InputError(f"environment variable {TIMEOUT_ENV}={value!r} must be > 0 seconds")
    return timedelta(seconds=seconds)


def init_distributed(device: str) -> DistContext:
    """Join the process group described by torchrun's environment, if any.

    The group is created with the timeout of :func:`dist_timeout`; a group the caller created
    already is joined as it is (its own timeout applies).

    Args:
        device: ``cpu`` or ``cuda``; selects the gloo or NCCL backend.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    timeout = dist_timeout()
    dist.init_process_group(backend=backend, timeout=timeout)
    log.info(
        "rank %d of %d joined the %s process group (timeout %.0f s)",
        rank,
        world,
        backend,
        timeout.total_seconds(),
    )
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def device_for(device: str, ctx: DistContext) -> str:
    """The torch device of this process: ``cuda:<local_rank>`` under torchrun, else ``device``."""
    if device == "cuda" and ctx.distributed:
        return f"cuda:{ctx.local_rank}"
    return device


def check_device(device: str) -> None:
    """Raise ValueError when a CUDA device is requested on a machine without CUDA."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This process's share: items ``rank``, ``rank + world_size``, ..."""
    return list(items[ctx.rank :: ctx.world_size])


def run_collectively(work: Callable[[], T], ctx: DistContext) -> T:
    """Run ``work`` on every process and agree on the outcome before anything else is gathered.

    Every rank calls this at the same point. Each runs ``work``; then all exchange an ok / error
    flag (one ``all_gather_object``). When every rank succeeded, each returns its own value. When
    any failed, every rank raises: the failing rank its own exception, the others a
    :class:`RankFailedError` with the failing rank's exception type and message, so no process
    is left waiting for rows that will never come.

    In a single process ``work`` just runs (its exceptions propagate).
    """
    if not ctx.distributed:
        return work()
    import torch.distributed as dist

    error: Exception | None = None
    value: T | None = None
    try:
        value = work()
    except Exception as e:  # reported to the other ranks, then re-raised below
        error = e
    status: str | None = None if error is None else f"{type(error).__name__}: {error}"
    statuses: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(statuses, status)
    failures = [(r, m) for r, m in enumerate(statuses) if m is not None]
    if error is not None:
        raise error
    if failures:
        raise RankFailedError(failures)
    return cast(T, value)


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every process's ``obj`` on rank 0 (in rank order); None on the other ranks."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out if ctx.is_main else None


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def finish(ctx: DistContext) -> None:
    """Leave the process group if this module created it."""
    if ctx.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()
