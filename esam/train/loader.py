"""The training DataLoader over a :class:`~esam.data.samplers.ResumableSampler`.

Worker randomness: each epoch's iterator draws its worker seeds from the loader's own
generator, which the engine reseeds from (seed, epoch, rank) before every epoch, and each
worker seeds NumPy from its torch seed (:func:`seed_worker`). Workers are not persistent, so
these seeds are all a worker's state. A run resumed mid-epoch restarts the workers at the
next batch, which then lands on another worker than in the uninterrupted run: augmentations
that must resume bitwise should draw their randomness from (seed, epoch, sample index).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from esam.data.samplers import ResumableSampler
from esam.errors import InputError
from esam.runtime.distributed import DistContext
from esam.runtime.seeding import derive_seed
from esam.train.config import TrainConfig


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % (1 << 32)
    np.random.seed(seed)
    random.seed(seed)


def make_train_loader(
    dataset: Dataset[Any],
    cfg: TrainConfig,
    ctx: DistContext,
    *,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    with_epoch: bool = False,
) -> DataLoader[Any]:
    """A DataLoader of ``cfg.batch_size`` samples per batch, sharded and seeded for ``ctx``.

    Incomplete batches are dropped; ``drop_last`` is the sampler's (see
    :mod:`esam.data.samplers` for padding versus dropping across ranks). With ``with_epoch``
    the dataset is indexed by ``(epoch, index)`` pairs.
    """
    sampler = ResumableSampler(
        dataset,  # type: ignore[arg-type]
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        shuffle=shuffle,
        drop_last=drop_last,
        with_epoch=with_epoch,
    )
    generator = torch.Generator()
    generator.manual_seed(derive_seed(cfg.seed, 0, ctx.rank))
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_fn,
        pin_memory=cfg.pin_memory and cfg.device.startswith("cuda"),
        drop_last=True,
        generator=generator,
        worker_init_fn=seed_worker,
        persistent_workers=False,
    )


def steps_per_epoch(sampler: ResumableSampler, batch_size: int, accum_steps: int) -> int:
    """Optimizer steps in one epoch: whole global batches of the dataset's own samples.

    ``dataset // (world_size x batch_size x accum_steps)``, which is the same for every split
    of one global batch over processes: the samples a sampler repeats to even out the ranks
    are never reached, and a run can resume with another number of processes.

    Raises:
        InputError: the dataset is too small for a single step.
    """
    per_rank = sampler.dataset_len // sampler.world_size
    steps = per_rank // (batch_size * accum_steps)
    if steps < 1:
        raise InputError(
            f"one optimizer step takes {batch_size} x {accum_steps} samples per process, but each "
            f"of the {sampler.world_size} process(es) has only {per_rank} per epoch"
        )
    return steps


def to_device(batch: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device``, through dicts, lists and tuples
    (named tuples keep their type; other mappings become dicts)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, list | tuple):
        moved = [to_device(v, device, non_blocking) for v in batch]
        return moved if isinstance(batch, list) else tuple(moved)
    return batch
