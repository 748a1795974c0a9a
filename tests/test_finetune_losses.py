"""SAM's loss: focal and dice values, the min over multimask outputs, IoU targets, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from esam.errors import InputError
from esam.finetune.losses import (
    dice_loss,
    downsample_masks,
    mask_iou,
    mask_losses,
    sam_loss,
    sam_loss_terms,
    sigmoid_focal_loss,
    upsample_logits,
)

LN2 = math.log(2.0)


def t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# -- focal and dice on hand-computed cases -------------------------------------------------------


def test_focal_at_zero_logits():
    # p = 0.5 everywhere: BCE = ln 2, (1 - p_t)^2 = 1/4; alpha_t = 0.25 (t = 1), 0.75 (t = 0).
    loss = sigmoid_focal_loss(t([[0.0, 0.0]]), t([[1.0, 0.0]]))
    expected = (0.25 * 0.25 * LN2 + 0.75 * 0.25 * LN2) / 2
    assert loss.shape == () and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_at_a_confident_positive():
    # x = ln 3: p = 3/4, BCE = ln(4/3), 1 - p_t = 1/4.
    loss = sigmoid_focal_loss(t([[math.log(3.0)]]), t([[1.0]]))
    assert loss.item() == pytest.approx(0.25 * (1 / 16) * math.log(4 / 3), rel=1e-6)
    no_alpha = sigmoid_focal_loss(t([[math.log(3.0)]]), t([[1.0]]), alpha=-1, gamma=0.0)
    assert no_alpha.item() == pytest.approx(math.log(4 / 3), rel=1e-6)  # plain BCE


def test_focal_is_finite_at_extreme_logits():
    # Wrong by 100: BCE = 100, 1 - p_t = 1, alpha_t = 0.75; right by 100: ~0.
    wrong = sigmoid_focal_loss(t([[100.0]]), t([[0.0]]))
    right = sigmoid_focal_loss(t([[-100.0, 100.0]]), t([[0.0, 1.0]]))
    assert wrong.item() == pytest.approx(75.0, rel=1e-6)
    assert right.item() == pytest.approx(0.0, abs=1e-30)
    assert torch.isfinite(sigmoid_focal_loss(t([[1e4, -1e4]]), t([[0.0, 1.0]]))).all()


def test_dice_hand_values():
    # p = 0.5 on 4 pixels, target 2 of them: 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4.
    assert dice_loss(torch.zeros(2, 2), t([[1, 1], [0, 0]])).item() == pytest.approx(0.4)
    # eps = 0: 1 - 2 * 1 / 4 = 0.5
    assert dice_loss(torch.zeros(2, 2), t([[1, 1], [0, 0]]), eps=0).item() == pytest.approx(0.5)
    perfect = dice_loss(t([[50.0, -50.0]]), t([[1.0, 0.0]]))
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    # an empty target predicted empty: (0 + 1) / (0 + 0 + 1) -> loss 0
    assert dice_loss(torch.full((3, 3), -50.0), torch.zeros(3, 3)).item() == pytest.approx(0.0)


def test_losses_reduce_per_mask_and_broadcast_targets():
    logits = torch.randn(4, 3, 8, 8)
    targets = torch.rand(4, 8, 8) > 0.5
    terms = mask_losses(logits, targets)
    assert terms["focal"].shape == (4, 3) and terms["dice"].shape == (4, 3)
    for m in range(3):
        torch.testing.assert_close(terms["focal"][:, m], sigmoid_focal_loss(logits[:, m], targets))
        torch.testing.assert_close(terms["dice"][:, m], dice_loss(logits[:, m], targets))


# -- IoU targets -----------------------------------------------------------------------------------


def test_iou_targets_count_thresholded_pixels():
    logits = torch.full((1, 2, 4, 4), -1.0)
    logits[0, 0, 0, :4] = 1.0  # pred: row 0 (4 px)
    logits[0, 1] = 1.0  # pred: everything (16 px)
    target = torch.zeros(1, 4, 4)
    target[0, 0, 1:] = 0.9  # gt: 3 px of row 0 (soft, above 0.5)
    target[0, 1, :3] = 1.0  # and 3 px of row 1
    target[0, 2, 0] = 0.5  # not above 0.5: background
    iou = mask_iou(logits, target)
    assert iou.tolist() == [[pytest.approx(3 / 7), pytest.approx(6 / 16)]]
    empty = mask_iou(torch.full((1, 1, 2, 2), -1.0), torch.zeros(1, 2, 2))
    assert empty.item() == 0.0


# -- the SAM loss ----------------------------------------------------------------------------------


def three_outputs(targets: torch.Tensor) -> torch.Tensor:
    """Per query: output 0 inverted, output 1 right (confident), output 2 all background."""
    sign = targets.float() * 2 - 1
    return torch.stack([-4 * sign, 8 * sign, torch.full_like(sign, -3.0)], dim=1)


def test_min_over_multimask_picks_the_best_output():
    targets = torch.rand(5, 16, 16) > 0.6
    logits = three_outputs(targets)
    iou_pred = torch.full((5, 3), 0.5)
    terms = sam_loss_terms(logits, iou_pred, targets)
    assert terms["best"].tolist() == [1] * 5
    parts = mask_losses(logits, targets)
    mask_term = 20 * parts["focal"][:, 1] + parts["dice"][:, 1]
    iou_target = mask_iou(logits, targets)
    iou_term = ((iou_pred - iou_target) ** 2).mean(1)
    torch.testing.assert_close(terms["loss"], (mask_term + iou_term).mean())
    torch.testing.assert_close(terms["focal"], parts["focal"][:, 1].mean())
    torch.testing.assert_close(terms["iou_target"][:, 1], torch.ones(5))


def test_min_is_per_query():
    targets = torch.rand(2, 8, 8) > 0.5
    logits = three_outputs(targets)
    logits[1] = logits[1, [2, 0, 1]]  # query 1: the right output is now the third
    assert sam_loss_terms(logits, torch.zeros(2, 3), targets)["best"].tolist() == [1, 2]


def test_gradient_flows_only_through_the_chosen_outputs_mask_loss():
    targets = torch.rand(4, 12, 12) > 0.5
    logits = (three_outputs(targets) + 0.3 * torch.randn(4, 3, 12, 12)).requires_grad_()
    iou_pred = torch.rand(4, 3, requires_grad=True)
    loss, logs = sam_loss(logits, iou_pred, targets)
    loss.backward()
    assert logits.grad is not None and iou_pred.grad is not None
    assert (logits.grad[:, [0, 2]] == 0).all()
    assert (logits.grad[:, 1].abs().sum(dim=(-2, -1)) > 0).all()
    assert (iou_pred.grad != 0).all()  # every output's IoU prediction is supervised
    assert set(logs) == {"loss", "focal", "dice", "iou_mse"}
    assert all(isinstance(v, float) for v in logs.values())
    assert logs["loss"] == pytest.approx(loss.item())


def test_iou_supervision_of_the_chosen_output_only():
    targets = torch.rand(3, 8, 8) > 0.5
    logits = three_outputs(targets)
    iou_pred = torch.rand(3, 3, requires_grad=True)
    loss, _ = sam_loss(logits, iou_pred, targets, supervise_all_iou=False)
    loss.backward()
    assert iou_pred.grad is not None
    assert (iou_pred.grad[:, [0, 2]] == 0).all() and (iou_pred.grad[:, 1] != 0).all()


def test_single_output_and_weights():
    targets = torch.rand(3, 8, 8) > 0.5
    logits = torch.randn(3, 1, 8, 8)
    iou_pred = torch.rand(3, 1)
    loss, logs = sam_loss(logits, iou_pred, targets, multimask=False, iou_weight=0.0)
    parts = mask_losses(logits, targets)
    expected = (20 * parts["focal"] + parts["dice"]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["dice"] == pytest.approx(parts["dice"].mean().item(), rel=1e-6)
    with pytest.raises(InputError, match="multimask=False"):
        sam_loss(torch.randn(3, 3, 8, 8), torch.rand(3, 3), targets, multimask=False)


def test_bad_shapes_raise_named_errors():
    targets = torch.rand(3, 8, 8) > 0.5
    with pytest.raises(InputError, match="Qxhxw"):
        sam_loss(torch.randn(3, 3, 4, 4), torch.rand(3, 3), targets)
    with pytest.raises(InputError, match="iou_pred"):
        sam_loss(torch.randn(3, 3, 8, 8), torch.rand(3, 2), targets)
    with pytest.raises(InputError, match="QxMxhxw"):
        mask_losses(torch.randn(3, 8, 8), targets)
    with pytest.raises(InputError, match="broadcast"):
        dice_loss(torch.randn(3, 8, 8), torch.rand(2, 8, 8))


def test_bf16_autocast_computes_the_loss_in_float32():
    targets = torch.rand(4, 16, 16) > 0.5
    logits = (torch.randn(4, 3, 16, 16) * 5).to(torch.bfloat16).requires_grad_()
    iou_pred = torch.rand(4, 3).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = sam_loss(logits, iou_pred, targets)
    reference, _ = sam_loss(logits.detach().float(), iou_pred.float(), targets)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16


# -- resizing ------------------------------------------------------------------------------------


def test_downsample_masks_is_the_covered_fraction():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, 0, 0] = True
    small = downsample_masks(masks, 2)
    assert small.dtype == torch.float32 and small.shape == (2, 2, 2)
    assert small[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert small[1, 0, 0].item() == pytest.approx(1 / 16)
    assert downsample_masks(masks, (4, 2)).shape == (2, 4, 2)


def test_upsample_logits_shape_and_values():
    logits = torch.randn(3, 2, 4, 4)
    up = upsample_logits(logits, 16)
    assert up.shape == (3, 2, 16, 16)
    flat = torch.full((1, 1, 4, 4), 2.5)
    assert torch.allclose(upsample_logits(flat, (8, 12), mode="bicubic"), torch.tensor(2.5))
    with pytest.raises(InputError, match="mode"):
        upsample_logits(logits, 8, mode="nearest")


def test_per_query_terms_reduce_to_the_loss():
    targets = torch.rand(4, 8, 8) > 0.5
    logits = torch.randn(4, 3, 8, 8, requires_grad=True)
    iou_pred = torch.rand(4, 3)
    terms = sam_loss_terms(logits, iou_pred, targets, per_query=True)
    assert terms["per_query"].shape == (4,) and terms["per_query"].requires_grad
    torch.testing.assert_close(terms["per_query"].mean(), terms["loss"])
    for name in ("focal", "dice", "iou_mse"):
        torch.testing.assert_close(terms[f"per_query_{name}"].mean(), terms[name])
    assert "per_query" not in sam_loss_terms(logits, iou_pred, targets)
