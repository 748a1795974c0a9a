"""Seeded augmented views: random-resized crop and horizontal flip as explicit parameters.

A view is a :class:`ViewParams` (crop box in source pixels and a flip flag) drawn by
:func:`sample_view` from a NumPy generator, then rendered by :func:`apply_view`. Rendering is a
pure function of (image, params, size): the same parameters give bit-identical pixels, which a
teacher-feature cache relies on (it stores the parameters beside the features, and training
renders the student's view from them). The crop is drawn as torchvision's
``RandomResizedCrop`` draws it (area fraction uniform in ``scale``, aspect ratio log-uniform in
``ratio``, 10 tries, then a centre crop), with MAE's pretraining scale (0.2, 1.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from esam.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: MAE's pretraining crop scale and the usual aspect-ratio range.
DEFAULT_SCALE = (0.2, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


@dataclass(frozen=True)
class ViewParams:
    """One augmented view of an image: the crop box (source pixels) and a horizontal flip."""

    top: int
    """First row of the crop."""
    left: int
    """First column of the crop."""
    height: int
    """Crop height in pixels (>= 1)."""
    width: int
    """Crop width in pixels (>= 1)."""
    flip: bool
    """Mirror the view left-right (after resizing)."""

    def to_list(self) -> list[int]:
        """``[top, left, height, width, flip]`` as integers, for JSON."""
        return [self.top, self.left, self.height, self.width, int(self.flip)]

    @classmethod
    def from_list(cls, values: list[int] | tuple[int, ...]) -> ViewParams:
        """Inverse of :meth:`to_list`."""
        if len(values) != 5:
            raise InputError(
                f"view params need 5 values [top, left, height, width, flip], got {values}"
            )
        top, left, height, width, flip = (int(v) for v in values)
        return cls(top, left, height, width, bool(flip))

    def check_fits(self, height: int, width: int) -> None:
        """Raise :class:`InputError` unless the crop box lies inside an image of that size."""
        if (
            self.height < 1
            or self.width < 1
            or self.top < 0
            or self.left < 0
            or self.top + self.height > height
            or self.left + self.width > width
        ):
            raise InputError(
                f"view crop (top {self.top}, left {self.left}, {self.height}x{self.width}) does not fit an image of {height}x{width}"
            )


def view_rng(seed: int, image_index: int, view_index: int) -> np.random.Generator:
    """The generator of one (image, view) pair: PCG64 seeded with all three numbers.

    Independent of iteration order, process count and every other image, so any process can
    redraw any view.
    """
    return np.random.Generator(np.random.PCG64([seed, image_index, view_index]))


def sample_view(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
    flip_prob: float = 0.5,
) -> ViewParams:
    """Draw a random-resized-crop box and a flip for an image of ``height`` x ``width``.

    Args:
        rng: the generator (e.g. :func:`view_rng`); the draw is a function of its state.
        height, width: source image size in pixels.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's width / height (drawn log-uniformly).
        flip_prob: probability of a horizontal flip.
    """
    if height < 1 or width < 1:
        raise InputError(f"image size must be positive, got {height}x{width}")
    if not (0 < scale[0] <= scale[1] <= 1):
        raise InputError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise InputError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    if not 0.0 <= flip_prob <= 1.0:
        raise InputError(f"flip_prob must be in [0, 1], got {flip_prob}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            box = (top, left, h, w)
            break
    if box is None:  # centre crop at the aspect ratio clamped into range
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            h, w = height, round(height * ratio[1])
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    flip = bool(rng.random() < flip_prob)
    return ViewParams(*box, flip=flip)


def apply_view(
    image: np.ndarray,
    params: ViewParams,
    size: int,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Render a view: crop, resize to ``size`` x ``size``, flip, normalise.

    Resizing is bilinear with antialiasing (as torchvision's tensor ``RandomResizedCrop``),
    half-pixel centres; the arithmetic is fixed, so equal inputs give bit-identical outputs.

    Args:
        image: HxWx3 uint8 RGB.
        params: the view (its box must lie inside the image).
        size: output side S in pixels.
        mean, std: per-channel normalisation of values in [0, 1] (ImageNet's by default).

    Returns:
        3xSxS float32, ``(pixels / 255 - mean) / std``.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise InputError(
            f"image must be an HxWx3 uint8 array, got {getattr(image, 'dtype', type(image).__name__)} of shape {getattr(image, 'shape', None)}"
        )
    if image.shape[2] != 3:
        raise InputError(f"image must have shape HxWx3 (RGB), got {image.shape}")
    if size < 1:
        raise InputError(f"size must be >= 1, got {size}")
    crop = crop_view(image, params)
    return render_crop(torch.from_numpy(crop), size, params.flip, mean, std)


def crop_view(image: np.ndarray, params: ViewParams) -> np.ndarray:
    """The view's box cut from an HxWx3 uint8 image: hxwx3 uint8, contiguous (a copy).

    With :func:`render_crop` this is :func:`apply_view` in two steps: the crop, a fraction of
    the size of a large rendered view, can travel from a loader worker, and the rendering
    run where the view is used.
    """
    params.check_fits(image.shape[0], image.shape[1])
    crop = image[params.top : params.top + params.height, params.left : params.left + params.width]
    return np.ascontiguousarray(crop)


def render_crop(
    crop: torch.Tensor,
    size: int,
    flip: bool,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize a crop from :func:`crop_view` to ``size`` x ``size``, flip it, normalise it.

    Args:
        crop: hxwx3 uint8, on any device.
        size: output side S.
        flip: mirror left-right.
        mean, std: per-channel normalisation of values in [0, 1].

    Returns:
        3xSxS float32 on the crop's device; on a CPU bit-identical to :func:`apply_view`.
    """
    x = crop.permute(2, 0, 1)[None].float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    if flip:
        x = x.flip(-1)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s)[0].contiguous()


def render_crops(crops: list[torch.Tensor], flips: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`render_crop` for a batch of crops of different sizes: Bx3xSxS float32."""
    if len(crops) != len(flips):
        raise InputError(f"{len(crops)} crops but {len(flips)} flip flags")
    return torch.stack(
        [render_crop(c, size, bool(f)) for c, f in zip(crops, flips.tolist(), strict=True)]
    )
