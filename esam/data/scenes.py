"""Generated image folders for pretraining and classification runs on a CPU.

Each image is a seeded scene: a textured background (a gradient plus sinusoidal stripes of
random frequency and orientation) and several overlapping shapes (ellipses, rectangles and
triangles) of random size, colour and texture. Scenes are varied enough that a model has to
learn something general to predict features of images it has not seen, and cheap enough to
draw hundreds in a second. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from esam.errors import InputError


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """HxW values in [-1, 1]: stripes of random frequency, orientation and phase."""
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.05, 0.5)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)


def _shape_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """A random ellipse, rectangle or triangle as an HxW bool mask."""
    cy, cx = rng.uniform(0, size, 2)
    ry, rx = rng.uniform(size * 0.08, size * 0.4, 2)
    kind = rng.integers(3)
    if kind == 0:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    if kind == 1:
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    # triangle: below two lines through the apex, above the base
    top = cy - ry
    left = (yy - top) * rx / (2 * ry) >= cx - xx
    right = (yy - top) * rx / (2 * ry) >= xx - cx
    return left & right & (yy <= cy + ry)


def draw_scene(seed: int, index: int, size: int = 96) -> np.ndarray:
    """One scene as a ``size`` x ``size`` x 3 uint8 RGB image (a function of seed and index)."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base = rng.uniform(40, 200, 3)
    tilt = rng.uniform(-60, 60, (2, 3))
    img = base + tilt[0] * (yy[..., None] / size) + tilt[1] * (xx[..., None] / size)
    img = img + rng.uniform(5, 30) * _texture(rng, yy, xx)[..., None]
    for _ in range(int(rng.integers(2, 7))):
        mask = _shape_mask(rng, yy, xx, size)
        color = rng.uniform(0, 255, 3)
        shade = rng.uniform(0, 40) * _texture(rng, yy, xx)
        img[mask] = color + shade[mask][:, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_scene_folder(
    out: str | os.PathLike[str],
    n_images: int,
    *,
    seed: int = 0,
    size: int = 96,
    start: int = 0,
) -> Path:
    """Write ``n_images`` scenes as PNG files ``scene_<index>.png`` in a flat folder.

    Args:
        out: the folder (created).
        n_images: how many.
        seed: the scenes' seed.
        size: image side in pixels.
        start: index of the first scene (so a held-out folder can continue a training one).
    """
    from PIL import Image

    if n_images < 1 or size < 16:
        raise InputError(f"need n_images >= 1 and size >= 16, got {n_images} and {size}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n_images):
        Image.fromarray(draw_scene(seed, i, size)).save(folder / f"scene_{i:06d}.png")
    return folder
