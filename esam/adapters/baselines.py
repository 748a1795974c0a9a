"""Reference baselines that need no weights: the filled prompt box and the ground truth.

They bound every model's numbers from below and above and check the harness itself: ``oracle``
must score exactly 100 mIoU, and ``box_fill`` gives the IoU of a box with its object, which can
be computed by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from esam.adapters.base import Prediction, Prompts, SegmentationAdapter
from esam.errors import InputError


def fill_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise boxes: a pixel is inside when its centre is.

    Args:
        boxes: Qx4 (x0, y0, x1, y1) in pixels, pixel (row i, column j) covering
            [j, j+1) x [i, i+1).
        height, width: image size.

    Returns:
        QxHxW bool; pixel (i, j) is True when x0 <= j + 0.5 <= x1 and y0 <= i + 0.5 <= y1.
    """
    cx = np.arange(width, dtype=np.float64) + 0.5
    cy = np.arange(height, dtype=np.float64) + 0.5
    b = np.asarray(boxes, dtype=np.float64)
    in_x = (cx[None, :] >= b[:, 0:1]) & (cx[None, :] <= b[:, 2:3])  # QxW
    in_y = (cy[None, :] >= b[:, 1:2]) & (cy[None, :] <= b[:, 3:4])  # QxH
    return in_y[:, :, None] & in_x[:, None, :]


class _ImageSizeMixin:
    _hw: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be HxWx3, got shape {image.shape}")
        self._hw = (int(image.shape[0]), int(image.shape[1]))

    def _size(self) -> tuple[int, int]:
        if self._hw is None:
            raise RuntimeError("no image set: call set_image(image) before predict")
        return self._hw


class BoxFillAdapter(_ImageSizeMixin, SegmentationAdapter):
    """The prompt box itself, filled: the floor any box-prompted model must clear."""

    name = "box_fill"
    supports_points = False

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        self.check_prompts(prompts)
        assert prompts.boxes is not None
        h, w = self._size()
        masks = fill_boxes(prompts.boxes, h, w)[:, None]
        return Prediction(masks, np.ones(masks.shape[:2], dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        return {"kind": "reference", "rule": "pixels whose centre lies inside the prompt box"}


class OracleAdapter(_ImageSizeMixin, SegmentationAdapter):
    """Returns the ground-truth mask: scores 100 mIoU by construction (checks the harness)."""

    name = "oracle"
    needs_ground_truth = True

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        self.check_prompts(prompts)
        assert prompts.gt_masks is not None
        h, w = self._size()
        if prompts.gt_masks.shape[1:] != (h, w):
            raise InputError(f"gt_masks are {prompts.gt_masks.shape[1:]} but the image is {(h, w)}")
        masks = prompts.gt_masks.astype(bool)[:, None]
        return Prediction(masks, np.ones(masks.shape[:2], dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        return {"kind": "reference", "rule": "the ground-truth mask of the prompted instance"}


def build_box_fill(name: str, checkpoint: str | None = None, device: str = "cpu") -> BoxFillAdapter:
    """Factory of the ``box_fill`` baseline (``checkpoint`` and ``device`` are not used)."""
    if checkpoint is not None:
        raise InputError("box_fill takes no --checkpoint")
    return BoxFillAdapter()


def build_oracle(name: str, checkpoint: str | None = None, device: str = "cpu") -> OracleAdapter:
    """Factory of the ``oracle`` baseline (``checkpoint`` and ``device`` are not used)."""
    if checkpoint is not None:
        raise InputError("oracle takes no --checkpoint")
    return OracleAdapter()
