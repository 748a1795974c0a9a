"""Seeded augmented views: parameters, determinism and rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esam.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViewParams,
    apply_view,
    crop_view,
    render_crop,
    render_crops,
    sample_view,
    view_rng,
)
from esam.errors import InputError


def test_sample_view_reproducible_and_in_range() -> None:
    h, w = 90, 120
    a = sample_view(view_rng(3, 5, 0), h, w)
    assert a == sample_view(view_rng(3, 5, 0), h, w)
    draws = [sample_view(view_rng(3, i, v), h, w) for i in range(50) for v in range(4)]
    assert len({d.to_list().__str__() for d in draws}) > 150  # views differ
    for d in draws:
        d.check_fits(h, w)
        area = d.height * d.width / (h * w)
        assert 0.2 * 0.95 <= area <= 1.0
        assert 3 / 4 * 0.9 <= d.width / d.height <= 4 / 3 * 1.1
    flips = np.mean([d.flip for d in draws])
    assert 0.35 < flips < 0.65


def test_centre_crop_fallback_for_extreme_aspect() -> None:
    # a 1-pixel-high strip can never fit a random 3/4..4/3 crop: the centre crop is used
    p = sample_view(view_rng(0, 0, 0), 1, 400, flip_prob=0.0)
    # centred, height 1, width round(1 * 4/3) = 1
    assert p == ViewParams(top=0, left=199, height=1, width=1, flip=False)
    q = sample_view(view_rng(0, 0, 0), 300, 100, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    q.check_fits(300, 100)
    assert q.height == q.width == 100


def test_apply_view_is_deterministic_and_exact() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    params = ViewParams(top=5, left=7, height=40, width=50, flip=True)
    a = apply_view(image, params, 32)
    b = apply_view(image, params, 32)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)  # bit-identical
    unflipped = apply_view(image, ViewParams(5, 7, 40, 50, False), 32)
    assert torch.equal(a, unflipped.flip(-1))
    # no resize: the crop's normalised pixels exactly
    same = apply_view(image, ViewParams(10, 20, 16, 16, False), 16)
    crop = torch.from_numpy(image[10:26, 20:36].copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    # /255, -mean, /std: three roundings of values <= 1 in magnitude before the division
    tol = 3 * torch.finfo(torch.float32).eps * 2.0 / float(std.min())
    assert torch.allclose(same, (crop - mean) / std, atol=tol, rtol=0)


def test_a_crop_rendered_later_is_the_view_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    views = [ViewParams(5, 7, 40, 50, True), ViewParams(0, 0, 60, 80, False)]
    crops = [torch.from_numpy(crop_view(image, p)) for p in views]
    assert [tuple(c.shape) for c in crops] == [(40, 50, 3), (60, 80, 3)]
    assert crops[0].dtype == torch.uint8 and crops[0].is_contiguous()
    for crop, p in zip(crops, views, strict=True):
        assert torch.equal(render_crop(crop, 96, p.flip), apply_view(image, p, 96))
    batch = render_crops(crops, torch.tensor([p.flip for p in views]), 96)
    assert torch.equal(batch, torch.stack([apply_view(image, p, 96) for p in views]))
    with pytest.raises(InputError, match="2 crops but 1 flip"):
        render_crops(crops, torch.tensor([True]), 96)
    with pytest.raises(ValueError, match="does not fit|outside|exceeds|fit"):
        crop_view(image, ViewParams(30, 0, 40, 80, False))


def test_view_params_round_trip_and_errors() -> None:
    p = ViewParams(1, 2, 3, 4, True)
    assert ViewParams.from_list(p.to_list()) == p
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="does not fit"):
        apply_view(image, ViewParams(5, 5, 8, 8, False), 8)
    with pytest.raises(InputError, match="uint8"):
        apply_view(image.astype(np.float32), ViewParams(0, 0, 4, 4, False), 8)
    with pytest.raises(InputError, match="5 values"):
        ViewParams.from_list([1, 2, 3])
    with pytest.raises(InputError, match="scale"):
        sample_view(view_rng(0, 0, 0), 10, 10, scale=(0.5, 0.2))
