"""Prompts derived from ground truth: boxes and clicks, seeded per instance.

Coordinates are (x, y) in image pixels; a click at pixel (row i, column j) is the point
(x, y) = (j, i), the convention of the RITM / EfficientViT-SAM click protocol.

Rules (each recorded in the results under ``config``):

* ``box`` from the annotation's ``bbox`` (x, y, w, h) -> (x, y, x + w, y + h), or the tight box
  of the decoded mask (``box_source="mask"``): (x_min, y_min, x_max + 1, y_max + 1) in pixel-edge
  coordinates, the box pycocotools computes for an RLE. With the ``clip_boxes`` setting (on in
  the ``efficientsam`` and ``sam`` presets, off in ``efficientvit-sam``, which sends the boxes as
  they are) every box prompt, ground-truth or detector box, is clipped to the image,
  [0, W] x [0, H] (:func:`clip_boxes`): EfficientSAM maps any negative coordinate to -1, its
  padding value, so an unclipped corner at x = -0.3 would be read as "no point" rather than
  as the image edge.
* ``random`` clicks: uniform over the mask's pixels, without replacement when the mask has
  enough pixels, all positive (the EfficientSAM paper's point protocol).
* ``center`` click: the mask pixel farthest from the mask boundary (Euclidean distance
  transform of the mask padded by one background pixel, so the image border counts as
  boundary; ties go to the first pixel in row-major order).
* ``iterative`` clicks: the first is the ``center`` click; each later one goes to the deepest
  point of the larger error region of the previous prediction, where "larger" compares the
  depth (maximum distance to the region boundary) of the false-negative and false-positive
  regions, pixels already clicked excluded. A false-negative click is positive (label 1), a
  false-positive click negative (label 0); a tie goes to the false positive. When the previous
  mask has no error left, the click is padding: the point (-1, -1) with label -1, which
  EfficientSAM and SAM both ignore (EfficientSAM adds the positional encoding of a padding
  point's coordinates, so only (-1, -1) is neutral for it; SAM zeroes it). The
  ``negative-origin`` rule instead gives a negative click at pixel (0, 0), as RITM's clicker
  does when both error regions are empty.

Random choices use a generator seeded by (seed, image id, annotation id), so a prompt depends
on nothing else: not on the order of evaluation, the number of processes or data workers.
"""

from __future__ import annotations

import numpy as np

from esam.errors import InputError
from esam.utils.deps import require

PROMPTS = ("box", "point1", "point3")
CLICK_MODES = ("random", "center", "iterative")
BOX_SOURCES = ("bbox", "mask")

PAD_LABEL = -1
#: The coordinates of a padding point: the only padding EfficientSAM's prompt encoder ignores.
PAD_POINT = (-1.0, -1.0)


def n_clicks(prompt: str) -> int:
    """Number of clicks of a point prompt name (``point1`` -> 1, ``point3`` -> 3)."""
    if prompt not in ("point1", "point3"):
        raise InputError(f"{prompt!r} is not a point prompt; choose point1 or point3")
    return int(prompt[len("point") :])


def instance_rng(seed: int, image_id: int, ann_id: int) -> np.random.Generator:
    """A generator that depends only on (seed, image id, annotation id)."""
    words = [int(v) & 0xFFFFFFFFFFFFFFFF for v in (seed, image_id, ann_id)]
    return np.random.default_rng(np.random.SeedSequence(words))


def box_from_bbox(bbox: tuple[float, float, float, float] | list[float]) -> np.ndarray:
    """COCO (x, y, w, h) -> (x0, y0, x1, y1) float32."""
    x, y, w, h = (float(v) for v in bbox)
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Qx4 (x0, y0, x1, y1) boxes clipped to the image [0, width] x [0, height], float32."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0.0, float(width))
    b[:, 1::2] = np.clip(b[:, 1::2], 0.0, float(height))
    return b


def empty_boxes(boxes: np.ndarray) -> np.ndarray:
    """Q bool: the (x0, y0, x1, y1) box has no area (x1 <= x0 or y1 <= y0)."""
    b = np.asarray(boxes).reshape(-1, 4)
    return np.asarray((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]), dtype=bool)


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight (x0, y0, x1, y1) float32 box in pixel-edge coordinates of a non-empty HxW mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InputError("box_from_mask: the mask is empty")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def random_clicks(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` clicks uniform over the pixels of a non-empty HxW mask, as nx2 float32 (x, y)."""
    flat = np.flatnonzero(mask.ravel())
    if flat.size == 0:
        raise InputError("random_clicks: the mask is empty")
    picks = rng.choice(flat.size, size=n, replace=flat.size < n)
    rows, cols = np.unravel_index(flat[picks], mask.shape)
    return np.stack([cols, rows], axis=1).astype(np.float32)


def _depth(region: np.ndarray) -> np.ndarray:
    """Distance of each region pixel to the nearest non-region pixel, the border counting as one."""
    ndimage = require("scipy.ndimage")
    padded = np.pad(region, 1, mode="constant", constant_values=False)
    depth: np.ndarray = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return depth


def _deepest(region: np.ndarray, clicked: np.ndarray | None = None) -> tuple[float, int, int]:
    """(depth, row, column) of the deepest pixel of an HxW bool region (:func:`_depth`), the
    first in row-major order among equals, pixels in ``clicked`` ((x, y) rows) excluded;
    depth 0 when nothing is left.

    The distance transform runs on the region's bounding box only, with exactly the result
    of the whole image: every pixel just outside the box is background (or the image border),
    and is nearer to each pixel inside than anything farther out. On a 1500x2250 image with a
    small error region this is what keeps iterative clicks cheap.
    """
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return 0.0, 0, 0
    cols = np.flatnonzero(region.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    depth = _depth(region[r0:r1, c0:c1])
    if clicked is not None and len(clicked):
        c = np.asarray(clicked, dtype=np.int64).reshape(-1, 2)
        inside = (c[:, 1] >= r0) & (c[:, 1] < r1) & (c[:, 0] >= c0) & (c[:, 0] < c1)
        depth[c[inside, 1] - r0, c[inside, 0] - c0] = 0.0
    k = int(np.argmax(depth))
    row, col = divmod(k, depth.shape[1])
    return float(depth.flat[k]), r0 + row, c0 + col


def center_click(mask: np.ndarray) -> np.ndarray:
    """The deepest pixel of a non-empty HxW mask, as a (x, y) float32 pair."""
    if not mask.any():
        raise InputError("center_click: the mask is empty")
    _, row, col = _deepest(mask.astype(bool))
    return np.array([col, row], dtype=np.float32)


def next_error_click(
    gt: np.ndarray,
    pred: np.ndarray,
    clicked: np.ndarray | None = None,
    no_error: str = "pad",
) -> tuple[np.ndarray, int]:
    """The next iterative click for one instance.

    Args:
        gt: HxW bool ground-truth mask.
        pred: HxW bool mask predicted from the clicks so far (all False before the first).
        clicked: kx2 (x, y) clicks already given; those pixels are not chosen again.
        no_error: the click when no error is left: ``pad`` (:data:`PAD_POINT`, label -1) or
            ``negative-origin`` (pixel (0, 0), label 0).

    Returns:
        ((x, y) float32, label) with label 1 (false negative region), 0 (false positive or
        ``negative-origin``) or -1 (``pad``).
    """
    if no_error not in ("pad", "negative-origin"):
        raise InputError(f"unknown no-error click rule {no_error!r}; choose pad or negative-origin")
    gt = gt.astype(bool)
    pred = pred.astype(bool)
    fn_max, fn_row, fn_col = _deepest(gt & ~pred, clicked)
    fp_max, fp_row, fp_col = _deepest(~gt & pred, clicked)
    if fn_max == 0.0 and fp_max == 0.0:
        if no_error == "pad":
            return np.array(PAD_POINT, dtype=np.float32), PAD_LABEL
        return np.zeros(2, dtype=np.float32), 0
    if fn_max > fp_max:
        return np.array([fn_col, fn_row], dtype=np.float32), 1
    return np.array([fp_col, fp_row], dtype=np.float32), 0


def click_rule(prompt: str, click: str | None, no_error: str = "pad") -> str | None:
    """One-line description of the click protocol, written into the results."""
    if prompt == "box" or click is None:
        return None
    after = {
        "pad": "the padding point (-1, -1) with label -1",
        "negative-origin": "a negative click at pixel (0, 0)",
    }[no_error]
    return {
        "random": "clicks uniform over the GT mask pixels (without replacement), all positive",
        "center": "one click at the GT mask pixel farthest from its boundary (EDT maximum)",
        "iterative": (
            "first click at the EDT maximum of the GT mask; each next click at the EDT maximum of "
            "the deeper of the false-negative (positive click) and false-positive (negative click) "
            f"regions of the previous prediction; when no error is left: {after}"
        ),
    }[click]


def validate_prompt_settings(prompt: str, click: str | None, box_source: str | None) -> None:
    """Raise ValueError for impossible combinations (e.g. ``point3`` with ``center``)."""
    if prompt not in PROMPTS:
        raise InputError(f"unknown prompt {prompt!r}; choose from {PROMPTS}")
    if prompt == "box":
        if box_source not in BOX_SOURCES:
            raise InputError(f"unknown box source {box_source!r}; choose from {BOX_SOURCES}")
        return
    if click not in CLICK_MODES:
        raise InputError(f"unknown click mode {click!r}; choose from {CLICK_MODES}")
    if click == "center" and n_clicks(prompt) > 1:
        raise InputError(
            "--click center defines a single click; for point3 use --click iterative (first click "
            "at the centre, later clicks on the error regions) or --click random"
        )
