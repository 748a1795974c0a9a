"""A coloured overlay of every mask, for the command line and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
from PIL import Image


def mask_colours(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct-looking RGB colours (nx3 uint8), the same for the same ``n`` and seed."""
    rng = np.random.default_rng(seed)
    hue = (np.arange(n) * 0.618033988749895 + rng.uniform()) % 1.0
    # HSV -> RGB at saturation 0.75 and value 0.95
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0
    rgb = 0.95 - 0.95 * 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def overlay_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    alpha: float = 0.55,
    areas: Sequence[int] | None = None,
) -> Image.Image:
    """Blend each HxW bool mask over an HxWx3 uint8 image in its own colour.

    Larger masks are drawn first so that smaller ones stay visible on top of them; pixels that
    no mask covers keep the image's colour. Each mask is read once, while it is drawn: a
    sequence that decodes on access (:class:`RleMasks`) keeps one mask in memory at a time.

    Args:
        image: HxWx3 uint8.
        masks: N masks, HxW bool (or 0/1).
        alpha: the colours' weight.
        areas: each mask's pixel count when known (records carry it), so the drawing order
            needs no extra pass over the masks.
    """
    if areas is None:
        areas = [int(np.count_nonzero(masks[i])) for i in range(len(masks))]
    if len(areas) != len(masks):
        raise ValueError(f"{len(areas)} areas for {len(masks)} masks")
    out = image.astype(np.float32).copy()
    order = sorted(range(len(masks)), key=lambda i: -int(areas[i]))
    colours = mask_colours(len(masks)).astype(np.float32)
    for rank, i in enumerate(order):
        m = np.asarray(masks[i], dtype=bool)
        out[m] = (1 - alpha) * out[m] + alpha * colours[rank]
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8))


class RleMasks(Sequence[np.ndarray]):
    """COCO RLEs that decode to HxW bool masks when read, one at a time."""

    def __init__(self, rles: Sequence[dict[str, Any]]) -> None:
        from esam.utils.deps import require

        self._rles = list(rles)
        self._mask = require("pycocotools.mask", extra="eval")

    def __len__(self) -> int:
        return len(self._rles)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._mask.decode(self._rles[index]).astype(bool)
