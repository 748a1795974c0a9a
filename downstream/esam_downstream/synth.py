"""Tiny seeded data sets in the real on-disk formats, for CPU runs of both tasks.

* :func:`write_coco_instances`: COCO instance segmentation (``annotations/instances_*.json``,
  ``<split>/*.jpg``): flat-coloured rectangles (class 1, ``box``) and discs (class 2,
  ``disc``) on a noisy background, one polygon per object.
* :func:`write_ade20k`: the ADEChallengeData2016 layout (``images/<split>/*.jpg``,
  ``annotations/<split>/*.png``): the same shapes painted with label values 1..150 (0 is
  "other", ignored by mmseg's ``reduce_zero_label``).

Images are saved as JPEG (quality 95) and masks as PNG; everything is a pure function of the
seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

#: Category names of the COCO-format set, ids 1 and 2.
COCO_CLASSES = ("box", "disc")


def _shape_mask(rng: np.random.Generator, h: int, w: int, kind: int) -> np.ndarray:
    """A HxW bool mask of one rectangle (kind 0) or disc (kind 1) at least 1/5 of the side."""
    side = min(h, w)
    size = int(rng.integers(side // 5, side // 2))
    cy = int(rng.integers(size // 2, h - size // 2))
    cx = int(rng.integers(size // 2, w - size // 2))
    yy, xx = np.mgrid[:h, :w]
    if kind == 0:
        return (abs(yy - cy) <= size // 2) & (abs(xx - cx) <= size // 2)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 2) ** 2


def _polygon(mask: np.ndarray, kind: int) -> list[float]:
    """A polygon (x0, y0, x1, y1, ...) outlining a rectangle or disc mask, pixel-edge coords."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if kind == 0:
        return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
    cy, cx, r = (y0 + y1) / 2, (x0 + x1) / 2, (x1 - x0) / 2
    pts: list[float] = []
    for k in range(16):
        a = 2 * math.pi * k / 16
        pts += [float(cx + r * math.cos(a)), float(cy + r * math.sin(a))]
    return pts


def _scene(
    rng: np.random.Generator, h: int, w: int, max_objects: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """An HxWx3 uint8 image and its objects [(kind, HxW bool mask)], later ones on top."""
    img = rng.integers(90, 140, size=(h, w, 3)).astype(np.uint8)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(0, 2))
        mask = _shape_mask(rng, h, w, kind)
        img[mask] = rng.integers(0, 256, size=3)
        objects = [(k, m & ~mask) for k, m in objects]
        objects.append((kind, mask))
    return img, [(k, m) for k, m in objects if m.sum() >= 16]


def write_coco_instances(
    root: str | Path,
    split: str = "train",
    num_images: int = 4,
    size: tuple[int, int] = (128, 128),
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Write a COCO instance-segmentation set; returns the annotation file.

    Args:
        root: data root; files go to ``root/<split>/`` and ``root/annotations/``.
        split: split name (``instances_<split>.json``).
        num_images: number of images.
        size: (height, width) of every image.
        max_objects: objects per image are drawn from 1..max_objects.
        seed: RNG seed.
    """
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    images, annotations = [], []
    for i in range(num_images):
        img, objects = _scene(rng, h, w, max_objects)
        name = f"{i:06d}.jpg"
        Image.fromarray(img).save(root / split / name, quality=95)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for kind, mask in objects:
            ys, xs = np.nonzero(mask)
            x0, y0 = float(xs.min()), float(ys.min())
            bw, bh = float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": kind + 1,
                    "bbox": [x0, y0, bw, bh],
                    "area": float(mask.sum()),
                    "segmentation": [_polygon(mask, kind)],
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(COCO_CLASSES)
    ]
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def write_ade20k(
    root: str | Path,
    split: str = "training",
    num_images: int = 4,
    size: tuple[int, int] = (128, 128),
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Write an ADE20K-layout semantic segmentation set; returns ``root``.

    Label PNGs hold 0 (other) and object classes drawn from 1..150 (rectangles from the first
    half of the range, discs from the second, so shape predicts class).
    """
    root = Path(root)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(num_images):
        img, objects = _scene(rng, h, w, max_objects)
        label = np.zeros((h, w), np.uint8)
        for kind, mask in objects:
            label[mask] = 1 + kind * 75 + int(rng.integers(0, 2))
        name = f"ADE_{split}_{i:08d}"
        Image.fromarray(img).save(root / "images" / split / f"{name}.jpg", quality=95)
        Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    return root
