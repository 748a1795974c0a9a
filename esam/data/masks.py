"""Instance masks as COCO stores them: polygons and RLE (checked, decoded, encoded); mask IoU.

Decoding goes through ``pycocotools``; every RLE is checked in pure Python first (its size and
run lengths), because the C decoder trusts the run lengths it is given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from esam.data.skips import (
    SKIP_BAD_POLYGON,
    SKIP_BAD_RLE,
    SKIP_NO_SEGMENTATION,
    SKIP_SHORT_POLYGON,
)
from esam.errors import InputError
from esam.utils.deps import require

#: Coordinates of the smallest polygon part that encloses an area (3 points).
MIN_POLYGON_COORDS = 6


#: How far outside the image, in multiples of its longer side, a polygon's points may lie.
POLYGON_REACH = 10


def polygon_problem(
    segmentation: list[Any], height: int | None = None, width: int | None = None
) -> str | None:
    """Skip reason for a polygon list, or None when it can be decoded: every part a flat list
    of finite (x, y) pairs, at least one of them with >= 3 points; with the image size given,
    every point within :data:`POLYGON_REACH` times the image's longer side of the image.

    Parts of fewer than 3 points enclose no area and are dropped on decoding (as detectron2
    does); an instance is skipped for them only when no other part is left. The bound on
    points keeps pycocotools' rasteriser, whose memory grows with the edges' length, from
    being handed coordinates such as 1e9 (it then exhausts memory or crashes the process).
    """
    if len(segmentation) == 0:
        return SKIP_NO_SEGMENTATION
    for part in segmentation:
        if not isinstance(part, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in part
        ):
            return SKIP_BAD_POLYGON
        if len(part) % 2:
            return SKIP_BAD_POLYGON
        if height is not None and width is not None and part:
            reach = POLYGON_REACH * max(height, width)
            if (
                min(part) < -reach
                or max(part[0::2]) > width + reach
                or max(part[1::2]) > height + reach
            ):
                return SKIP_BAD_POLYGON
    if all(len(part) < MIN_POLYGON_COORDS for part in segmentation):
        return SKIP_SHORT_POLYGON
    return None


def drop_short_polygon_parts(annotations: Any) -> int:
    """Remove polygon parts of fewer than 3 points from annotations, in place; returns how many.

    For ground truth that another library rasterises itself (``COCOeval``, ``LVISEval``):
    pycocotools reads a polygon list whose first part has 4 numbers as boxes and fails on
    shorter ones, where :func:`segmentation_to_rle` drops such parts. An annotation left with
    no part keeps its list (its problem is reported as ``polygon_lt_3_points``).
    """
    dropped = 0
    for ann in annotations:
        seg = ann.get("segmentation") if isinstance(ann, dict) else None
        if not isinstance(seg, list) or polygon_problem(seg) is not None:
            continue
        kept = [part for part in seg if len(part) >= MIN_POLYGON_COORDS]
        if len(kept) < len(seg):
            dropped += len(seg) - len(kept)
            seg[:] = kept  # in place: instance specs holding this list see the change too
    return dropped


def _compressed_rle_counts(counts: str | bytes) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string, or None when the string is malformed.

    A pure-Python reading of pycocotools' ``rleFrString``: each count is a signed
    little-endian base-32 number written as characters ``'0' + 6-bit group`` (bit 5 = more groups
    follow, bit 4 of the last group = sign), and counts from the fourth on are stored as the
    difference to the count two places before. Parsing here means a corrupt string is never
    handed to the C decoder (which writes ``sum(counts)`` pixels into an ``h*w`` buffer).
    """
    try:
        data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError:
        return None
    out: list[int] = []
    p, n = 0, len(data)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None  # the last group says more follow
            c = data[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _integral(v: Any) -> int | None:
    """``v`` as an int when it is an integer or an integral float (not a bool), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def rle_problem(segmentation: dict[str, Any], height: int, width: int) -> str | None:
    """:data:`SKIP_BAD_RLE` unless an RLE dict decodes to exactly an ``height`` x ``width`` mask.

    Checks ``size`` against the image, and that ``counts`` (a list of run lengths, or a
    compressed string) holds non-negative integer runs that add up to ``height * width``.
    """
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not isinstance(size, list | tuple) or len(size) != 2:
        return SKIP_BAD_RLE
    if [_integral(size[0]), _integral(size[1])] != [height, width]:
        return SKIP_BAD_RLE
    runs: list[int] | None
    if isinstance(counts, list | tuple):
        ints = [_integral(v) for v in counts]
        if any(v is None for v in ints):
            return SKIP_BAD_RLE
        runs = [v for v in ints if v is not None]
    elif isinstance(counts, str | bytes):
        runs = _compressed_rle_counts(counts)
    else:
        return SKIP_BAD_RLE
    if not runs or any(v < 0 for v in runs) or sum(runs) != height * width:
        return SKIP_BAD_RLE
    return None


def segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Skip reason for an annotation's segmentation, or None when it can be decoded."""
    if segmentation is None:
        return SKIP_NO_SEGMENTATION
    if isinstance(segmentation, list):
        return polygon_problem(segmentation, height, width)
    if isinstance(segmentation, dict):
        return rle_problem(segmentation, height, width)
    return SKIP_NO_SEGMENTATION


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One RLE for polygons, uncompressed or compressed RLE (parts are merged).

    Raises:
        ValueError: an RLE that does not decode to an ``height`` x ``width`` mask (checked
            before pycocotools sees it: its C decoder trusts the run lengths).
    """
    mask_utils = require("pycocotools.mask")
    if isinstance(segmentation, dict) and rle_problem(segmentation, height, width) is not None:
        raise InputError(
            f"RLE segmentation does not decode to a {height}x{width} mask (size "
            f"{segmentation.get('size')!r}, counts must be non-negative runs adding up to "
            f"{height * width})"
        )
    if isinstance(segmentation, list):
        if polygon_problem(segmentation, height, width) == SKIP_BAD_POLYGON:
            raise InputError(
                f"polygon segmentation is not flat lists of finite (x, y) pairs within "
                f"{POLYGON_REACH} image sizes of the {height}x{width} image"
            )
        # pycocotools reads a list whose first part has 4 numbers as boxes: drop short parts
        parts = [list(p) for p in segmentation if len(p) >= MIN_POLYGON_COORDS]
        if not parts:
            raise InputError(f"no polygon part has 3 points or more ({len(segmentation)} parts)")
        return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        return {
            "size": [height, width],
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }
    raise InputError(f"unsupported segmentation of type {type(segmentation).__name__}")


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The HxW bool mask of a segmentation (polygons or RLE).

    Raises:
        ValueError: the segmentation cannot be decoded (see :func:`segmentation_to_rle`).
    """
    mask_utils = require("pycocotools.mask")
    rle = segmentation_to_rle(segmentation, height, width)
    mask = np.asarray(mask_utils.decode(rle))
    if mask.shape != (height, width):
        raise InputError(f"segmentation decodes to {mask.shape}, expected {(height, width)}")
    return mask.astype(bool)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an HxW bool mask, with ``counts`` as str (JSON-ready)."""
    mask_utils = require("pycocotools.mask")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": rle["counts"].decode("ascii"),
    }


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU in percent of matching masks.

    Args:
        pred: ...xHxW bool.
        gt: ...xHxW bool (broadcast against ``pred``).

    Returns:
        float64 IoU in [0, 100] over the leading dims; 0 where both masks are empty.
    """
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    inter = np.logical_and(pred, gt).sum(axis=(-2, -1), dtype=np.int64)
    union = np.logical_or(pred, gt).sum(axis=(-2, -1), dtype=np.int64)
    out = np.zeros(np.broadcast_shapes(inter.shape, union.shape), dtype=np.float64)
    np.divide(100.0 * inter, union, out=out, where=union > 0)
    return out
