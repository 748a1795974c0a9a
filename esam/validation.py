"""Argument checks shared by the model and the predictor.

Each check raises :class:`~esam.errors.InputError` (a ``ValueError``) naming the argument, what was received and the expected
form, so a wrong call fails at the boundary with a message instead of deep inside a matmul.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from esam.errors import InputError

VALID_LABELS = (-1, 0, 1, 2, 3)
MAX_POINTS_PER_QUERY = 6


def check_image_array(image: object, name: str = "image") -> np.ndarray:
    """An HxWx3 uint8 RGB array."""
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{name} must be a numpy array of shape HxWx3 and dtype uint8, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InputError(f"{name} must have dtype uint8 (RGB values 0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name} must have shape HxWx3 (RGB), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name} must be non-empty, got shape {image.shape}")
    return image


def check_image_batch(images: object, name: str = "images") -> torch.Tensor:
    """A Bx3xHxW floating-point tensor with values in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor of shape Bx3xHxW, got {type(images).__name__}"
        )
    if not images.is_floating_point():
        raise InputError(
            f"{name} must be floating point with values in [0, 1] (uint8 / 255), got {images.dtype}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape Bx3xHxW, got {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        lo, hi = float(images.min()), float(images.max())
        raise InputError(
            f"{name} must have values in [0, 1] (divide uint8 images by 255), got range [{lo:.3g}, {hi:.3g}]"
        )
    return images


def check_labels_values(labels: torch.Tensor | np.ndarray, name: str = "labels") -> None:
    """Every label is one of -1 (padding), 0 (negative), 1 (positive), 2/3 (box corners)."""
    values = torch.as_tensor(labels)
    if values.numel() == 0:
        return
    ok = torch.zeros_like(values, dtype=torch.bool)
    for v in VALID_LABELS:
        ok |= values == v
    if not bool(ok.all()):
        bad = sorted({float(x) for x in values[~ok].flatten().tolist()})[:5]
        raise InputError(f"{name} must take values in {{-1, 0, 1, 2, 3}}, got {bad}")


def check_point_batch(points: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-level prompts: points BxQxNx2 and labels BxQxN tensors."""
    if not isinstance(points, torch.Tensor) or points.ndim != 4 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise InputError(f"points must be a tensor of shape BxQxNx2 (x, y pixels), got {shape}")
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(points.shape[:3]):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise InputError(
            f"labels must be a tensor of shape BxQxN = {tuple(points.shape[:3])}, got {shape}"
        )
    check_labels_values(labels)
    return points, labels


def _as_float_array(value: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be numeric, got {value!r}") from e
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def check_boxes(boxes: object, name: str = "boxes", single: bool = False) -> np.ndarray:
    """Boxes as (x0, y0, x1, y1) pixels: one 4-vector if ``single`` else Qx4; x1 >= x0, y1 >= y0."""
    arr = _as_float_array(boxes, name)
    expected = "4 values (x0, y0, x1, y1)" if single else "an array of shape Qx4 (x0, y0, x1, y1)"
    if single:
        if arr.shape != (4,):
            raise InputError(f"{name} must be {expected}, got shape {arr.shape}")
        arr = arr[None]
    elif arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"{name} must be {expected}, got shape {arr.shape}")
    bad = np.nonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))[0]
    if bad.size:
        raise InputError(
            f"{name} must satisfy x1 >= x0 and y1 >= y0, got {arr[bad[0]].tolist()} at index {int(bad[0])}"
        )
    return arr


def check_points_and_labels(
    point_coords: object, point_labels: object, single: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Predictor-level points: Nx2 / N when ``single``, else QxNx2 / QxN."""
    if (point_coords is None) != (point_labels is None):
        raise InputError("point_coords and point_labels must be given together")
    coords = _as_float_array(point_coords, "point_coords")
    labels = _as_float_array(point_labels, "point_labels")
    want = 2 if single else 3
    form = "Nx2" if single else "QxNx2"
    if coords.ndim != want or coords.shape[-1] != 2:
        raise InputError(f"point_coords must have shape {form} (x, y pixels), got {coords.shape}")
    if labels.shape != coords.shape[:-1]:
        raise InputError(
            f"point_labels must have shape {coords.shape[:-1]} to match point_coords, got {labels.shape}"
        )
    if not np.all(labels == np.round(labels)):
        raise InputError(
            f"point_labels must be integers in {{-1, 0, 1, 2, 3}}, got {labels.tolist()}"
        )
    check_labels_values(labels.astype(np.int64), "point_labels")
    return coords, labels.astype(np.int64)


def check_prompt_count(n: int, where: Iterable[str] = ()) -> None:
    """A query has between 1 and ``MAX_POINTS_PER_QUERY`` prompt points (a box counts as 2)."""
    if n < 1:
        raise InputError("no prompt given: pass point_coords/point_labels, a box, or both")
    if n > MAX_POINTS_PER_QUERY:
        raise InputError(
            f"at most {MAX_POINTS_PER_QUERY} prompt points per query (a box counts as 2), got {n}"
        )
