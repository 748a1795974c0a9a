"""The adapter interface every benchmarked model implements: encode once, decode many.

An adapter wraps one promptable segmentation model. The harness calls :meth:`set_image` once per
image and then :meth:`predict` once per prompt round with *all* prompts of that image, so models
with a heavy image encoder and a light prompt decoder (SAM and its efficient variants) are timed
and evaluated the way they are meant to be used.

Coordinates are always (x, y) pixels of the image given to :meth:`set_image` (x = column,
y = row); each adapter maps them to its own input frame.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from esam.errors import InputError


@dataclass(frozen=True)
class Prompts:
    """The prompts of Q instances of one image.

    Attributes:
        boxes: Qx4 float32 boxes (x0, y0, x1, y1) in image pixels, or None.
        points: QxNx2 float32 clicks (x, y) in image pixels, or None.
        labels: QxN int64 click labels (1 positive, 0 negative, -1 padding), or None.
        gt_masks: QxHxW bool ground-truth masks; only reference baselines that declare
            ``needs_ground_truth`` read them, and the harness passes them only to those.
    """

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    gt_masks: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.boxes is None and self.points is None:
            raise InputError("Prompts needs boxes or points")
        if (self.points is None) != (self.labels is None):
            raise InputError("Prompts: points and labels go together")
        sizes = set()
        if self.boxes is not None:
            if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
                raise InputError(f"Prompts.boxes must be Qx4, got {self.boxes.shape}")
            sizes.add(self.boxes.shape[0])
        if self.points is not None and self.labels is not None:
            if self.points.ndim != 3 or self.points.shape[2] != 2:
                raise InputError(f"Prompts.points must be QxNx2, got {self.points.shape}")
            if self.labels.shape != self.points.shape[:2]:
                raise InputError(
                    f"Prompts.labels must be QxN = {self.points.shape[:2]}, got {self.labels.shape}"
                )
            sizes.add(self.points.shape[0])
        if self.gt_masks is not None:
            sizes.add(self.gt_masks.shape[0])
        if len(sizes) != 1:
            raise InputError(f"Prompts: boxes, points and gt_masks disagree on Q: {sorted(sizes)}")

    def __len__(self) -> int:
        if self.boxes is not None:
            return int(self.boxes.shape[0])
        assert self.points is not None
        return int(self.points.shape[0])

    def select(self, index: slice | np.ndarray) -> Prompts:
        """The prompts of a subset of the Q instances (a slice or an index array)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Prompts(pick(self.boxes), pick(self.points), pick(self.labels), pick(self.gt_masks))


@dataclass(frozen=True)
class Prediction:
    """Masks for Q prompts.

    Attributes:
        masks: QxMxHxW bool masks in image pixels (M = 3 in multimask mode for SAM-like models,
            1 otherwise).
        scores: QxM float32 predicted IoU of each mask (1.0 for models without a score).
    """

    masks: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.masks.ndim != 4 or self.masks.dtype != np.bool_:
            raise InputError(
                f"Prediction.masks must be QxMxHxW bool, got {self.masks.shape} {self.masks.dtype}"
            )
        if self.scores.shape != self.masks.shape[:2]:
            raise InputError(
                f"Prediction.scores must be QxM = {self.masks.shape[:2]}, got {self.scores.shape}"
            )


class SegmentationAdapter(abc.ABC):
    """A promptable segmentation model seen through one interface.

    Subclasses set ``name`` and implement :meth:`set_image` and :meth:`predict`.
    """

    name: str = "adapter"
    #: The adapter reads ``Prompts.gt_masks`` (reference baselines only).
    needs_ground_truth: ClassVar[bool] = False
    #: Prompt kinds the model accepts.
    supports_boxes: ClassVar[bool] = True
    supports_points: ClassVar[bool] = True

    checkpoint: str | None = None

    @abc.abstractmethod
    def set_image(self, image: np.ndarray) -> None:
        """Encode one image: HxWx3 uint8 RGB, as stored on disk (no EXIF rotation)."""

    @abc.abstractmethod
    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        """Masks for all ``prompts`` of the current image (memory is bounded internally)."""

    def describe(self) -> dict[str, Any]:
        """Facts about the model's processing recorded with every result (preprocessing, ...)."""
        return {}

    def check_prompts(self, prompts: Prompts) -> None:
        """Raise ValueError when the model cannot take this kind of prompt."""
        if prompts.boxes is not None and not self.supports_boxes:
            raise InputError(f"model {self.name!r} does not accept box prompts")
        if prompts.points is not None and not self.supports_points:
            raise InputError(f"model {self.name!r} does not accept point prompts")
        if self.needs_ground_truth and prompts.gt_masks is None:
            raise InputError(f"model {self.name!r} needs ground-truth masks with its prompts")


def empty_prediction(q: int, m: int, height: int, width: int) -> Prediction:
    """A Prediction with ``q`` rows of ``m`` all-False masks (for Q = 0 and similar)."""
    return Prediction(
        np.zeros((q, m, height, width), dtype=bool), np.zeros((q, m), dtype=np.float32)
    )
