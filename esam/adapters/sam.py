"""SAM ViT-B/L/H through the ``segment-anything`` package, and the shared SAM-family adapter.

Models whose predictor follows segment-anything's ``SamPredictor`` (``set_image``,
``predict_torch`` on prompts already mapped to the model's input frame) share
:class:`SamFamilyAdapter`; MobileSAM and EfficientViT-SAM reuse it. Each keeps its own
preprocessing: SAM resizes the longest side to 1024, pads to 1024x1024, and upsamples the
256x256 logits bilinearly back to the image (mask = logits > 0).

Weights are read from a path given by the user with ``torch.load(weights_only=True)``;
nothing is downloaded.
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

SAM_WEIGHTS_HINT = (
    "SAM checkpoints (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth) are "
    "published under 'Model Checkpoints' in the README of "
    "https://github.com/facebookresearch/segment-anything; download one yourself and pass its "
    "path with --checkpoint."
)

#: esam adapter name -> segment-anything registry key
SAM_ARCHS: dict[str, str] = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}


def load_state_dict_file(path: str, hint: str) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``, unwrapping ``{"model"|"state_dict": ...}``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message includes ``hint``).
        ValueError: the file is not a checkpoint of tensors.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}. {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        raise InputError(f"{path}: cannot be read as a PyTorch checkpoint: {e}") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a state dict of tensors")
    return obj


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load whose error lists every missing, unexpected or mis-shaped key."""
    from esam.checkpoint import load_state_dict_strict

    load_state_dict_strict(model, state, source)


class SamFamilyAdapter(SegmentationAdapter):
    """Adapter over a segment-anything style predictor.

    Args:
        name: adapter name recorded in results.
        predictor: object with ``set_image(image)``, ``predict_torch(point_coords, point_labels,
            boxes, multimask_output=...)``, ``original_size`` and ``transform``.
        checkpoint: weights path (recorded).
        preprocessing: human-readable description of the model's own preprocessing.
        max_prompts_per_call: prompts decoded per decoder call (bounds the QxMxHxW float
            temporaries of the full-resolution upsampling).
    """

    def __init__(
        self,
        name: str,
        predictor: Any,
        checkpoint: str | None,
        preprocessing: str,
        max_prompts_per_call: int = 64,
    ) -> None:
        self.name = name
        self.predictor = predictor
        self.checkpoint = checkpoint
        self.preprocessing = preprocessing
        self.max_prompts_per_call = max(1, int(max_prompts_per_call))

    @property
    def device(self) -> torch.device:
        return next(self.predictor.model.parameters()).device

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(np.ascontiguousarray(image), "RGB")

    def to_input_frame(self, coords: torch.Tensor) -> torch.Tensor:
        """Map ...x2 (x, y) image pixels to the model's input frame."""
        return self.predictor.transform.apply_coords_torch(coords, self.predictor.original_size)

    @torch.inference_mode()
    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        self.check_prompts(prompts)
        dev = self.device
        masks_out: list[np.ndarray] = []
        scores_out: list[np.ndarray] = []
        for start in range(0, len(prompts), self.max_prompts_per_call):
            part = prompts.select(slice(start, start + self.max_prompts_per_call))
            coords = labels = boxes = None
            if part.points is not None and part.labels is not None:
                coords = self.to_input_frame(
                    torch.as_tensor(part.points, dtype=torch.float32, device=dev)
                )
                labels = torch.as_tensor(part.labels, dtype=torch.int64, device=dev)
            if part.boxes is not None:
                b = torch.as_tensor(part.boxes, dtype=torch.float32, device=dev).reshape(-1, 2, 2)
                boxes = self.to_input_frame(b).reshape(-1, 4)
            masks, iou, _ = self.predictor.predict_torch(
                coords, labels, boxes, multimask_output=multimask_output
            )
            masks_out.append(masks.bool().cpu().numpy())
            scores_out.append(iou.float().cpu().numpy())
        return Prediction(np.concatenate(masks_out), np.concatenate(scores_out))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "sam-family",
            "preprocessing": self.preprocessing,
            "postprocessing": "logits upsampled bilinearly to the image size; mask = logits > 0",
            "multimask_order": "the model's output order",
        }


def build_sam(name: str, checkpoint: str | None = None, device: str = "cpu") -> SamFamilyAdapter:
    """Factory of ``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h`` (needs ``segment-anything``)."""
    if name not in SAM_ARCHS:
        raise InputError(f"unknown SAM model {name!r}; choose from {sorted(SAM_ARCHS)}")
    if checkpoint is None:
        raise InputError(f"model {name!r} needs --checkpoint. {SAM_WEIGHTS_HINT}")
    try:
        from segment_anything import SamPredictor, sam_model_registry
    except ImportError as e:
        raise InputError(
            f"model {name!r} needs the segment-anything package: pip install 'esam[sam]'"
        ) from e
    state = load_state_dict_file(checkpoint, SAM_WEIGHTS_HINT)
    model = sam_model_registry[SAM_ARCHS[name]](checkpoint=None)
    load_strict(model, state, checkpoint)
    model = model.to(torch.device(device)).eval()
    return SamFamilyAdapter(
        name,
        SamPredictor(model),
        checkpoint,
        preprocessing=(
            "resize the longest side to 1024 (bilinear), ImageNet mean/std, zero-pad to 1024x1024"
        ),
    )
