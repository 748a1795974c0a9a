"""A resumable, seeded sampler sharded across the processes of a run.

Every epoch draws one permutation of the dataset from ``(seed, epoch)`` alone (NumPy's PCG64),
so every process computes the same order without communicating, and a resumed run recomputes
the order of the interrupted one. The permutation is then sharded by interleaving: rank ``r``
takes positions ``r, r + W, r + 2W, ...`` (``W`` processes). Consequently, after every rank has
taken ``s`` items, exactly the first ``s * W`` positions of the permutation have been used,
whatever ``W`` is; a position in the epoch is therefore stored as a count of samples consumed
by all ranks together, and a run resumed on another number of processes neither repeats nor
skips a sample.

With ``with_epoch=True`` the sampler yields ``(epoch, index)`` pairs instead of indices, so a
dataset can draw its per-sample randomness (crops, masks) from ``(seed, epoch, index)``: the same
for a sample wherever and whenever it is loaded (any worker, any number of processes, after a
resume).

Uneven sizes: with ``drop_last=False`` (default) the permutation is padded with its own first
items up to a multiple of ``W`` (those few samples are seen twice in the epoch, as with
``torch.utils.data.DistributedSampler``); with ``drop_last=True`` its tail is dropped (up to
``W - 1`` samples unseen that epoch, a different set each epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from esam.errors import InputError


class ResumableSampler(Sampler[Any]):
    """Seeded per-epoch permutation, sharded across ranks, able to start mid-epoch.

    Call :meth:`set_epoch` before iterating each epoch (and with ``consumed`` to resume).

    Args:
        data: the dataset (or its length).
        rank: this process's rank.
        world_size: number of processes.
        seed: the run's seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        shuffle: permute (True) or keep the dataset order (False).
        drop_last: drop the tail instead of padding to a multiple of ``world_size``.
        with_epoch: yield ``(epoch, index)`` pairs instead of indices.
    """

    def __init__(
        self,
        data: Sized | int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        with_epoch: bool = False,
    ) -> None:
        n = data if isinstance(data, int) else len(data)
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is not in a world of {world_size} process(es)")
        if n < world_size and drop_last:
            raise InputError(
                f"{n} samples cannot be split over {world_size} processes with drop_last"
            )
        if n < 1:
            raise InputError("the dataset is empty")
        self.dataset_len = n
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.with_epoch = with_epoch
        self.epoch = 0
        self.start = 0

    @property
    def total_size(self) -> int:
        """Samples per epoch over all ranks (after padding or dropping)."""
        if self.drop_last:
            return self.dataset_len - self.dataset_len % self.world_size
        return -(-self.dataset_len // self.world_size) * self.world_size

    @property
    def shard_size(self) -> int:
        """Samples per epoch of one rank (a whole epoch, whatever the start)."""
        return self.total_size // self.world_size

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Iterate epoch ``epoch``, skipping the ``consumed`` samples all ranks took already.

        Raises:
            InputError: ``consumed`` is negative, beyond the epoch, or not a multiple of the
                world size (each rank must have taken the same number).
        """
        if not 0 <= consumed <= self.total_size or consumed % self.world_size:
            raise InputError(
                f"cannot start epoch {epoch} after {consumed} samples: need a multiple of "
                f"{self.world_size} between 0 and {self.total_size}"
            )
        self.epoch = epoch
        self.start = consumed // self.world_size

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order over all ranks (padded or cut to :attr:`total_size`), int64."""
        n = self.dataset_len
        if self.shuffle:
            idx = np.random.default_rng([self.seed % (1 << 64), epoch]).permutation(n)
        else:
            idx = np.arange(n)
        total = self.total_size
        if total > n:
            idx = np.concatenate([idx, np.resize(idx, total - n)])
        return idx[:total].astype(np.int64)

    def __iter__(self) -> Iterator[Any]:
        shard = self.order(self.epoch)[self.rank :: self.world_size][self.start :].tolist()
        if self.with_epoch:
            return iter([(self.epoch, i) for i in shard])
        return iter(shard)

    def __len__(self) -> int:
        return self.shard_size - self.start
