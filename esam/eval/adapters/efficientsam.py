"""esam's EfficientSAM models behind the adapter interface.

Processing is exactly the official model's, done by :class:`esam.EfficientSamPredictor`: the
image is stretched to 1024x1024 (no padding, no aspect-ratio preservation), the 256x256 mask
logits are upsampled bicubically to the image size, and mask = logits > 0. Boxes enter as two
corner points (labels 2 and 3), as in the official code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esam.eval.adapters.base import Prediction, Prompts, SegmentationAdapter

log = logging.getLogger(__name__)


class EfficientSamAdapter(SegmentationAdapter):
    """Wraps an :class:`esam.EfficientSam` and its predictor.

    Args:
        model: the model, already on its device and loaded with weights.
        name: registry name recorded in results (``efficientsam_vitt``, ...).
        checkpoint: the weights file it was loaded from (recorded), or None.
    """

    def __init__(self, model: Any, name: str, checkpoint: str | None = None) -> None:
        from esam import EfficientSamPredictor

        self.model = model.eval()
        self.name = name
        self.checkpoint = checkpoint
        self.predictor = EfficientSamPredictor(self.model)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    @torch.inference_mode()
    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        self.check_prompts(prompts)
        masks, iou, _ = self.predictor.predict_batch(
            point_coords=prompts.points,
            point_labels=prompts.labels,
            boxes=prompts.boxes,
            multimask_output=multimask_output,
        )
        return Prediction(np.asarray(masks, dtype=bool), np.asarray(iou, dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        cfg = getattr(self.model, "config", None)
        size = getattr(cfg, "img_size", 1024)
        return {
            "kind": "efficientsam",
            "preprocessing": f"stretch to {size}x{size} (bilinear), ImageNet mean/std",
            "postprocessing": "256x256 logits upsampled bicubically to the image size; mask = logits > 0",
            "box_encoding": "two corner points with labels 2 and 3",
            "multimask_order": "sorted by predicted IoU, highest first",
        }


def build_efficientsam(
    name: str,
    checkpoint: str | None = None,
    device: str = "cpu",
    allow_untrained: bool = False,
) -> EfficientSamAdapter:
    """Factory for every name of :data:`esam.model_registry`.

    Args:
        name: registry name, e.g. ``efficientsam_vitt``.
        checkpoint: official ``efficient_sam_vit*.pt`` / ``.pt.zip``, an esam checkpoint or
            safetensors file.
        device: torch device string.
        allow_untrained: build with untrained weights when ``checkpoint`` is None (timing only).
    """
    import esam
    from esam.checkpoint import OFFICIAL_WEIGHTS_HINT

    if checkpoint is None and not allow_untrained:
        raise ValueError(f"model {name!r} needs --checkpoint. {OFFICIAL_WEIGHTS_HINT}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint file not found: {checkpoint}. {OFFICIAL_WEIGHTS_HINT}")
    model = esam.build_model(name, checkpoint=checkpoint)
    model = model.to(torch.device(device)).eval()
    return EfficientSamAdapter(model, name=name, checkpoint=checkpoint)


def efficientsam_names() -> list[str]:
    """The EfficientSAM registry names this adapter serves."""
    try:
        from esam.build import model_registry
    except ImportError:  # core package not importable: nothing to offer
        return []
    return sorted(model_registry)
