"""Sharding the benchmark's images across processes started by ``torchrun``.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) each process
takes every ``world_size``-th image, and the per-instance rows are gathered on rank 0, which
sorts them and computes the metrics. Because prompts are seeded per instance and the metrics
are order-independent, N processes give exactly the numbers of one. Without those variables
everything runs in a single process.

Backends: NCCL for CUDA devices (one process per GPU), gloo on CPU (several processes allowed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from e


def init_distributed(device: str) -> DistContext:
    """Join the process group described by torchrun's environment, if any.

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
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    log.info("rank %d of %d joined the %s process group", rank, world, backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def device_for(device: str, ctx: DistContext) -> str:
    """The torch device of this process: ``cuda:<local_rank>`` under torchrun, else ``device``."""
    if device == "cuda" and ctx.distributed:
        return f"cuda:{ctx.local_rank}"
    return device


def check_device(device: str) -> None:
    """Raise ValueError when a CUDA device is requested on a machine without CUDA."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This process's share: items ``rank``, ``rank + world_size``, ..."""
    return list(items[ctx.rank :: ctx.world_size])


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
