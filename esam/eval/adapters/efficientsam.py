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
        raise ValueError(f"model {name!r} needs --checkpoint. {OFFICIAL_WEIGHTS_HINT}")
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
    from esam.build import build_from_config
    from esam.checkpoint import CheckpointError, check_state_dict

    state, info = esam.read_checkpoint(checkpoint)
    saved_name = info.get("model_name")
    if saved_name and saved_name != name:
        raise CheckpointError(f"{checkpoint}: checkpoint is for model {saved_name!r}, not {name!r}")
    stored = info.get("config")
    if isinstance(stored, dict) and stored:
        try:
            config = esam.EfficientSamConfig.from_dict(stored)
        except (TypeError, ValueError) as e:
            raise CheckpointError(
                f"{checkpoint}: invalid model config stored in the file: {e}"
            ) from e
        model = build_from_config(config)
        model.model_name = name
        log.info("%s: architecture from the checkpoint's config %s", checkpoint, config.to_dict())
    else:
        model = esam.build_model(name)
    check_state_dict(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    return model.eval()


def efficientsam_names() -> list[str]:
    """The EfficientSAM registry names this adapter serves."""
    try:
        from esam.build import model_registry
    except ImportError:  # core package not importable: nothing to offer
        return []
    return sorted(model_registry)
