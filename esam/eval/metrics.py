"""Size buckets, the choice among a prompt's masks and the aggregate mIoU of a run.

The IoU of two masks is :func:`esam.data.masks.mask_iou` (imported here too). Size buckets
follow COCO by the annotation's ``area``: small < 32^2, medium < 96^2, large otherwise (rule
``coco``). The ``inclusive`` rule of EfficientViT-SAM's evaluation closes every bucket at both
ends, so an area of exactly 32^2 or 96^2 counts in two buckets. mIoU is the mean per-instance
IoU in percent; sums use ``math.fsum`` so the result does not depend on the order rows arrive
in (one process or several).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from esam.data.masks import mask_iou
from esam.errors import InputError

SMALL_MAX_AREA = 32**2
MEDIUM_MAX_AREA = 96**2
SIZES = ("small", "medium", "large")
#: Text of each size-bucket rule, written into results.
SIZE_BUCKET_TEXT = {
    "coco": "small < 32^2 <= medium < 96^2 <= large, by annotation area",
    "inclusive": "small <= 32^2 <= medium <= 96^2 <= large, by annotation area (boundary areas "
    "count in both buckets)",
}

MASK_CHOICES = ("score", "single", "oracle", "score-single")
"""How one mask is chosen from a model's outputs:

* ``score``: run in multimask mode, keep the mask with the highest predicted IoU (default);
* ``single``: run in single-output mode, keep that mask;
* ``oracle``: run in multimask mode, keep the mask with the highest IoU against the ground truth
  (an upper bound; SAM's paper reports it as "oracle");
* ``score-single``: ``score`` for a prompt of one box or one click, ``single`` for a prompt of
  several clicks, as SAM returns its masks (its fourth, single output "is the only mask
  returned for multiple prompts", Kirillov et al. 2023, Appendix A).
"""


def round_mask_choice(mask_choice: str, clicks_per_prompt: int | None) -> str:
    """The mask choice of one decoder call: ``score-single`` resolved by the prompt's size.

    Args:
        mask_choice: one of :data:`MASK_CHOICES`.
        clicks_per_prompt: clicks each prompt of the call holds (padding included), None for
            box prompts.
    """
    if mask_choice != "score-single":
        return mask_choice
    return "single" if clicks_per_prompt is not None and clicks_per_prompt > 1 else "score"


def multimask_rule(mask_choice: str) -> bool | str:
    """What the results record as ``multimask_output`` for a mask choice."""
    if mask_choice == "score-single":
        return "for a prompt of one box or one click; single output for several clicks"
    return mask_choice != "single"


def size_bucket(area: float) -> str:
    """COCO size bucket of an annotation area in pixels."""
    if area < SMALL_MAX_AREA:
        return "small"
    if area < MEDIUM_MAX_AREA:
        return "medium"
    return "large"


def size_buckets_of(area: float, rule: str = "coco") -> tuple[str, ...]:
    """Every size bucket an annotation area belongs to under ``rule`` (``coco``: exactly one)."""
    if rule == "coco":
        return (size_bucket(area),)
    if rule != "inclusive":
        raise InputError(
            f"unknown size-bucket rule {rule!r}; choose from {tuple(SIZE_BUCKET_TEXT)}"
        )
    out = []
    if area <= SMALL_MAX_AREA:
        out.append("small")
    if SMALL_MAX_AREA <= area <= MEDIUM_MAX_AREA:
        out.append("medium")
    if area >= MEDIUM_MAX_AREA:
        out.append("large")
    return tuple(out)


def choose_masks(
    masks: np.ndarray, scores: np.ndarray, gt: np.ndarray | None, mask_choice: str
) -> np.ndarray:
    """Index of the chosen mask for each of Q prompts.

    Args:
        masks: QxMxHxW bool.
        scores: QxM predicted IoU.
        gt: QxHxW bool ground truth (needed by ``oracle``).
        mask_choice: one of :data:`MASK_CHOICES` (``score-single`` resolved already, see
            :func:`round_mask_choice`).

    Returns:
        Q int64 indices into M (ties go to the lowest index).
    """
    if mask_choice == "single":
        return np.zeros(masks.shape[0], dtype=np.int64)
    if mask_choice == "score":
        return np.argmax(scores, axis=1).astype(np.int64)
    if mask_choice == "oracle":
        if gt is None:
            raise InputError("mask choice 'oracle' needs ground-truth masks")
        return np.argmax(mask_iou(masks, gt[:, None]), axis=1).astype(np.int64)
    raise InputError(f"unknown mask choice {mask_choice!r}; choose from {MASK_CHOICES}")


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def aggregate_miou(rows: Iterable[Mapping[str, Any]], size_rule: str = "coco") -> dict[str, Any]:
    """mIoU over all rows and per size bucket.

    Args:
        rows: per-instance rows with ``iou`` (percent) and ``area``.
        size_rule: ``coco`` or ``inclusive`` (see :func:`size_buckets_of`).

    Returns:
        ``miou``, ``miou_small``, ``miou_medium``, ``miou_large`` (None for an empty bucket)
        and the counts ``n_instances``, ``n_small``, ``n_medium``, ``n_large``.
    """
    by_size: dict[str, list[float]] = {s: [] for s in SIZES}
    every: list[float] = []
    for row in rows:
        iou = float(row["iou"])
        every.append(iou)
        for bucket in size_buckets_of(float(row["area"]), size_rule):
            by_size[bucket].append(iou)
    out: dict[str, Any] = {"miou": _mean(every)}
    for s in SIZES:
        out[f"miou_{s}"] = _mean(by_size[s])
    out["n_instances"] = len(every)
    for s in SIZES:
        out[f"n_{s}"] = len(by_size[s])
    return out
