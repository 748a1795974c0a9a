"""Reading image files: decoded to RGB, size checked, failures named by skip reason.

A path may also name a member of an uncompressed tar shard, ``<shard>.tar::<member>`` (see
:mod:`esam.data.tarshards`): the member is read in place, without extracting the shard.
"""

from __future__ import annotations

import io

import numpy as np

from esam.data.skips import SKIP_IMAGE_CORRUPT, SKIP_IMAGE_MISSING, SKIP_IMAGE_SIZE


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
            rgb = np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageReadError(
            SKIP_IMAGE_CORRUPT, f"{name}: cannot be decoded as an image ({e})"
        ) from e
    return _check_size(rgb, name, expected_hw)


def _check_size(rgb: np.ndarray, name: str, expected_hw: tuple[int, int] | None) -> np.ndarray:
    if expected_hw is not None and tuple(rgb.shape[:2]) != tuple(expected_hw):
        raise ImageReadError(
            SKIP_IMAGE_SIZE,
            f"{name}: image is {rgb.shape[0]}x{rgb.shape[1]} but the annotation file says "
            f"{expected_hw[0]}x{expected_hw[1]}",
        )
    return rgb
