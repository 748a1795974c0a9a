"""IoU, size buckets, mask choice and aggregation."""

from __future__ import annotations

import random

import numpy as np
import pytest

from esam.eval.metrics import aggregate_miou, choose_masks, mask_iou, size_bucket


def test_mask_iou_by_hand() -> None:
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 shared
    assert mask_iou(a, b) == pytest.approx(100 * 10 / 30)
    assert mask_iou(a, a) == 100.0
    assert mask_iou(a, ~a) == 0.0
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 0.0
    batch = mask_iou(np.stack([a, b]), np.stack([b, b]))
    np.testing.assert_allclose(batch, [100 / 3, 100.0])


@pytest.mark.parametrize(
    ("area", "bucket"),
    [
        (1, "small"),
        (1023.9, "small"),
        (1024, "medium"),
        (9215, "medium"),
        (9216, "large"),
        (1e6, "large"),
    ],
)
def test_size_bucket_boundaries(area: float, bucket: str) -> None:
    assert size_bucket(area) == bucket


def test_aggregate_buckets_and_empty_buckets() -> None:
    rows = [{"iou": 50.0, "area": 100}, {"iou": 100.0, "area": 200}, {"iou": 20.0, "area": 5000}]
    m = aggregate_miou(rows)
    assert m["miou"] == pytest.approx(170 / 3)
    assert m["miou_small"] == 75.0 and m["miou_medium"] == 20.0 and m["miou_large"] is None
    assert (m["n_instances"], m["n_small"], m["n_medium"], m["n_large"]) == (3, 2, 1, 0)
    empty = aggregate_miou([])
    assert empty["miou"] is None and empty["n_instances"] == 0


def test_aggregate_does_not_depend_on_row_order() -> None:
    rng = random.Random(0)
    rows = [{"iou": rng.random() * 100, "area": rng.random() * 20000} for _ in range(500)]
    shuffled = rows[:]
    rng.shuffle(shuffled)
    assert aggregate_miou(rows) == aggregate_miou(shuffled)


def test_choose_masks() -> None:
    gt = np.zeros((1, 4, 4), dtype=bool)
    gt[0, :2] = True
    masks = np.zeros((1, 3, 4, 4), dtype=bool)
    masks[0, 0, :1] = True  # IoU 50
    masks[0, 1] = True  # IoU 50
    masks[0, 2, :2] = True  # IoU 100
    scores = np.array([[0.9, 0.5, 0.1]], dtype=np.float32)
    assert choose_masks(masks, scores, gt, "score").tolist() == [0]
    assert choose_masks(masks, scores, gt, "single").tolist() == [0]
    assert choose_masks(masks, scores, gt, "oracle").tolist() == [2]
    with pytest.raises(ValueError, match="ground-truth"):
        choose_masks(masks, scores, None, "oracle")
    with pytest.raises(ValueError, match="unknown mask choice"):
        choose_masks(masks, scores, gt, "vote")
