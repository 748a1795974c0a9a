"""The resumable sharded sampler: seeded order, disjoint covering shards, mid-epoch starts."""

from __future__ import annotations

import pytest

from esam.data.samplers import ResumableSampler
from esam.errors import InputError


def _shards(n: int, world: int, **kw: object) -> list[list[int]]:
    out = []
    for r in range(world):
        s = ResumableSampler(n, rank=r, world_size=world, **kw)  # type: ignore[arg-type]
        s.set_epoch(0)
        out.append(list(s))
    return out


def test_order_depends_on_seed_and_epoch_only() -> None:
    a = ResumableSampler(50, seed=1)
    b = ResumableSampler(50, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(50))  # a permutation: no repeats
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(ResumableSampler(50, seed=2)) != list(ResumableSampler(50, seed=1))
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_shards_are_disjoint_and_cover_with_padding_or_dropping() -> None:
    shards = _shards(12, 3, seed=0)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(12)) and [len(s) for s in shards] == [4, 4, 4]
    padded = _shards(10, 3, seed=0)  # padded to 12: two samples appear twice
    flat = [i for s in padded for i in s]
    assert set(flat) == set(range(10)) and len(flat) == 12
    dropped = _shards(10, 3, seed=0, drop_last=True)  # cut to 9, none repeated
    flat = [i for s in dropped for i in s]
    assert len(flat) == len(set(flat)) == 9


def test_mid_epoch_start_continues_without_repeating_or_skipping() -> None:
    full = ResumableSampler(20, rank=1, world_size=2, seed=5)
    full.set_epoch(2)
    whole = list(full)
    full.set_epoch(2, consumed=8)  # 4 per rank taken
    assert list(full) == whole[4:] and len(full) == 6
    with pytest.raises(ValueError, match="multiple of 2"):
        full.set_epoch(2, consumed=3)


def test_resume_on_another_world_size_uses_the_remaining_samples_exactly() -> None:
    n, consumed = 24, 12
    order = ResumableSampler(n, seed=9).order(0)
    remaining_by = {}
    for world in (2, 3):
        rest = []
        for r in range(world):
            s = ResumableSampler(n, rank=r, world_size=world, seed=9)
            s.set_epoch(0, consumed=consumed)
            rest += list(s)
        remaining_by[world] = sorted(rest)
    assert remaining_by[2] == remaining_by[3] == sorted(order[consumed:].tolist())


def test_steps_per_epoch_do_not_depend_on_how_a_global_batch_is_split() -> None:
    from esam.train import steps_per_epoch

    # 47 samples, global batch 8: 5 whole steps whether 1 x 8, 2 x 4 or 4 x 2 (padding the
    # ranks to 24 each would give 2 x 4 a sixth step holding a repeated sample)
    for world, batch, accum in ((1, 8, 1), (2, 4, 1), (4, 2, 1), (2, 2, 2)):
        sampler = ResumableSampler(47, rank=0, world_size=world)
        assert steps_per_epoch(sampler, batch, accum) == 5, (world, batch, accum)
    # the samples of those steps are the permutation's first 40: none repeated
    shards = [list(ResumableSampler(47, rank=r, world_size=2, seed=3)) for r in range(2)]
    used = [i for r in range(2) for i in shards[r][: 5 * 4]]
    assert len(set(used)) == 40
    with pytest.raises(InputError, match="each of the 2 process"):
        steps_per_epoch(ResumableSampler(9, world_size=2), 8, 1)
