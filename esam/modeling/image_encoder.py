"""EfficientSAM image encoder: the plain ViT trunk plus a neck to 256 channels."""

from __future__ import annotations

import torch
from torch import nn

from esam.modeling.common import LayerNorm2d
from esam.modeling.vit import ViT


class ImageEncoderViT(ViT):
    """ViT trunk + neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d).

    Parameter names match the ``image_encoder.*`` keys of the official checkpoints.
    Input Bx3xSxS normalised image (S = ``img_size``); output Bx``neck_dim``x(S/16)x(S/16).
    """

    def __init__(self, *, neck_dim: int = 256, **vit_kwargs: object) -> None:
        super().__init__(**vit_kwargs)  # type: ignore[arg-type]
        self.neck_dim = neck_dim
        self.neck = nn.Sequential(
            nn.Conv2d(self.embed_dim, neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"image encoder expects Bx3x{self.img_size}x{self.img_size} input, got {tuple(x.shape)}"
            )
        return self.neck(self.forward_features(x))
