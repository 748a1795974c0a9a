"""Ground truth and first prompts of one image, as the zero-shot benchmark derives them.

:class:`PreparePrompts` turns an image's kept instances (:class:`esam.data.coco.ImageSpec`)
into a :class:`ZeroShotPayload`: the decoded masks (QxHxW bool) and, per instance, a box (from
the annotation's ``bbox`` or the mask's tight box, clipped to the image unless told otherwise)
or its first clicks (``random``: seeded per instance by :func:`esam.data.prompts.instance_rng`;
``center``: the deepest mask pixel). Instances whose mask does not decode or is empty, or whose
box lies outside the image, are counted under their reason instead. The benchmark
(``esam eval zeroshot``) and the validation of fine-tuning runs both derive their prompts here,
so the same data give the same prompts in both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from esam.data.coco import ImageSpec, InstanceSpec, decoded_instances
from esam.data.prompts import (
    box_from_bbox,
    box_from_mask,
    center_click,
    clip_boxes,
    empty_boxes,
    instance_rng,
    n_clicks,
    random_clicks,
)
from esam.data.skips import SKIP_BOX_OUTSIDE
from esam.errors import InputError


@dataclass
class ZeroShotPayload:
    """Per-image ground truth and first prompts, prepared in a DataLoader worker.

    Attributes:
        instances: the instances evaluated (those with a non-empty mask).
        gt_masks: QxHxW bool.
        boxes: Qx4 float32 (x0, y0, x1, y1) clipped to the image, box prompts only.
        points: QxNx2 float32 (x, y) clicks (the first click only for ``iterative``).
        labels: QxN int64.
        skips: instances left out at this stage, by reason.
    """

    instances: list[InstanceSpec]
    gt_masks: np.ndarray
    boxes: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None
    skips: Counter[str]


def _bbox(inst: InstanceSpec) -> tuple[float, float, float, float]:
    if inst.bbox is None:  # excluded at loading when boxes come from the annotation
        raise InputError(f"annotation id {inst.ann_id} has no usable bbox")
    return inst.bbox


@dataclass(frozen=True)
class PreparePrompts:
    """Worker-side step: decode masks and derive each instance's prompt (picklable)."""

    prompt: str
    click: str
    box_source: str
    seed: int
    clip: bool = True

    def __call__(self, spec: ImageSpec, image: np.ndarray) -> ZeroShotPayload:
        h, w = spec.height, spec.width
        skips: Counter[str] = Counter()
        kept: list[InstanceSpec] = []
        masks: list[np.ndarray] = []
        kept_boxes: list[np.ndarray] = []
        for inst, m in decoded_instances(spec, skips):
            if self.prompt == "box":
                raw = box_from_bbox(_bbox(inst)) if self.box_source == "bbox" else box_from_mask(m)
                box = clip_boxes(raw, h, w)[0]
                if empty_boxes(box)[0]:
                    skips[SKIP_BOX_OUTSIDE] += 1
                    continue
                kept_boxes.append(box if self.clip else raw)
            kept.append(inst)
            masks.append(m)
        gt = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        boxes = points = labels = None
        q = len(kept)
        if self.prompt == "box":
            boxes = np.stack(kept_boxes) if q else np.zeros((0, 4), np.float32)
        else:
            n = n_clicks(self.prompt) if self.click == "random" else 1
            points = np.zeros((q, n, 2), dtype=np.float32)
            labels = np.ones((q, n), dtype=np.int64)
            for k, (inst, m) in enumerate(zip(kept, masks, strict=True)):
                if self.click == "random":
                    points[k] = random_clicks(
                        m, n, instance_rng(self.seed, spec.image_id, inst.ann_id)
                    )
                else:  # center, and the first click of iterative
                    points[k, 0] = center_click(m)
        return ZeroShotPayload(kept, gt, boxes, points, labels, skips)
