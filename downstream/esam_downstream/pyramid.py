"""ViTDet's simple feature pyramid: strides 4/8/16/32 from one stride-16 map (plain PyTorch).

From the last ViT map (C channels, stride 16) each level is made by resampling alone:

* stride 4: 2x2 transposed conv (C -> C/2), LayerNorm2d, GELU, 2x2 transposed conv (-> C/4);
* stride 8: 2x2 transposed conv (C -> C/2);
* stride 16: the map itself;
* stride 32: 2x2 max pooling;

then every level gets a 1x1 conv to ``out_channels`` and a 3x3 conv, each followed by a
LayerNorm2d (bias-free convs, as ViTDet's "LN" setting). ``extra_levels`` adds stride-64 (and
further) maps by subsampling the last output (max pooling with kernel 1, stride 2), which is
how ViTDet feeds a 5-level RPN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from esam.errors import InputError
from esam.modeling.common import LayerNorm2d

#: Output strides relative to the input stride for each supported level (input stride 16).
SCALES: dict[float, int] = {4.0: 4, 2.0: 8, 1.0: 16, 0.5: 32}


class SimpleFeaturePyramid(nn.Module):
    """One BxCxhxw map (stride s) -> maps at strides s/4, s/2, s, 2s (and 4s, ... if extra).

    Args:
        in_channels: C, channels of the backbone map (the ViT width).
        out_channels: channels of every output level.
        scales: upsampling factors to build, a subset of (4.0, 2.0, 1.0, 0.5), in that order.
        extra_levels: further levels made by stride-2 subsampling of the last output.
        eps: LayerNorm2d epsilon.

    ``forward`` takes the backbone's tuple (its last entry is used) and returns a tuple of
    Bx``out_channels``x(h*scale)x(w*scale) maps, finest first.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        extra_levels: int = 0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        scales = tuple(float(s) for s in scales)
        bad = [s for s in scales if s not in SCALES]
        if bad or list(scales) != sorted(scales, reverse=True) or not scales:
            raise InputError(f"scales must be a descending subset of {tuple(SCALES)}, got {scales}")
        if in_channels % 4 and 4.0 in scales:
            raise InputError(
                f"the stride-4 level needs in_channels divisible by 4, got {in_channels}"
            )
        if extra_levels < 0:
            raise InputError(f"extra_levels must be >= 0, got {extra_levels}")
        self.scales = scales
        self.extra_levels = extra_levels
        self.stages = nn.ModuleList()
        for scale in scales:
            layers: list[nn.Module]
            dim = in_channels
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                    LayerNorm2d(dim // 2, eps),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
                ]
                dim //= 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                dim //= 2
            elif scale == 1.0:
                layers = []
            else:
                layers = [nn.MaxPool2d(2, stride=2)]
            layers += [
                nn.Conv2d(dim, out_channels, 1, bias=False),
                LayerNorm2d(out_channels, eps),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels, eps),
            ]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(…, BxCxhxw) -> tuple of Bx``out_channels`` maps, one per scale plus extras."""
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        for _ in range(self.extra_levels):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)

    def init_weights(self) -> None:
        """Keep PyTorch's default initialisation (mmengine runners call this before training)."""
