"""segment-anything's ``SamAutomaticMaskGenerator`` driving an EfficientSAM model.

The reference for :class:`~esam.everything.EfficientSamAutomaticMaskGenerator`: SAM's own
generator code, unchanged, with its ``SamPredictor`` replaced by :class:`SamPredictorShim`,
which answers the calls the generator makes (``set_image``, ``reset_image``,
``transform.apply_coords``, ``predict_torch``, ``device``, ``model.mask_threshold``) with an
EfficientSAM model and EfficientSAM's post-processing (256x256 logits upsampled bicubically to
the image size). Tests compare records against it; the benchmark times it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from esam.data.images import as_rgb_uint8
from esam.modeling.efficient_sam import EfficientSam
from esam.utils.deps import require


class _IdentityTransform:
    """EfficientSAM takes prompts in image pixels: no resizing of coordinates."""

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        return coords


class SamPredictorShim:
    """The part of ``segment_anything.SamPredictor`` that ``SamAutomaticMaskGenerator`` uses.

    Args:
        model: an :class:`EfficientSam`.
    """

    def __init__(self, model: EfficientSam) -> None:
        self.model = model.eval()
        self.transform = _IdentityTransform()
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset_image(self) -> None:
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.is_image_set = False

    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an HxWx3 uint8 RGB image (the embedding is 1x256x64x64)."""
        image = as_rgb_uint8(image)
        t = torch.tensor(image).permute(2, 0, 1)[None]
        self.features = self.model.get_image_embeddings(
            t.to(self.device, dtype=torch.float32) / 255.0
        )
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.is_image_set = True

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode BxNx2 point prompts (image pixels) with BxN labels.

        Returns:
            masks BxCxHxW (logits if ``return_logits`` else bool), predicted IoU BxC, and
            low-resolution logits BxCx256x256.
        """
        if self.features is None or self.original_size is None:
            raise RuntimeError("no image set: call set_image(image) first")
        if boxes is not None or mask_input is not None or point_coords is None:
            raise NotImplementedError("the shim decodes point prompts only")
        assert point_labels is not None
        h, w = self.original_size
        pts = point_coords.to(self.device, torch.float32)[None]
        lbl = point_labels.to(self.device, torch.int64)[None]
        low_res, iou = self.model.predict_masks(self.features, pts, lbl, multimask_output, h, w)
        low_res, iou = low_res[0].float(), iou[0].float()
        b, c = low_res.shape[:2]
        masks = F.interpolate(low_res.flatten(0, 1)[:, None], (h, w), mode="bicubic")
        masks = masks.reshape(b, c, h, w)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res


def sam_generator(model: EfficientSam, **settings: Any) -> Any:
    """segment-anything's ``SamAutomaticMaskGenerator`` driving ``model`` through the shim.

    Args:
        model: an :class:`EfficientSam`.
        **settings: ``SamAutomaticMaskGenerator`` keyword arguments (``points_per_side``, ...).

    Raises:
        MissingDependencyError: segment-anything is not installed.
    """
    sam_amg = require("segment_anything.automatic_mask_generator", extra="sam")
    # SamPredictor(model) only reads model.image_encoder.img_size; the shim replaces it at once
    generator = sam_amg.SamAutomaticMaskGenerator(model, **settings)
    generator.predictor = SamPredictorShim(model)
    return generator
