"""Batched SAM-style prompt sampling: boxes, clicks, corrective clicks, slot-limited appends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esam.data.prompts import box_from_mask
from esam.errors import InputError
from esam.finetune.prompting import (
    append_points,
    box_prompts,
    corrective_points,
    first_prompts,
    point_prompts,
    scale_points,
    select_best,
    tight_boxes,
    to_encoder_frame,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_masks(q: int = 16, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    """Q blobby masks (unions of random rectangles and discs), none empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((q, h, w), dtype=bool)
    for i in range(q):
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
                out[i, y0 : y0 + rng.integers(1, 15), x0 : x0 + rng.integers(1, 20)] = True
            else:
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 10)
                out[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return torch.from_numpy(out)


def inside(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Qxn bool: each (x, y) pixel-index point lies on its mask."""
    q, n, _ = points.shape
    idx = points.long()
    return masks[torch.arange(q)[:, None].expand(q, n), idx[..., 1], idx[..., 0]]


# -- boxes ---------------------------------------------------------------------------------------


def test_tight_boxes_match_box_from_mask_and_pad_empty_masks():
    masks = random_masks()
    masks[3] = False
    boxes = tight_boxes(masks)
    assert boxes.dtype == torch.float32 and boxes.shape == (16, 4)
    for i in range(16):
        if i == 3:
            assert boxes[i].tolist() == [-1.0, -1.0, -1.0, -1.0]
        else:
            np.testing.assert_array_equal(boxes[i].numpy(), box_from_mask(masks[i].numpy()))


def _box_mask(q: int, h: int = 256, w: int = 256) -> torch.Tensor:
    """Q copies (a view, no memory) of a 100 x 50 px box at x 60..160, y 80..130."""
    m = torch.zeros(h, w, dtype=torch.bool)
    m[80:130, 60:160] = True
    return m[None].expand(q, h, w)


def test_box_jitter_mean_is_tight_box_and_std_is_ten_percent_of_side():
    q = 4000
    boxes = box_prompts(_box_mask(q), gen(1))
    tight = torch.tensor([60.0, 80.0, 160.0, 130.0])
    std = torch.tensor([10.0, 5.0, 10.0, 5.0])  # 10 % of width 100 / height 50
    mean_err = (boxes.mean(0) - tight).abs()
    assert (mean_err < 4 * std / q**0.5).all(), mean_err
    rel = boxes.std(0) / std
    assert ((rel - 1).abs() < 0.05).all(), rel


def test_box_jitter_std_is_capped_at_max_noise():
    q = 4000
    boxes = box_prompts(_box_mask(q), gen(2), noise_frac=0.1, max_noise=3.0)
    rel = boxes.std(0) / 3.0
    assert ((rel - 1).abs() < 0.05).all(), rel


def test_boxes_are_clipped_to_the_image_and_ordered():
    masks = torch.zeros(500, 20, 30, dtype=torch.bool)
    masks[:, 0:20, 0:30] = True  # the whole image: half the draws go outside
    boxes = box_prompts(masks, gen(3), noise_frac=0.5, max_noise=100.0)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 30).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 20).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert (boxes[:, 2] == 30).float().mean() > 0.3  # clipping happened


def test_no_noise_gives_the_tight_box():
    masks = random_masks()
    assert torch.equal(box_prompts(masks, gen(), noise_frac=0.0), tight_boxes(masks))


# -- points --------------------------------------------------------------------------------------


def test_points_always_lie_inside_their_mask():
    masks = random_masks(q=32, seed=5)
    points, labels = point_prompts(masks, gen(4), n=50)
    assert points.shape == (32, 50, 2) and labels.shape == (32, 50)
    assert points.dtype == torch.float32 and labels.dtype == torch.int64
    assert inside(masks, points).all()
    assert (labels == 1).all()
    assert torch.equal(points, points.round())  # pixel indices


def test_points_are_uniform_over_the_mask_pixels():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    pixels = [(1, 2), (1, 3), (5, 0), (7, 7)]  # (row, col)
    for r, c in pixels:
        masks[0, r, c] = True
    points, _ = point_prompts(masks, gen(6), n=8000)
    counts = [int(((points[0, :, 1] == r) & (points[0, :, 0] == c)).sum()) for r, c in pixels]
    assert sum(counts) == 8000
    assert all(abs(c - 2000) < 4 * (8000 * 0.25 * 0.75) ** 0.5 for c in counts), counts


def test_empty_masks_get_padding_points():
    masks = random_masks(q=4)
    masks[1] = False
    points, labels = point_prompts(masks, gen(), n=2)
    assert (points[1] == -1).all() and (labels[1] == -1).all()
    assert (labels[[0, 2, 3]] == 1).all()


# -- first prompts -------------------------------------------------------------------------------


def test_first_prompts_mix_boxes_and_points_with_padding():
    masks = random_masks(q=400, seed=7)
    points, labels = first_prompts(masks, gen(8), box_prob=0.5)
    assert points.shape == (400, 2, 2) and labels.shape == (400, 2)
    is_box = labels[:, 0] == 2
    is_point = labels[:, 0] == 1
    assert (is_box | is_point).all()
    assert 0.4 < is_box.float().mean() < 0.6
    assert (labels[is_box, 1] == 3).all()
    assert (labels[is_point, 1] == -1).all() and (points[is_point, 1] == -1).all()
    assert inside(masks[is_point], points[is_point, :1]).all()
    boxes = points[is_box].reshape(-1, 4)
    assert (boxes[:, :2] <= boxes[:, 2:]).all()


def test_first_prompts_all_boxes_or_all_points():
    masks = random_masks()
    _, labels = first_prompts(masks, gen(), box_prob=1.0)
    assert (labels == torch.tensor([2, 3])).all()
    points, labels = first_prompts(masks, gen(), box_prob=0.0)
    assert points.shape == (16, 1, 2) and (labels == 1).all()


def test_first_prompts_are_reproducible_from_the_seed():
    masks = random_masks()
    a = first_prompts(masks, gen(11))
    b = first_prompts(masks, gen(11))
    c = first_prompts(masks, gen(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# -- corrective points ---------------------------------------------------------------------------


def test_corrective_points_lie_in_the_error_region_with_the_right_label():
    gt = random_masks(q=64, seed=9)
    pred = random_masks(q=64, seed=10)
    pred[5] = gt[5]  # no error: padding
    for seed in range(5):
        points, labels = corrective_points(pred, gt, gen(seed))
        assert points.shape == (64, 1, 2) and labels.shape == (64, 1)
        assert labels[5, 0] == -1 and (points[5] == -1).all()
        ok = torch.ones(64, dtype=torch.bool)
        ok[5] = False
        assert inside((pred ^ gt)[ok], points[ok]).all()
        on_gt = inside(gt[ok], points[ok])[:, 0]
        assert torch.equal(labels[ok, 0] == 1, on_gt)  # positive exactly on false negatives
        assert torch.equal(labels[ok, 0] == 0, ~on_gt)


def test_corrective_side_is_chosen_in_proportion_to_the_areas():
    gt = torch.zeros(1, 10, 10, dtype=torch.bool)
    gt[0, :, :5] = True
    pred = torch.zeros_like(gt)
    pred[0, :, :2] = True  # 30 false-negative pixels
    pred[0, :1, 5:] = True  # 5 false-positive pixels
    q = 7000
    _, labels = corrective_points(pred.expand(q, -1, -1), gt.expand(q, -1, -1), gen(13))
    share = (labels == 1).float().mean().item()
    assert abs(share - 30 / 35) < 4 * (30 / 35 * 5 / 35 / q) ** 0.5


def test_corrective_points_are_reproducible():
    gt, pred = random_masks(seed=1), random_masks(seed=2)
    a = corrective_points(pred, gt, gen(3))
    b = corrective_points(pred, gt, gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_select_best_takes_the_highest_predicted_iou():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    iou = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    best = select_best(logits, iou)
    assert torch.equal(best[0], logits[0, 1]) and torch.equal(best[1], logits[1, 0])


# -- appending within the slot limit -------------------------------------------------------------


def click(x: float, label: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[[x, x]]]), torch.tensor([[label]])


def test_append_fills_padding_then_grows_to_the_limit():
    points = torch.tensor([[[3.0, 3.0], [-1.0, -1.0]]])
    labels = torch.tensor([[1, -1]])
    p, lab = append_points(points, labels, *click(7.0, 0), max_slots=6)
    assert lab.tolist() == [[1, 0, -1]]
    assert p[0, :2].tolist() == [[3.0, 3.0], [7.0, 7.0]] and p[0, 2].tolist() == [-1.0, -1.0]


def test_append_at_the_limit_slides_keeping_the_box_and_the_newest_clicks():
    points = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    labels = torch.tensor([[2, 3]])
    for x in range(1, 6):  # 5 clicks: the box (2 slots) + 4 fill the 6 slots, then one slides
        points, labels = append_points(points, labels, *click(float(x), x % 2), max_slots=6)
    assert labels.shape == (1, 6)
    assert labels[0, :2].tolist() == [2, 3]
    assert points[0, :2].tolist() == [[0.0, 0.0], [9.0, 9.0]]
    assert points[0, 2:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]  # click 1, the oldest, dropped
    assert labels[0, 2:].tolist() == [0, 1, 0, 1]


def test_append_at_the_limit_keeps_the_first_click_of_a_point_query():
    points, labels = torch.tensor([[[0.5, 0.5]]]), torch.tensor([[1]])
    for x in range(1, 8):
        points, labels = append_points(points, labels, *click(float(x)), max_slots=6)
    assert points[0, :, 0].tolist() == [0.5, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_append_at_the_limit_with_stop_keeps_the_old_prompts():
    points = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    labels = torch.tensor([[2, 3]])
    for x in range(1, 6):
        points, labels = append_points(points, labels, *click(float(x)), 6, at_limit="stop")
    assert points[0, 2:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_append_batched_queries_and_padding_clicks():
    points = torch.tensor([[[0.0, 0.0], [9.0, 9.0]], [[4.0, 4.0], [-1.0, -1.0]]])
    labels = torch.tensor([[2, 3], [1, -1]])
    new_points = torch.tensor([[[-1.0, -1.0]], [[5.0, 5.0]]])
    new_labels = torch.tensor([[-1], [0]])  # query 0 had no error left
    p, lab = append_points(points, labels, new_points, new_labels, max_slots=6)
    assert lab.tolist() == [[2, 3, -1], [1, 0, -1]]
    assert p[0, :2].tolist() == points[0].tolist()
    assert p[1, 1].tolist() == [5.0, 5.0]


def test_append_rejects_too_few_slots_and_mismatched_queries():
    points, labels = torch.zeros(2, 2, 2), torch.ones(2, 2, dtype=torch.int64)
    with pytest.raises(InputError, match="max_slots"):
        append_points(points, labels, points[:, :1], labels[:, :1], max_slots=2)
    with pytest.raises(InputError, match="queries"):
        append_points(points, labels, points[:1, :1], labels[:1, :1], max_slots=6)
    with pytest.raises(InputError, match="at_limit"):
        append_points(points, labels, points, labels, 6, at_limit="drop")  # type: ignore[arg-type]


# -- frames and checks ---------------------------------------------------------------------------


def test_scale_points_keeps_padding_and_applies_the_model_ratio():
    pts = torch.tensor([[[10.0, 20.0], [-1.0, -1.0]]])
    out = scale_points(pts, (64, 32), (256, 256))
    assert out.tolist() == [[[80.0, 80.0], [-1.0, -1.0]]]
    boxes = torch.tensor([[0.0, 0.0, 32.0, 64.0]])
    assert scale_points(boxes.view(-1, 2, 2), (64, 32), (128, 128)).view(-1, 4).tolist() == [
        [0.0, 0.0, 128.0, 128.0]
    ]


def test_to_encoder_frame_keeps_click_centres_and_box_edges():
    # a click on pixel (x=10, y=3) of a 64x32 frame: its centre (10.5, 3.5) lies at
    # (84, 14) in a 256x256 frame, which the prompt encoder reaches from index (83.5, 13.5)
    pts = torch.tensor([[[10.0, 3.0], [0.0, 0.0], [32.0, 64.0], [-1.0, -1.0]]])
    labels = torch.tensor([[1, 2, 3, -1]])
    out = to_encoder_frame(pts, labels, (64, 32), (256, 256))
    assert out.tolist() == [[[83.5, 13.5], [0.0, 0.0], [256.0, 256.0], [-1.0, -1.0]]]
    negative = to_encoder_frame(pts[:, :1], torch.tensor([[0]]), (64, 32), (256, 256))
    assert negative.tolist() == [[[83.5, 13.5]]]
    # the same frame changes nothing
    same = to_encoder_frame(pts, labels, (64, 32), (64, 32))
    assert torch.equal(same, pts)
    with pytest.raises(InputError, match="labels"):
        to_encoder_frame(pts, labels[:, :2], (64, 32), (256, 256))


def test_bad_inputs_raise_named_errors():
    masks = random_masks(q=2)
    with pytest.raises(InputError, match="bool"):
        point_prompts(masks.float(), gen())
    with pytest.raises(InputError, match="QxHxW"):
        box_prompts(masks[0], gen())
    with pytest.raises(InputError, match="Generator"):
        first_prompts(masks, 0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="box_prob"):
        first_prompts(masks, gen(), box_prob=1.5)
    with pytest.raises(InputError, match="same shape"):
        corrective_points(masks, masks[:1], gen())
    with pytest.raises(InputError, match="n "):
        point_prompts(masks, gen(), n=0)


@pytest.mark.gpu
def test_same_prompts_on_cuda_from_a_cpu_generator():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gt, pred = random_masks(seed=3), random_masks(seed=4)
    cpu = first_prompts(gt, gen(5)), corrective_points(pred, gt, gen(6))
    gpu = first_prompts(gt.cuda(), gen(5)), corrective_points(pred.cuda(), gt.cuda(), gen(6))
    for a, b in zip(cpu, gpu, strict=True):
        assert a[1].device.type == "cpu" and b[1].device.type == "cuda"
        torch.testing.assert_close(a[0], b[0].cpu())
        assert torch.equal(a[1], b[1].cpu())
