"""The fixed synthetic accuracy set and the mIoU-vs-fp32 score."""

from __future__ import annotations

import numpy as np
import pytest

from esam.bench.accuracy import load_masks, mask_ious, miou_percent, save_masks, synthetic_set


def test_synthetic_set_is_deterministic_and_boxes_fit() -> None:
    a = synthetic_set(3, 64, prompts_per_image=4, seed=5)
    b = synthetic_set(3, 64, prompts_per_image=4, seed=5)
    c = synthetic_set(3, 64, prompts_per_image=4, seed=6)
    assert a.images.shape == (3, 64, 64, 3) and a.images.dtype == np.uint8
    assert a.boxes.shape == (3, 4, 4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, c.images)
    assert (a.boxes >= 0).all() and (a.boxes <= 64).all()
    assert (a.boxes[..., 2] >= a.boxes[..., 0]).all() and (a.boxes[..., 3] >= a.boxes[..., 1]).all()
    assert a.describe()["n_images"] == 3


def test_synthetic_set_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_images"):
        synthetic_set(0, 64)
    with pytest.raises(ValueError, match="prompts_per_image"):
        synthetic_set(1, 64, prompts_per_image=0)


def test_miou() -> None:
    ref = np.zeros((2, 1, 3, 4, 4), dtype=bool)
    ref[0, 0, 0, :2] = True  # 8 pixels
    pred = ref.copy()
    assert miou_percent(pred, ref) == 100.0
    pred[0, 0, 0, 0] = False  # 4 of 8 pixels left
    ious = mask_ious(pred, ref)
    assert ious[0, 0, 0] == 0.5
    assert ious[1].tolist() == [[1.0, 1.0, 1.0]]  # empty vs empty counts as identical
    assert miou_percent(pred, ref) == pytest.approx(100 * (0.5 + 5) / 6)
    with pytest.raises(ValueError, match="mask shapes differ"):
        mask_ious(pred[:1], ref)


def test_mask_file_round_trip(tmp_path) -> None:
    m = np.random.default_rng(0).random((2, 3, 1, 7, 9)) > 0.5
    path = save_masks(tmp_path / "m.npz", m)
    assert np.array_equal(load_masks(path), m)
