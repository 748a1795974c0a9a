"""A seeded generated classification set in ImageNet's folder layout (``esam data synth-classes``).

Each class is a shape of its own colour (disc, square, triangle, cross, ring, horizontal bar,
vertical bar, diamond: at most 8 classes) drawn at a random position and size on a noisy
background. An image is a function of ``(seed, split, class, index)`` alone, so the same call
writes the same bytes, and train and val images never coincide.

Layout: ``<root>/<split>/class_<k>_<shape>/<k>_<i>.png`` (one folder per class, sorted folder
names = class index), which :mod:`esam.classify.data` and torchvision's ImageFolder read. Tests,
benchmarks and the demo's ImageNet-classification stage use it; it says nothing about real
ImageNet accuracy.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esam.data.sa1b import check_output_folder
from esam.errors import InputError
from esam.utils.io import write_bytes_atomic

SPLITS = ("train", "val")
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


def class_names(n_classes: int) -> list[str]:
    """The folder names of the first ``n_classes`` classes (``class_<k>_<shape>``), in order."""
    return [f"class_{k}_{_SHAPES[k]}" for k in range(n_classes)]


def make_class_image(seed: int, split: str, k: int, index: int, size: int = 32) -> np.ndarray:
    """Image ``index`` of class ``k`` in ``split`` of the set ``seed``: HxWx3 uint8 RGB."""
    rng = np.random.default_rng([seed, sum(split.encode()), k, index])
    image = rng.integers(0, 90, size=(size, size, 3)).astype(np.float64)
    mask = _draw(_SHAPES[k], size, rng)
    colour = np.asarray(_COLOURS[k], dtype=np.float64) * rng.uniform(0.75, 1.0)
    image[mask] = 0.3 * image[mask] + 0.7 * colour
    return image.clip(0, 255).astype(np.uint8)


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _check(n_classes: int, per_class: int, size: int) -> None:
    if not 1 <= n_classes <= MAX_CLASSES or per_class < 1 or size < 8:
        raise InputError(
            f"need 1 <= classes <= {MAX_CLASSES}, images per class >= 1, size >= 8 px; got "
            f"{n_classes}, {per_class}, {size}"
        )


def write_synthetic_classes(
    root: str | os.PathLike[str],
    n_classes: int = 4,
    per_class: int = 50,
    size: int = 32,
    seed: int = 0,
    split: str = "train",
) -> Path:
    """Write one split, ``root/<split>/class_<k>_<shape>/<k>_<i>.png``; return ``root/<split>``.

    Each file is written atomically; existing files of the same names are replaced (use
    :func:`write_synth_classes` for a whole set in a new folder).

    Raises:
        InputError: more classes than shapes, no images asked for, or images under 8 px.
    """
    _check(n_classes, per_class, size)
    out = Path(root) / split
    for k, name in enumerate(class_names(n_classes)):
        for i in range(per_class):
            image = make_class_image(seed, split, k, i, size)
            write_bytes_atomic(out / name / f"{k}_{i:04d}.png", _encode_png(image))
    return out


def default_val_per_class(per_class: int) -> int:
    """Val images per class when not given: a quarter of the training images, at least 1."""
    return max(1, math.ceil(per_class / 4))


@dataclass
class SynthClassesSummary:
    """What :func:`write_synth_classes` wrote.

    Attributes:
        out: the output folder (holding ``train/`` and ``val/``).
        classes: the class folder names, in class-index order.
        n_images: images written per split (``{"train": N, "val": N}``).
        size: image side in pixels.
        seed: the set's seed.
    """

    out: Path
    classes: list[str] = field(default_factory=list)
    n_images: dict[str, int] = field(default_factory=dict)
    size: int = 32
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "out": str(self.out),
            "layout": "imagefolder",
            "splits": {s: str(self.out / s) for s in self.n_images},
            "classes": list(self.classes),
            "n_classes": len(self.classes),
            "n_images": dict(self.n_images),
            "size": self.size,
            "seed": self.seed,
        }


def write_synth_classes(
    out: str | os.PathLike[str],
    n_classes: int,
    per_class: int,
    *,
    val_per_class: int | None = None,
    size: int = 32,
    seed: int = 0,
) -> SynthClassesSummary:
    """Write a generated classification set, ``out/train`` and ``out/val``, in ImageNet's layout.

    Args:
        out: a new or empty folder.
        n_classes: classes (1 to :data:`MAX_CLASSES`).
        per_class: training images per class.
        val_per_class: val images per class (default :func:`default_val_per_class`).
        size: image side in pixels (>= 8).
        seed: the set's seed; the same arguments give the same bytes.

    Raises:
        InputError: a bad count or size, or ``out`` is a file or a non-empty folder.
    """
    n_val = default_val_per_class(per_class) if val_per_class is None else val_per_class
    _check(n_classes, per_class, size)
    _check(n_classes, n_val, size)
    folder = check_output_folder(out)
    summary = SynthClassesSummary(folder, class_names(n_classes), size=size, seed=seed)
    for split, n in zip(SPLITS, (per_class, n_val), strict=True):
        write_synthetic_classes(folder, n_classes, n, size, seed=seed, split=split)
        summary.n_images[split] = n_classes * n
    return summary
