"""EfficientViT-SAM through the ``efficientsam`` PyPI package (Apache-2.0).

That package carries the EfficientViT-SAM model code of MIT Han Lab's efficientvit repository
(module ``efficientsam``; not related to esam's EfficientSAM). Its predictor follows
segment-anything's API, with its own preprocessing: the L models resize the longest side to
512 and pad to 512x512, the XL models use 1024; logits are upsampled bilinearly.
"""

from __future__ import annotations

import torch

from esam.adapters.sam import SamFamilyAdapter, load_state_dict_file, load_strict
from esam.errors import InputError

EFFICIENTVIT_SAM_WEIGHTS_HINT = (
    "EfficientViT-SAM checkpoints (efficientvit_sam_l0.pt ... efficientvit_sam_xl1.pt) are "
    "published in the Hugging Face repository mit-han-lab/efficientvit-sam (linked from "
    "https://github.com/mit-han-lab/efficientvit); download one yourself and pass its path with "
    "--checkpoint."
)

#: esam adapter name -> efficientsam package model zoo name
EFFICIENTVIT_SAM_MODELS: dict[str, str] = {
    f"efficientvit_sam_{v}": f"efficientvit-sam-{v}" for v in ("l0", "l1", "l2", "xl0", "xl1")
}


class EfficientViTSamAdapter(SamFamilyAdapter):
    """EfficientViT-SAM's predictor maps coordinates with its own stored sizes."""

    def to_input_frame(self, coords: torch.Tensor) -> torch.Tensor:
        return self.predictor.apply_coords_torch(coords)


def build_efficientvit_sam(
    name: str, checkpoint: str | None = None, device: str = "cpu"
) -> EfficientViTSamAdapter:
    """Factory of ``efficientvit_sam_l0`` ... ``efficientvit_sam_xl1`` (needs ``efficientsam``)."""
    if name not in EFFICIENTVIT_SAM_MODELS:
        raise InputError(
            f"unknown EfficientViT-SAM model {name!r}; choose from {sorted(EFFICIENTVIT_SAM_MODELS)}"
        )
    if checkpoint is None:
        raise InputError(f"model {name!r} needs --checkpoint. {EFFICIENTVIT_SAM_WEIGHTS_HINT}")
    try:
        from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor
        from efficientsam.sam_model_zoo import create_efficientvit_sam_model
    except ImportError as e:
        raise InputError(
            f"model {name!r} needs the efficientsam package (EfficientViT-SAM model code): "
            "pip install efficientsam"
        ) from e
    state = load_state_dict_file(checkpoint, EFFICIENTVIT_SAM_WEIGHTS_HINT)
    model = create_efficientvit_sam_model(EFFICIENTVIT_SAM_MODELS[name], pretrained=False)
    load_strict(model, state, checkpoint)
    model = model.to(torch.device(device)).eval()
    side = model.image_size[1]
    return EfficientViTSamAdapter(
        name,
        EfficientViTSamPredictor(model),
        checkpoint,
        preprocessing=(
            f"resize the longest side to {side} (bilinear), ImageNet mean/std, zero-pad to {side}x{side}"
        ),
    )
