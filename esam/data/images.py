"""Reading image files: decoded to RGB, size checked, failures named by skip reason.

A path may also name a member of an uncompressed tar shard, ``<shard>.tar::<member>`` (see
:mod:`esam.data.tarshards`): the member is read in place, without extracting the shard.

Every reader decodes through :func:`stored_pixels` and :func:`as_rgb_uint8`, so a 16-bit grey
file is scaled to 8 bits everywhere instead of being clipped to white by PIL's RGB conversion,
and grey values of no standard range are refused, never silently saturated.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from esam.data.skips import (
    SKIP_IMAGE_CORRUPT,
    SKIP_IMAGE_MISSING,
    SKIP_IMAGE_SIZE,
    SKIP_IMAGE_UNSUPPORTED,
)
from esam.errors import InputError

log = logging.getLogger(__name__)

#: The EXIF tag of the orientation a viewer applies to the stored pixels.
EXIF_ORIENTATION = 0x0112

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class UnsupportedImageError(InputError):
    """A decodable image that has no RGB reading: grey values of no standard range."""


class ImageReadError(Exception):
    """An image could not be used; ``reason`` is one of the image-level skip reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_image(path: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file (or ``<shard>.tar::<member>``) to HxWx3 uint8 RGB, pixels as
    stored (no EXIF rotation).

    Raises:
        ImageReadError: missing, undecodable or of a different size than ``expected_hw``.
    """
    return decode_image(read_image_bytes(path), path, expected_hw)


def read_image_bytes(path: str) -> bytes:
    """The encoded bytes of an image file or of a tar member (``<shard>.tar::<member>``).

    Raises:
        ImageReadError: missing, or cannot be read (a damaged shard, a folder, no permission).
    """
    from esam.data.tarshards import CorruptShardError, read_member_path, split_member_path

    member = split_member_path(path) is not None
    try:
        if member:
            return read_member_path(path)
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        # a missing member's error names the shard and member; a missing file needs no more
        raise ImageReadError(
            SKIP_IMAGE_MISSING, f"{path}: {e if member else 'file not found'}"
        ) from e
    except (CorruptShardError, OSError) as e:
        raise ImageReadError(SKIP_IMAGE_CORRUPT, f"{path}: cannot be read ({e})") from e


def decode_image(data: bytes, name: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an encoded image held in memory to HxWx3 uint8 RGB (pixels as stored).

    Args:
        data: the encoded file (JPEG, PNG, ...).
        name: where it came from, for error messages.
        expected_hw: the size it must have, or None.

    Raises:
        ImageReadError: undecodable, or of a different size than ``expected_hw``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = as_rgb_uint8(stored_pixels(im, name), name)
    except Image.DecompressionBombError as e:
        raise ImageReadError(SKIP_IMAGE_UNSUPPORTED, _too_large(name, e)) from e
    except UnsupportedImageError as e:
        raise ImageReadError(SKIP_IMAGE_UNSUPPORTED, str(e)) from e
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageReadError(
            SKIP_IMAGE_CORRUPT, f"{name}: cannot be decoded as an image ({e})"
        ) from e
    return _check_size(rgb, name, expected_hw)


def _too_large(name: str, error: Exception) -> str:
    """The message for an image PIL refuses to decode for its size (a decompression bomb)."""
    from PIL import Image

    return (
        f"{name}: more than twice PIL's limit of {Image.MAX_IMAGE_PIXELS} pixels ({error}); "
        "raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
    )


def stored_pixels(im: Any, name: str) -> np.ndarray:
    """A loaded PIL image's pixels, without clipping 16-bit grey values as PIL's RGB conversion
    does.

    Returns:
        HxW uint16 for 16-bit grey (and 32-bit integer grey within 0..65535), HxW uint8 for
        8-bit grey, HxWx3 or HxWx4 uint8 otherwise (other modes converted to RGB);
        :func:`as_rgb_uint8` turns any of them into RGB.

    Raises:
        UnsupportedImageError: 32-bit integer grey beyond 0..65535, or floating-point grey.
    """
    if im.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(im).astype(np.uint16)
    if im.mode in ("I", "F"):
        values = np.asarray(im)
        if im.mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
            return values.astype(np.uint16)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        kind = "32-bit integer" if im.mode == "I" else "floating-point"
        raise UnsupportedImageError(
            f"{name}: a {kind} grey image with values from {lo:g} to {hi:g}; convert it to 8 "
            "or 16 bits first (its range has no standard mapping to colours)"
        )
    # np.array copies: PIL's buffer is read-only, and readers hand out arrays callers may edit
    if im.mode in ("L", "RGB", "RGBA"):
        return np.array(im)
    return np.array(im.convert("RGB"))


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


def read_image_file(path: str | os.PathLike[str], *, exif_transpose: bool = False) -> np.ndarray:
    """Read one image file for prediction, keeping 16-bit grey values (:func:`stored_pixels`).

    Pixels are used as stored, as datasets annotate them; a photo whose EXIF orientation asks
    viewers to rotate or mirror it is shown differently from how it is stored, so a warning
    says so unless ``exif_transpose`` applies the orientation (prompts and output masks are
    then in the displayed frame).

    Returns:
        What :func:`stored_pixels` returns; :func:`as_rgb_uint8` turns it into RGB.

    Raises:
        FileNotFoundError: no such file.
        InputError: the file is not an image PIL can decode, or has no RGB reading.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
            im: Image.Image = opened
            if exif_transpose:
                im = ImageOps.exif_transpose(opened)
            elif orientation not in (0, 1):
                log.warning(
                    "%s: EXIF orientation %s: viewers show this image rotated or mirrored; its "
                    "pixels are used as stored, so prompts and masks are in the stored frame "
                    "(pass --exif-transpose to use the frame viewers show)",
                    path,
                    orientation,
                )
            return stored_pixels(im, str(path))
    except UnsupportedImageError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: cannot be read as an image ({e})") from e
    except Image.DecompressionBombError as e:
        raise InputError(_too_large(str(path), e)) from e


def _check_size(rgb: np.ndarray, name: str, expected_hw: tuple[int, int] | None) -> np.ndarray:
    if expected_hw is not None and tuple(rgb.shape[:2]) != tuple(expected_hw):
        raise ImageReadError(
            SKIP_IMAGE_SIZE,
            f"{name}: image is {rgb.shape[0]}x{rgb.shape[1]} but the annotation file says "
            f"{expected_hw[0]}x{expected_hw[1]}",
        )
    return rgb
