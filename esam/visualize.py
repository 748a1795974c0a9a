"""Mask overlays for the command line and the demo."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    box: np.ndarray | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    color: tuple[int, int, int] = (30, 144, 255),
    alpha: float = 0.5,
) -> Image.Image:
    """Blend a boolean HxW ``mask`` over an HxWx3 uint8 ``image`` and draw the prompts.

    Boxes are drawn in green, positive points green, negative points red.
    """
    out = image.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=(0, 255, 0), width=2)
    if points is not None:
        lab = labels if labels is not None else np.ones(len(points))
        for (x, y), lbl in zip(points, lab, strict=True):
            c = (0, 255, 0) if lbl == 1 else (255, 0, 0)
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c, outline=(255, 255, 255))
    return pil
