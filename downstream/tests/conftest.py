"""Fixtures: tiny esam ViT trunks and backbone checkpoints written through esam's own savers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from esam.checkpoint import save_backbone
from esam.modeling.vit import ViT

#: A 2-block, 32-wide trunk whose position embedding is stored at a 4x4 grid (64 px).
TINY_ARCH = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "patch_size": 16,
    "mlp_ratio": 4.0,
    "pretrain_img_size": 64,
    "pos_embed_cls_slot": True,
}


def tiny_vit(seed: int = 0, **overrides: object) -> ViT:
    """A randomly initialised (MAE init, seeded) tiny esam ViT."""
    torch.manual_seed(seed)
    vit = ViT(img_size=128, **{**TINY_ARCH, **overrides})  # type: ignore[arg-type]
    vit.init_weights()
    with torch.no_grad():  # the sin-cos table leaves the cls slot at 0; fill every parameter
        vit.pos_embed.add_(0.02 * torch.randn_like(vit.pos_embed))
    return vit


@pytest.fixture
def tiny_backbone_ckpt(tmp_path: Path) -> tuple[Path, ViT]:
    """(path of an esam backbone checkpoint of :func:`tiny_vit`, the ViT itself)."""
    vit = tiny_vit()
    path = save_backbone(tmp_path / "tiny_backbone.pt", vit.state_dict(), TINY_ARCH, {"test": 1})
    return Path(path), vit
