"""A seeded synthetic dataset in SA-1B's layout, for tests, demos and CPU runs of fine-tuning.

Each image is a textured background (a colour gradient plus sinusoidal stripes, as
:mod:`esam.data.scenes` draws) under many overlapping shapes (ellipses, rectangles, triangles,
star-shaped polygons and rings), rotated, of sizes from a few pixels to most of the image, each
with its own colour and texture. Shapes are painted in order (larger ones tend to come first),
so later shapes hide parts of earlier ones.

Masks: **one per connected visible part** (8-connectivity). A shape's mask is what remains
visible of it once every later shape is painted; a shape cut in two by an occluder gives two
masks, and a shape hidden completely gives none. Parts smaller than ``min_area`` pixels are
dropped and counted (``parts_below_min_area`` in the summary). The masks of an image are
therefore disjoint, and the background belongs to none. Masks come from the painting, never
from the stored image: the JPEG (quality 95, as SA-1B) blurs colours near edges, the masks stay
the painted regions exactly.

Every json follows SA-1B: ``segmentation`` a compressed COCO RLE string, ``bbox`` and ``area``
computed from the mask, ``point_coords`` the visible pixel deepest inside the part (``[[column,
row]]``), ``crop_box`` the whole image, and ``predicted_iou`` and ``stability_score`` 1.0 (the
masks are exact by construction, not predicted). Image ids run from 1 (``sa_1.jpg``); annotation
ids are ``image_id * 10000 + k`` for the ``k``-th mask of the image.

Everything is a function of ``(seed, index)``: the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from esam.data.sa1b import check_output_folder, mask_annotation, record_json, shard_name
from esam.data.tarshards import write_tar_atomic
from esam.errors import InputError
from esam.utils.deps import require
from esam.utils.io import write_bytes_atomic

#: Visible parts smaller than this (pixels) are dropped and counted.
MIN_PART_AREA = 16
#: Shapes painted per image: drawn uniformly from this inclusive range.
SHAPES_PER_IMAGE = (10, 21)
#: JPEG quality of the stored images (SA-1B's).
JPEG_QUALITY = 95
#: Annotation id = image_id * ANN_ID_STRIDE + mask number.
ANN_ID_STRIDE = 10_000
SHAPE_KINDS = ("ellipse", "rectangle", "triangle", "polygon", "ring")
Layout = Literal["tar", "folder"]


@dataclass
class SynthImage:
    """One generated image.

    Attributes:
        image: HxWx3 uint8 RGB as painted (before JPEG).
        masks: KxHxW bool, one per visible part, in annotation order (disjoint).
        kinds: the shape kind of each mask.
        shapes: the painting order of each mask's shape (masks of one shape share it).
        record: the SA-1B json (``image`` and ``annotations``).
        n_small_parts: visible parts dropped for being smaller than ``min_area``.
    """

    image: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    shapes: list[int]
    record: dict[str, Any]
    n_small_parts: int


@dataclass
class SynthSummary:
    """What :func:`write_synthetic_sa1b` wrote.

    Attributes:
        out: the output folder.
        files: the shards (tars) or shard folders written, in order.
        n_images, n_masks: images and masks written.
        parts_below_min_area: visible parts dropped for their size.
        layout: ``tar`` or ``folder``.
    """

    out: Path
    files: list[Path] = field(default_factory=list)
    n_images: int = 0
    n_masks: int = 0
    parts_below_min_area: int = 0
    layout: str = "tar"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "out": str(self.out),
            "layout": self.layout,
            "files": [p.name for p in self.files],
            "n_images": self.n_images,
            "n_masks": self.n_masks,
            "parts_below_min_area": self.parts_below_min_area,
        }


def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Values in [-1, 1]: stripes of random frequency, orientation and phase."""
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.05, 0.6)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)


def _inside_polygon(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd test of points (px, py) against the polygon with vertices (vx, vy)."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (py >= min(y0, y1)) & (py < max(y0, y1))
        x_at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < x_at)
    return inside


def _shape(
    rng: np.random.Generator, kind: str, r: float, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """A shape of radius about ``r`` centred at 0, tested at pixel-centre offsets (dy, dx)."""
    theta = rng.uniform(0, np.pi)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated frame
    if kind in ("ellipse", "ring"):
        ru, rv = r, r * rng.uniform(0.45, 1.0)
        q = (u / ru) ** 2 + (v / rv) ** 2
        if kind == "ellipse":
            return q <= 1.0
        return (q <= 1.0) & (q >= rng.uniform(0.2, 0.55))
    if kind == "rectangle":
        return (np.abs(u) <= r * rng.uniform(0.5, 1.0)) & (np.abs(v) <= r * rng.uniform(0.25, 0.7))
    n = 3 if kind == "triangle" else int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * (rng.uniform(0.7, 1.0, n) if kind == "triangle" else rng.uniform(0.45, 1.0, n))
    return _inside_polygon(u, v, radii * np.cos(angles), radii * np.sin(angles))


def _paint_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = rng.uniform(40, 200, 3)
    tilt = rng.uniform(-70, 70, (2, 3))
    img = base + tilt[0] * (yy[..., None] / h) + tilt[1] * (xx[..., None] / w)
    return img + rng.uniform(5, 30) * _stripes(rng, yy, xx)[..., None]


def make_sa1b_image(
    seed: int,
    index: int,
    height: int = 256,
    width: int = 256,
    *,
    min_area: int = MIN_PART_AREA,
    shapes: tuple[int, int] = SHAPES_PER_IMAGE,
) -> SynthImage:
    """Draw image ``index`` of the set ``seed`` with its masks and SA-1B json.

    Args:
        seed: the set's seed.
        index: the image's position (its image id is ``index + 1``).
        height, width: image size in pixels.
        min_area: visible parts with fewer pixels are dropped (and counted).
        shapes: (fewest, most) shapes painted; fewer shapes hide less of each other, so their
            visible parts are larger and fewer.
    """
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng([seed, index])
    h, w = height, width
    img = _paint_background(rng, h, w)
    owner = np.full((h, w), -1, dtype=np.int32)
    side = min(h, w)
    n_shapes = int(rng.integers(shapes[0], shapes[1] + 1))
    radii = side * np.exp(rng.uniform(np.log(0.03), np.log(0.42), n_shapes))
    order = np.argsort(-(np.log(radii) + rng.normal(0, 0.4, n_shapes)), kind="stable")
    kinds: list[str] = []
    boxes: list[tuple[int, int, int, int]] = []
    for k, r in enumerate(radii[order]):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        local = _shape(rng, kind, float(r), yy + 0.5 - cy, xx + 0.5 - cx)
        colour = rng.uniform(0, 255, 3)
        shade = rng.uniform(0, 45) * _stripes(rng, yy, xx)
        patch = img[y0:y1, x0:x1]
        patch[local] = colour + shade[local][:, None]
        owner[y0:y1, x0:x1][local] = k
        kinds.append(kind)
        boxes.append((y0, y1, x0, x1))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    image_id = index + 1
    masks: list[np.ndarray] = []
    mask_kinds: list[str] = []
    mask_shapes: list[int] = []
    annotations: list[dict[str, Any]] = []
    n_small = 0
    eight = np.ones((3, 3), dtype=bool)
    for k, kind in enumerate(kinds):
        y0, y1, x0, x1 = boxes[k]
        labels, n = ndimage.label(owner[y0:y1, x0:x1] == k, structure=eight)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        for part, where in enumerate(ndimage.find_objects(labels), start=1):
            if where is None or sizes[part] < min_area:
                n_small += 1
                continue
            crop = labels[where] == part
            row0, col0 = y0 + where[0].start, x0 + where[1].start
            m = np.zeros((h, w), dtype=bool)
            m[row0 : row0 + crop.shape[0], col0 : col0 + crop.shape[1]] = crop
            if len(masks) >= ANN_ID_STRIDE:
                raise InputError(f"image {image_id}: more than {ANN_ID_STRIDE} masks")
            annotations.append(mask_annotation(image_id * ANN_ID_STRIDE + len(masks), m))
            masks.append(m)
            mask_kinds.append(kind)
            mask_shapes.append(k)
    record = json.loads(record_json(image_id, h, w, annotations))
    stack = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return SynthImage(image, stack, mask_kinds, mask_shapes, record, n_small)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """HxWx3 uint8 RGB as JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_synthetic_sa1b(
    out: str | os.PathLike[str],
    n_images: int,
    *,
    seed: int = 0,
    height: int = 256,
    width: int | None = None,
    shard_size: int = 1000,
    layout: Layout = "tar",
    min_area: int = MIN_PART_AREA,
    shapes: tuple[int, int] = SHAPES_PER_IMAGE,
    progress: bool = False,
) -> SynthSummary:
    """Write ``n_images`` synthetic images in SA-1B's layout under ``out``.

    Shard ``k`` (``sa_00000k.tar``, or folder ``sa_00000k/`` with ``layout="folder"``) holds
    images ``k * shard_size + 1`` to ``(k + 1) * shard_size`` as ``sa_<id>.jpg`` +
    ``sa_<id>.json``. Each file is written atomically (a temporary name, then a rename).

    Args:
        out: a new or empty folder.
        n_images: how many images.
        seed: the set's seed.
        height, width: image size (``width`` defaults to ``height``: square).
        shard_size: images per shard.
        layout: ``tar`` shards or plain ``folder`` s.
        min_area: smallest visible part kept (pixels).
        shapes: (fewest, most) shapes painted per image.
        progress: show a progress bar.

    Raises:
        InputError: a bad size or count, or ``out`` is not empty.
    """
    from tqdm import tqdm

    w = height if width is None else width
    if n_images < 1 or shard_size < 1:
        raise InputError(f"need n_images >= 1 and shard_size >= 1, got {n_images}, {shard_size}")
    if min(height, w) < 16:
        raise InputError(f"images must be at least 16x16 pixels, got {w}x{height}")
    if layout not in ("tar", "folder"):
        raise InputError(f"unknown layout {layout!r}; choose tar or folder")
    if min_area < 1:
        raise InputError(f"min_area must be >= 1, got {min_area}")
    if not 1 <= shapes[0] <= shapes[1]:
        raise InputError(f"shapes must be (fewest, most) with 1 <= fewest <= most, got {shapes}")
    folder = check_output_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    summary = SynthSummary(folder, layout=layout)
    bar = tqdm(total=n_images, unit="img", disable=not progress, desc="synth-sa1b")
    for k, start in enumerate(range(0, n_images, shard_size)):
        members: list[tuple[str, bytes]] = []
        for index in range(start, min(n_images, start + shard_size)):
            synth = make_sa1b_image(seed, index, height, w, min_area=min_area, shapes=shapes)
            stem = f"sa_{index + 1}"
            members.append((f"{stem}.jpg", encode_jpeg(synth.image)))
            anns = synth.record["annotations"]
            members.append((f"{stem}.json", record_json(index + 1, height, w, anns)))
            summary.n_images += 1
            summary.n_masks += len(synth.masks)
            summary.parts_below_min_area += synth.n_small_parts
            bar.update(1)
        if layout == "tar":
            summary.files.append(write_tar_atomic(folder / f"{shard_name(k)}.tar", members))
        else:
            sub = folder / shard_name(k)
            for name, data in members:
                write_bytes_atomic(sub / name, data)
            summary.files.append(sub)
    bar.close()
    return summary
