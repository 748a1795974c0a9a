"""MobileSAM (TinyViT encoder, SAM's decoder) through the ``mobilesam-mirror`` package.

``mobilesam-mirror`` (Apache-2.0) packages the official MobileSAM code as the ``mobile_sam``
module (``sam_model_registry["vit_t"]``, ``SamPredictor``); it needs ``timm``. Preprocessing is
SAM's: longest side resized to 1024, padded to 1024x1024.
"""

from __future__ import annotations

import torch

from esam.adapters.sam import SamFamilyAdapter, load_state_dict_file, load_strict
from esam.errors import InputError

MOBILESAM_WEIGHTS_HINT = (
    "The MobileSAM checkpoint (mobile_sam.pt) is published in the weights/ folder of "
    "https://github.com/ChaoningZhang/MobileSAM; download it yourself and pass its path with "
    "--checkpoint."
)


def build_mobilesam(
    name: str, checkpoint: str | None = None, device: str = "cpu"
) -> SamFamilyAdapter:
    """Factory of ``mobilesam`` (needs ``pip install mobilesam-mirror timm``)."""
    if checkpoint is None:
        raise InputError(f"model {name!r} needs --checkpoint. {MOBILESAM_WEIGHTS_HINT}")
    try:
        from mobile_sam import SamPredictor, sam_model_registry
    except ImportError as e:
        raise InputError(
            f"model {name!r} needs the mobilesam-mirror package (module mobile_sam) and timm: "
            "pip install mobilesam-mirror timm"
        ) from e
    state = load_state_dict_file(checkpoint, MOBILESAM_WEIGHTS_HINT)
    model = sam_model_registry["vit_t"](checkpoint=None)
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
