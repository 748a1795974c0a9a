"""Images as the generator takes them: any common numpy layout, turned into HxWx3 uint8 RGB."""

from __future__ import annotations

import numpy as np

from esam.errors import InputError


def as_rgb_uint8(image: object, name: str = "image") -> np.ndarray:
    """Bring an image array to HxWx3 uint8 RGB, or raise an error naming what is wrong.

    Accepted: HxW or HxWx1 grey (replicated to three channels), HxWx3 RGB, HxWx4 RGBA (alpha
    dropped: the model sees the colour channels only), in uint8 or uint16 (16-bit values are
    scaled to 0..255 with rounding, ``v * 255 / 65535``). Floating-point and boolean images are
    refused, since their value range is ambiguous.

    Args:
        image: the array.
        name: how error messages call it.

    Returns:
        A C-contiguous HxWx3 uint8 array (the input itself when it already is one).

    Raises:
        InputError: not a numpy array, another dtype or number of channels, or empty.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{name} must be a numpy array (HxWx3 RGB uint8), got {type(image).__name__}"
        )
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(
            f"{name} must have dtype uint8 (or uint16), got {image.dtype}; "
            "convert floating-point images with (x * 255).round().astype(np.uint8)"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name} must have shape HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA), got {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name} must be non-empty, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)
