"""A generated classification set in the ImageNet layout, for tests, benchmarks and the demo.

Each class is a shape of its own colour (disc, square, triangle, cross, ring, bar, ...) drawn at
a random position and size on a noisy background; the image is a function of
``(seed, split, class, index)`` alone, so the same call writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esam.errors import InputError

_SHAPES = ("disc", "square", "triangle", "cross", "ring", "hbar", "vbar", "diamond")
_COLOURS = (
    (220, 40, 40),
    (40, 180, 60),
    (50, 80, 220),
    (230, 200, 40),
    (200, 60, 200),
    (40, 200, 210),
    (240, 140, 30),
    (250, 250, 250),
)
MAX_CLASSES = len(_SHAPES)


def _draw(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An HxW boolean mask of ``shape`` at a random centre and radius."""
    r = rng.uniform(0.22, 0.4) * size
    cy, cx = rng.uniform(r, size - r, size=2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    if shape == "triangle":
        return (dy <= 0.7 * r) & (dy >= -r + 2 * np.abs(dx))
    if shape == "cross":
        w = 0.3 * r
        return ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "hbar":
        return (np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r)
    if shape == "vbar":
        return (np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r)
    return np.abs(dy) + np.abs(dx) <= r  # diamond


def write_synthetic_classes(
    root: str | Path,
    n_classes: int = 4,
    per_class: int = 50,
    size: int = 32,
    seed: int = 0,
    split: str = "train",
) -> Path:
    """Write ``root/<split>/class_<k>_<shape>/<k>_<i>.png``; return ``root/<split>``.

    Raises:
        InputError: more classes than shapes, or no images asked for.
    """
    from PIL import Image

    if not 1 <= n_classes <= MAX_CLASSES or per_class < 1 or size < 8:
        raise InputError(
            f"need 1 <= n_classes <= {MAX_CLASSES}, per_class >= 1, size >= 8; got "
            f"{n_classes}, {per_class}, {size}"
        )
    out = Path(root) / split
    tag = sum(split.encode())
    for k in range(n_classes):
        folder = out / f"class_{k}_{_SHAPES[k]}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, tag, k, i])
            image = rng.integers(0, 90, size=(size, size, 3)).astype(np.float64)
            mask = _draw(_SHAPES[k], size, rng)
            colour = np.asarray(_COLOURS[k], dtype=np.float64) * rng.uniform(0.75, 1.0)
            image[mask] = 0.3 * image[mask] + 0.7 * colour
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{k}_{i:04d}.png")
    return out
