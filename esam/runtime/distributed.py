"""Processes of a run started by ``torchrun`` (or a single process), and what they share.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment)
:func:`init_distributed` joins the process group; without those variables everything runs in
one process and every helper here is a cheap no-op, so the same code serves a laptop and a
multi-node job.

Backends: NCCL for CUDA devices (one process per GPU), gloo on CPU (several processes allowed).
Collectives time out after ``ESAM_DIST_TIMEOUT_S`` seconds (default 600), and a process that
fails tells the others before anything is gathered (:func:`run_collectively`), so every rank
stops with the failing rank's message instead of waiting in a collective.

Training adds: :func:`all_reduce_mean` (tensors, or dicts of floats in one collective),
:func:`broadcast_object`, :func:`wrap_ddp` / :func:`unwrap_model`, and
:func:`setup_logging`, which lets only rank 0 log below WARNING. A process that was in a group
ends through :func:`exit_process`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast, overload

import torch
from torch import nn

from esam.errors import InputError, UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

# set by finish(): this process left a process group whose threads may still run (exit_process)
_left_group = False

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
        """This is rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
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
        InputError: the variable is not a positive number (a ValueError).
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


def current_context() -> DistContext:
    """The context of an already initialised process group (one process when there is none).

    Unlike :func:`init_distributed` this never creates a group; ``owns_group`` is False.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    local_rank = _env_int("LOCAL_RANK", 0)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)


def is_main_process() -> bool:
    """True on rank 0 of the current process group, and in a single process."""
    return current_context().is_main


def device_for(device: str, ctx: DistContext) -> str:
    """The torch device of this process: ``cuda:<local_rank>`` under torchrun, else ``device``."""
    if device == "cuda" and ctx.distributed:
        return f"cuda:{ctx.local_rank}"
    return device


def check_device(device: str) -> None:
    """Raise InputError (a ValueError) when a CUDA device is requested on a machine without CUDA."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} requested but CUDA is not available on this machine; run on "
            "the CPU with --device cpu (train.device=cpu for training commands)"
        )


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
    parts = gather_to_all(obj, ctx)
    return parts if ctx.is_main else None


def gather_to_all(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj`` on every process (in rank order)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, ctx: DistContext, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled; the other ranks' ``obj`` is ignored)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box: list[Any] = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return cast(T, box[0])


def _comm_device() -> torch.device:
    """Where tensors must live for the group's backend: the current GPU for NCCL, else CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@overload
def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor: ...


@overload
def all_reduce_mean(value: Mapping[str, float], ctx: DistContext) -> dict[str, float]: ...


def all_reduce_mean(
    value: torch.Tensor | Mapping[str, float], ctx: DistContext
) -> torch.Tensor | dict[str, float]:
    """The mean over all processes of a tensor, or of every value of a dict of floats.

    A tensor (any shape) comes back as a new tensor of the same shape, dtype and device; the
    input is left untouched. A dict is reduced in one collective (its values packed into one
    float64 tensor by sorted key), so every rank must pass the same keys. In a single process
    the value comes back as it is (a copy of the dict, the same tensor).
    """
    if isinstance(value, torch.Tensor):
        if not ctx.distributed:
            return value
        import torch.distributed as dist

        buf = value.detach().to(_comm_device(), copy=True)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return (buf / ctx.world_size).to(value.device, value.dtype)
    if not ctx.distributed:
        return {k: float(v) for k, v in value.items()}
    import torch.distributed as dist

    keys = sorted(value)
    packed = torch.tensor([float(value[k]) for k in keys], dtype=torch.float64)
    packed = packed.to(_comm_device())
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    means = (packed / ctx.world_size).tolist()
    return dict(zip(keys, means, strict=True))


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def finish(ctx: DistContext) -> None:
    """Leave the process group if this module created it, once every process is done.

    A process that destroyed its group while another still used its own (rank 0 writing the
    results while the others had returned) sometimes aborted at exit under gloo
    ("terminate called without an active exception"), so the group is left together: a
    barrier first. Called from a ``finally`` block while an exception propagates, it skips the
    barrier (the other processes may be waiting in another collective, and the launcher stops
    them once this one exits); if the barrier fails (a peer left), the error is logged and the
    group destroyed anyway.
    """
    if ctx.owns_group:
        import torch.distributed as dist

        if sys.exc_info()[0] is None:
            try:
                dist.barrier()
            except Exception as e:  # a peer failed or left: nothing to wait for
                log.warning(
                    "rank %d: leaving the process group without a barrier (%s)", ctx.rank, e
                )
        dist.destroy_process_group()
        global _left_group
        _left_group = True


def exit_process(code: int) -> NoReturn:
    """End this process with exit status ``code``; the way out of a command-line entry point.

    A process that left a process group (:func:`finish`) flushes its output and logs and ends
    with ``os._exit``, skipping the interpreter's teardown: a ``DistributedDataParallel`` model
    keeps torch's gloo group, and its C++ worker threads, alive after
    ``destroy_process_group`` and after every Python object is released (torch 2.14), and
    destroying them during interpreter finalization sometimes aborted a rank that had finished
    its work ("terminate called without an active exception"), failing the run at its very
    end. ``atexit`` handlers do not run on that path. Any other process exits normally.
    """
    if not _left_group:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # closed, or a broken pipe: nothing is left to deliver
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def wrap_ddp(
    model: nn.Module, ctx: DistContext, device: str | torch.device, **kwargs: Any
) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes run, else itself.

    The model must already be on ``device``. CUDA models get ``device_ids=[<their device>]``
    (one GPU per process); CPU models (gloo) get none. ``kwargs`` go to DDP unchanged (e.g.
    ``find_unused_parameters=True``).
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index], output_device=index, **kwargs)
    return DistributedDataParallel(model, **kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or DataParallel, or ``torch.compile``) wrapper; else ``model``."""
    inner = model
    while True:
        if isinstance(inner, nn.parallel.DistributedDataParallel | nn.DataParallel):
            inner = inner.module
        elif hasattr(inner, "_orig_mod") and isinstance(inner._orig_mod, nn.Module):
            inner = inner._orig_mod
        else:
            return inner


class MainRankFilter(logging.Filter):
    """Lets every record through on rank 0, and only WARNING and above on the other ranks."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(ctx: DistContext, level: int = logging.INFO) -> None:
    """Configure Python logging for this process: rank 0 logs at ``level``, others warn only.

    Adds a handler to the root logger when it has none (``logging.basicConfig``); under several
    processes each line starts with ``[rank N]``. Calling it again only updates the level and
    the filter.
    """
    root = logging.getLogger()
    if not root.handlers:
        prefix = f"[rank {ctx.rank}] " if ctx.distributed else ""
        logging.basicConfig(
            level=level, format=f"{prefix}%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    root.setLevel(level)
    for handler in root.handlers:
        for f in [f for f in handler.filters if isinstance(f, MainRankFilter)]:
            handler.removeFilter(f)
        handler.addFilter(MainRankFilter(ctx.rank))
