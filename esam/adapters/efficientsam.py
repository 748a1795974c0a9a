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

from esam.adapters.base import Prediction, Prompts, SegmentationAdapter
from esam.errors import InputError

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
        info = getattr(model, "weights_info", None) or {}
        #: where the weights come from: the checkpoint's note (e.g. "standin"), else
        #: "untrained" without a checkpoint
        self.weights_note: str | None = info.get("weights") or (None if checkpoint else "untrained")
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
            "config": cfg.to_dict() if cfg is not None else None,
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

    An esam checkpoint (written by :func:`esam.save_checkpoint` with a config) carries its
    architecture, and the model is built from that config, so reduced models (e.g. a smaller
    ``img_size`` or fewer encoder blocks) load too. Official files and bare state dicts carry no
    config and get the registry's architecture of ``name``.

    Args:
        name: registry name, e.g. ``efficientsam_vitt``.
        checkpoint: official ``efficient_sam_vit*.pt`` / ``.pt.zip``, an esam checkpoint or
            safetensors file.
        device: torch device string.
        allow_untrained: build with untrained weights when ``checkpoint`` is None (timing only).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: no checkpoint (and not ``allow_untrained``), a checkpoint saved for another
            model, an invalid stored config, or weights that do not fit the architecture
            (:class:`esam.CheckpointError`).
    """
    import esam
    from esam.checkpoint import OFFICIAL_WEIGHTS_HINT

    if checkpoint is None and not allow_untrained:
        raise InputError(f"model {name!r} needs --checkpoint. {OFFICIAL_WEIGHTS_HINT}")
    if checkpoint is None:
        model = esam.build_model(name)
    else:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"checkpoint file not found: {checkpoint}. {OFFICIAL_WEIGHTS_HINT}"
            )
        model = _model_from_checkpoint(name, checkpoint)
    model = model.to(torch.device(device)).eval()
    return EfficientSamAdapter(model, name=name, checkpoint=checkpoint)


def _model_from_checkpoint(name: str, checkpoint: str) -> Any:
    """An EfficientSAM ``name`` with the weights (and, for esam files, the config) of a file."""
    import esam

    model = esam.build_model(name, checkpoint)  # builds the stored config of esam checkpoints
    log.info("%s: architecture %s", checkpoint, model.config.to_dict())
    return model.eval()


def efficientsam_names() -> list[str]:
    """The EfficientSAM registry names this adapter serves."""
    try:
        from esam.build import model_registry
    except ImportError:  # core package not importable: nothing to offer
        return []
    return sorted(model_registry)
