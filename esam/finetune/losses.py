"""SAM's training loss for EfficientSAM's mask decoder.

Segment Anything, appendix A ("Losses", "Making the model ambiguity-aware"):

* mask loss: focal and dice in a 20:1 ratio (``focal_weight * focal + dice_weight * dice``),
  computed between the target and **each** output of a query, and back-propagated only from
  the lowest (:func:`sam_loss` with ``multimask=True``); a query decoded with a single output
  (several prompts, ``multimask_output=False``) has just that one;
* IoU head: mean squared error between each predicted IoU and the IoU of the corresponding
  predicted mask (logits > 0) with the target, added with weight 1. The paper's sentence
  ("between the IoU prediction and the predicted mask's IoU with the ground truth mask")
  gives every output its own target, and the head exists to rank all candidates at inference,
  so by default all M outputs are supervised (``supervise_all_iou=True``, as in SAM 2.1's
  training configs); ``supervise_all_iou=False`` supervises only the output that the mask loss
  chose (SAM 2's code default).

Reductions: focal is the mean over a mask's pixels (the sigmoid focal loss of RetinaNet,
``alpha=0.25, gamma=2``), dice is ``1 - (2 * sum(p * t) + 1) / (sum(p) + sum(t) + 1)`` per mask,
and the total is the mean over queries of ``min_m(mask loss) + iou_weight * iou_mse``.

Targets may be soft (:func:`downsample_masks` averages a full-resolution mask over each
low-resolution pixel): focal and dice take them as they are; the IoU target binarises them at
0.5 (a pixel more than half covered belongs to the object, the counterpart of logits > 0).
A prediction and a target that are both empty have IoU 0, as in ``esam.eval.metrics``.

Precision: every term is computed in float32 from log-sigmoid forms (the cross-entropy by
``binary_cross_entropy_with_logits``; ``1 - p_t`` as ``sigmoid(-x)`` on the positive side and
``sigmoid(x)`` on the negative side), so logits of any size and bfloat16 logits under autocast
give finite, float32 losses.

Resolution: EfficientSAM's decoder predicts 256x256 logits for its 1024 px input. Comparing
them with targets downsampled to 256x256 (:func:`downsample_masks`) keeps the loss's memory at
1/16 of comparing logits upsampled to 1024x1024 (:func:`upsample_logits`), as SAM 2's training
code does; both are offered and the caller resizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from esam.errors import InputError

#: A soft target pixel belongs to the object (for the IoU target) above this value.
TARGET_THRESHOLD = 0.5

__all__ = [
    "TARGET_THRESHOLD",
    "dice_loss",
    "downsample_masks",
    "mask_iou",
    "mask_losses",
    "sam_loss",
    "sam_loss_terms",
    "sigmoid_focal_loss",
    "upsample_logits",
]


def _check_pair(logits: Tensor, targets: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise InputError("logits and targets must be torch tensors")
    if logits.ndim < 2:
        raise InputError(f"logits must have shape ...xhxw, got {tuple(logits.shape)}")
    try:
        torch.broadcast_shapes(logits.shape, targets.shape)
    except RuntimeError:
        raise InputError(
            f"targets {tuple(targets.shape)} do not broadcast to logits {tuple(logits.shape)}"
        ) from None


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss of each mask, the mean over its pixels.

    ``alpha_t * (1 - p_t) ** gamma * BCE(x, t)`` with ``p_t = p t + (1 - p)(1 - t)`` and
    ``alpha_t = alpha t + (1 - alpha)(1 - t)``; ``alpha < 0`` turns the class weighting off.

    Args:
        logits: ...xhxw mask logits (any float dtype).
        targets: ...xhxw in [0, 1] (bool, or soft), broadcastable to ``logits``.
        alpha: weight of the positive class.
        gamma: focusing exponent.

    Returns:
        ``...`` float32, one loss per mask.
    """
    _check_pair(logits, targets)
    x = logits.float()
    t = targets.float().expand_as(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    one_minus_pt = t * torch.sigmoid(-x) + (1 - t) * torch.sigmoid(x)
    loss = ce * one_minus_pt.pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss.mean(dim=(-2, -1))


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1.0) -> Tensor:
    """Dice loss of each mask: ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)``.

    Args:
        logits: ...xhxw mask logits; p = sigmoid(logits).
        targets: ...xhxw in [0, 1], broadcastable to ``logits``.
        eps: smoothing added to numerator and denominator (SAM: 1).

    Returns:
        ``...`` float32, one loss per mask.
    """
    _check_pair(logits, targets)
    p = torch.sigmoid(logits.float())
    t = targets.float().expand_as(p)
    inter = (p * t).sum(dim=(-2, -1))
    total = p.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1))
    return 1 - (2 * inter + eps) / (total + eps)


def _check_multimask(logits: Tensor, targets: Tensor) -> None:
    if logits.ndim != 4:
        raise InputError(f"logits must have shape QxMxhxw, got {tuple(logits.shape)}")
    q, _, h, w = logits.shape
    if tuple(targets.shape) != (q, h, w):
        raise InputError(
            f"targets must have shape Qxhxw = {(q, h, w)} (resize them to the logits' frame: "
            f"downsample_masks or upsample_logits), got {tuple(targets.shape)}"
        )


def mask_losses(logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Focal and dice loss of every output of every query.

    Args:
        logits: QxMxhxw.
        targets: Qxhxw in [0, 1], the same frame.

    Returns:
        ``{"focal": QxM, "dice": QxM}`` float32, unweighted.
    """
    _check_multimask(logits, targets)
    t = targets[:, None]
    return {"focal": sigmoid_focal_loss(logits, t), "dice": dice_loss(logits, t)}


@torch.no_grad()
def mask_iou(logits: Tensor, targets: Tensor) -> Tensor:
    """IoU of each thresholded prediction (logits > 0) with the binarised target (> 0.5).

    Args:
        logits: QxMxhxw.
        targets: Qxhxw in [0, 1], the same frame.

    Returns:
        QxM float32 (0 where both masks are empty); no gradient.
    """
    _check_multimask(logits, targets)
    pred = logits > 0
    gt = (targets > TARGET_THRESHOLD)[:, None]
    inter = (pred & gt).sum(dim=(-2, -1), dtype=torch.float32)
    union = (pred | gt).sum(dim=(-2, -1), dtype=torch.float32)
    return inter / union.clamp(min=1.0)


def sam_loss_terms(
    logits: Tensor,
    iou_pred: Tensor,
    targets: Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    multimask: bool = True,
    supervise_all_iou: bool = True,
    per_query: bool = False,
) -> dict[str, Tensor]:
    """SAM's loss as tensors (no value read back to the host); see :func:`sam_loss`.

    Args:
        per_query: also return each query's terms, for callers that weight or mask queries
            (e.g. padding queries of images with fewer masks) before reducing them.

    Returns:
        ``loss`` (0-d, with gradient), ``focal``, ``dice``, ``iou_mse`` (0-d, detached: means
        over queries of the chosen output's terms and of the supervised IoU errors), ``best``
        (Q int64, the output the mask loss chose) and ``iou_target`` (QxM, the actual IoUs).
        With ``per_query``: ``per_query`` (Q, with gradient; ``loss`` is its mean) and
        ``per_query_focal``, ``per_query_dice``, ``per_query_iou_mse`` (Q, detached).
    """
    _check_multimask(logits, targets)
    q, m = logits.shape[:2]
    if tuple(iou_pred.shape) != (q, m):
        raise InputError(f"iou_pred must have shape QxM = {(q, m)}, got {tuple(iou_pred.shape)}")
    if not multimask and m != 1:
        raise InputError(
            f"multimask=False expects one output per query (multimask_output=False), got M={m}"
        )
    terms = mask_losses(logits, targets)
    combined = focal_weight * terms["focal"] + dice_weight * terms["dice"]  # QxM
    best = combined.detach().argmin(dim=1)
    pick = best[:, None]
    mask_term = combined.gather(1, pick)[:, 0]
    iou_target = mask_iou(logits, targets)
    sq_err = (iou_pred.float() - iou_target).pow(2)
    iou_term = sq_err.mean(dim=1) if supervise_all_iou else sq_err.gather(1, pick)[:, 0]
    each = mask_term + iou_weight * iou_term
    focal = terms["focal"].detach().gather(1, pick)[:, 0]
    dice = terms["dice"].detach().gather(1, pick)[:, 0]
    out = {
        "loss": each.mean(),
        "focal": focal.mean(),
        "dice": dice.mean(),
        "iou_mse": iou_term.detach().mean(),
        "best": best,
        "iou_target": iou_target,
    }
    if per_query:
        out |= {
            "per_query": each,
            "per_query_focal": focal,
            "per_query_dice": dice,
            "per_query_iou_mse": iou_term.detach(),
        }
    return out


def sam_loss(
    logits: Tensor,
    iou_pred: Tensor,
    targets: Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    multimask: bool = True,
    supervise_all_iou: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """SAM's loss for one round of decoded queries.

    Per query: ``min over outputs m of (focal_weight * focal_m + dice_weight * dice_m)`` (only
    the chosen output's mask loss has a gradient) ``+ iou_weight * iou_mse``; then the mean
    over queries.

    Args:
        logits: QxMxhxw mask logits (M = 3 multimask, 1 single).
        iou_pred: QxM predicted IoU.
        targets: Qxhxw in [0, 1], in the logits' frame (:func:`downsample_masks` for the
            low-resolution logits, or :func:`upsample_logits` on the logits instead).
        focal_weight, dice_weight: mask-loss weights (SAM: 20, 1).
        iou_weight: weight of the IoU-prediction MSE (SAM: 1).
        multimask: the logits come from ``multimask_output=True``; False requires M = 1.
        supervise_all_iou: the IoU MSE over all M outputs (default) or only the chosen one.

    Returns:
        ``(loss, logs)``: the 0-d float32 loss with gradient, and floats ``loss``, ``focal``,
        ``dice`` (the chosen outputs' unweighted terms, mean over queries) and ``iou_mse``.
        The floats cost one device-to-host copy; :func:`sam_loss_terms` gives tensors.
    """
    terms = sam_loss_terms(
        logits,
        iou_pred,
        targets,
        focal_weight,
        dice_weight,
        iou_weight,
        multimask,
        supervise_all_iou,
    )
    names = ("loss", "focal", "dice", "iou_mse")
    values = torch.stack([terms[k].detach().float() for k in names]).tolist()
    return terms["loss"], dict(zip(names, values, strict=True))


def downsample_masks(masks: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Masks averaged over each pixel of a coarser frame (area interpolation): soft targets.

    EfficientSAM stretches the image to its square input without padding, so its 256x256
    logits cover the whole image: the target of any HxW mask is the mask resized to 256x256.

    Args:
        masks: QxHxW bool (or float in [0, 1]).
        size: output side, or (h, w).

    Returns:
        Qxhxw float32 in [0, 1]: the covered fraction of each output pixel.
    """
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise InputError(f"masks must have shape QxHxW, got {shape}")
    out = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(out) < 1:
        raise InputError(f"size must be positive, got {size}")
    return F.interpolate(masks[:, None].to(torch.float32), out, mode="area")[:, 0]


def upsample_logits(logits: Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Logits resized to a finer frame, for a loss at full resolution.

    Args:
        logits: QxMxhxw.
        size: output side, or (H, W).
        mode: ``bilinear`` (SAM 2's training code) or ``bicubic`` (EfficientSAM's official
            post-processing, ``EfficientSam.predict_masks``).

    Returns:
        QxMxHxW in the logits' dtype.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"logits must have shape QxMxhxw, got {shape}")
    if mode not in ("bilinear", "bicubic"):
        raise InputError(f"mode must be bilinear or bicubic, got {mode!r}")
    out = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(out) < 1:
        raise InputError(f"size must be positive, got {size}")
    return F.interpolate(logits, out, mode=mode, align_corners=False)
