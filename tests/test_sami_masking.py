"""Random token masking: exact counts, per-sample draws, reproducibility."""

from __future__ import annotations

import pytest
import torch

from esam.errors import InputError
from esam.sami.masking import num_visible, random_masking


@pytest.mark.parametrize(("n", "ratio", "keep"), [(196, 0.75, 49), (10, 0.75, 2), (16, 0.5, 8)])
def test_exact_count_per_sample(n: int, ratio: float, keep: int) -> None:
    m = random_masking(6, n, ratio, generator=torch.Generator().manual_seed(1))
    assert num_visible(n, ratio) == keep
    assert m.ids_keep.shape == (6, keep)
    assert m.ids_restore.shape == (6, n) and m.mask.shape == (6, n)
    assert m.mask.dtype == torch.bool
    assert (m.mask.sum(dim=1) == n - keep).all()
    for b in range(6):
        kept = set(m.ids_keep[b].tolist())
        assert len(kept) == keep
        assert not m.mask[b, m.ids_keep[b]].any()  # kept tokens are not masked
        masked = set(m.ids_masked()[b].tolist())
        assert kept.isdisjoint(masked) and kept | masked == set(range(n))
        assert set(torch.nonzero(m.mask[b]).flatten().tolist()) == masked


def test_restore_inverts_shuffle() -> None:
    m = random_masking(4, 12, 0.5, generator=torch.Generator().manual_seed(0))
    shuffle = m.ids_shuffle()
    tokens = torch.arange(12).expand(4, 12)
    shuffled = torch.gather(tokens, 1, shuffle)
    assert torch.equal(shuffled[:, :6], m.ids_keep)
    assert torch.equal(torch.gather(shuffled, 1, m.ids_restore), tokens)


def test_differs_per_sample_and_reproducible_by_seed() -> None:
    a = random_masking(8, 196, 0.75, generator=torch.Generator().manual_seed(7))
    b = random_masking(8, 196, 0.75, generator=torch.Generator().manual_seed(7))
    c = random_masking(8, 196, 0.75, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_keep, b.ids_keep)
    assert not torch.equal(a.mask, c.mask)
    rows = {tuple(r.tolist()) for r in a.mask}
    assert len(rows) == 8  # every sample has its own mask


def test_device_and_bad_ratios() -> None:
    m = random_masking(2, 4, 0.5, device="cpu")
    assert m.mask.device.type == "cpu"
    for bad in (1.0, -0.1, 0.99):
        with pytest.raises(InputError, match="mask_ratio"):
            random_masking(1, 16, bad)
