"""Prompt derivation: boxes, seeded clicks, centre and iterative clicks."""

from __future__ import annotations

import numpy as np
import pytest

from esam.data.prompts import (
    PAD_LABEL,
    box_from_bbox,
    box_from_mask,
    center_click,
    clip_boxes,
    empty_boxes,
    instance_rng,
    n_clicks,
    next_error_click,
    random_clicks,
    validate_prompt_settings,
)


def _blob() -> np.ndarray:
    m = np.zeros((40, 50), dtype=bool)
    m[5:25, 10:40] = True
    m[25:35, 10:15] = True
    return m


def test_box_from_bbox_is_xyxy() -> None:
    np.testing.assert_array_equal(box_from_bbox([10, 20, 30, 5]), [10, 20, 40, 25])


def test_box_from_mask_is_tight_in_pixel_edges() -> None:
    m = np.zeros((10, 12), dtype=bool)
    m[2:5, 3:9] = True
    np.testing.assert_array_equal(box_from_mask(m), [3, 2, 9, 5])
    with pytest.raises(ValueError, match="empty"):
        box_from_mask(np.zeros((4, 4), dtype=bool))


def test_random_clicks_are_seeded_and_inside_the_mask() -> None:
    m = _blob()
    a = random_clicks(m, 3, instance_rng(0, 7, 11))
    b = random_clicks(m, 3, instance_rng(0, 7, 11))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 2)
    assert all(m[int(y), int(x)] for x, y in a)
    assert len({tuple(p) for p in a}) == 3  # without replacement
    others = [random_clicks(m, 3, instance_rng(s, 7, 11)) for s in range(1, 6)]
    assert any(not np.array_equal(a, o) for o in others)
    # a different instance of the same image gets its own stream
    assert not np.array_equal(a, random_clicks(m, 3, instance_rng(0, 7, 12)))


def test_random_clicks_cover_the_mask_uniformly() -> None:
    m = np.zeros((4, 4), dtype=bool)
    m[0, 0] = m[3, 3] = True
    rng = np.random.default_rng(0)
    hits = [tuple(random_clicks(m, 1, rng)[0]) for _ in range(400)]
    share = hits.count((0.0, 0.0)) / len(hits)
    assert 0.4 < share < 0.6


def test_random_clicks_on_a_one_pixel_mask_repeat_it() -> None:
    m = np.zeros((5, 5), dtype=bool)
    m[2, 3] = True
    np.testing.assert_array_equal(random_clicks(m, 3, instance_rng(0, 1, 1)), [[3, 2]] * 3)


def test_center_click_is_the_deepest_pixel() -> None:
    m = np.zeros((30, 30), dtype=bool)
    m[5:16, 5:26] = True  # 11 rows x 21 cols: depth peaks on the middle row
    x, y = center_click(m)
    assert y == 10 and 10 <= x <= 20 and m[int(y), int(x)]
    # the image border counts as boundary: a mask touching the border is not deepest there
    edge = np.zeros((20, 20), dtype=bool)
    edge[:, :9] = True
    x, _ = center_click(edge)
    assert x == 4


def test_next_error_click_positive_negative_and_padding() -> None:
    gt = np.zeros((30, 30), dtype=bool)
    gt[5:25, 5:25] = True
    # nothing predicted: the false negative region is all of gt -> positive at its centre
    (x, y), label = next_error_click(gt, np.zeros_like(gt))
    assert label == 1 and gt[int(y), int(x)]
    # prediction spills far outside: the deeper error is the false positive -> negative click
    pred = np.ones_like(gt)
    (x, y), label = next_error_click(gt, pred)
    assert label == 0 and not gt[int(y), int(x)]
    # perfect prediction: padding
    _, label = next_error_click(gt, gt.copy())
    assert label == PAD_LABEL


def test_next_error_click_avoids_clicked_pixels() -> None:
    gt = np.zeros((9, 9), dtype=bool)
    gt[4, 4] = True
    (x, y), label = next_error_click(gt, np.zeros_like(gt), np.array([[4.0, 4.0]]))
    assert label == PAD_LABEL  # the only error pixel was already clicked


def _full_image_click(
    gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray
) -> tuple[tuple[int, int], int] | None:
    """The iterative click computed over the whole image (the definition, unoptimised)."""
    from scipy import ndimage

    def depth(region: np.ndarray) -> np.ndarray:
        d = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        d[clicked[:, 1], clicked[:, 0]] = 0.0
        return d

    fn, fp = depth(gt & ~pred), depth(~gt & pred)
    if fn.max() == 0 and fp.max() == 0:
        return None
    d, label = (fn, 1) if fn.max() > fp.max() else (fp, 0)
    row, col = np.unravel_index(int(np.argmax(d)), d.shape)
    return (int(col), int(row)), label


def test_next_error_click_equals_the_whole_image_computation() -> None:
    """The distance transform runs on the error region's box; the click must not change,
    ties (first in row-major order) and already-clicked pixels included."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        h, w = rng.integers(3, 40, 2)
        gt = np.zeros((h, w), bool)
        pred = np.zeros((h, w), bool)
        for m in (gt, pred):
            for _ in range(rng.integers(0, 4)):
                r0, c0 = rng.integers(0, h), rng.integers(0, w)
                m[r0 : r0 + rng.integers(1, h + 1), c0 : c0 + rng.integers(1, w + 1)] ^= True
        clicked = np.stack([rng.integers(0, w, 3), rng.integers(0, h, 3)], axis=1)
        want = _full_image_click(gt, pred, clicked)
        (x, y), label = next_error_click(gt, pred, clicked.astype(np.float32))
        if want is None:
            assert label == PAD_LABEL, trial
        else:
            assert ((int(x), int(y)), label) == want, trial


def test_prompt_settings_validation() -> None:
    assert n_clicks("point3") == 3
    validate_prompt_settings("box", None, "mask")
    validate_prompt_settings("point1", "center", None)
    with pytest.raises(ValueError, match="iterative"):
        validate_prompt_settings("point3", "center", None)
    with pytest.raises(ValueError, match="unknown prompt"):
        validate_prompt_settings("scribble", "random", None)
    with pytest.raises(ValueError, match="box source"):
        validate_prompt_settings("box", None, "detector")


def test_clip_boxes_to_the_image_and_find_empty_ones() -> None:
    boxes = np.array(
        [[-0.3, 5, 20, 30], [10, -4, 60, 45], [2, 3, 4, 5], [55, 1, 70, 9], [1, 40, 9, 48]],
        dtype=np.float32,
    )
    clipped = clip_boxes(boxes, height=40, width=50)
    np.testing.assert_array_equal(
        clipped, [[0, 5, 20, 30], [10, 0, 50, 40], [2, 3, 4, 5], [50, 1, 50, 9], [1, 40, 9, 40]]
    )
    assert clipped.dtype == np.float32 and boxes[0, 0] == np.float32(-0.3)  # input untouched
    assert empty_boxes(clipped).tolist() == [False, False, False, True, True]


def test_next_error_click_coordinates_are_x_column_y_row() -> None:
    # an asymmetric error region: a 5-row x 15-column false negative band, deepest along row 12
    # (columns 22-32, ties to the first in row-major order); swapping x and y anywhere would
    # land outside it
    gt = np.zeros((40, 50), dtype=bool)
    gt[10:15, 20:35] = True
    (x, y), label = next_error_click(gt, np.zeros_like(gt))
    assert label == 1 and (y, x) == (12, 22)
    # that pixel already clicked, as (x, y) = (22, 12): the next deepest one
    (x2, y2), _ = next_error_click(gt, np.zeros_like(gt), np.array([[22.0, 12.0]]))
    assert (y2, x2) == (12, 23)
    # the transposed pixel (x, y) = (12, 22) lies outside the band and changes nothing
    (x3, y3), _ = next_error_click(gt, np.zeros_like(gt), np.array([[12.0, 22.0]]))
    assert (y3, x3) == (12, 22)
