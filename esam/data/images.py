"""Reading image files: decoded to RGB, size checked, failures named by skip reason."""

from __future__ import annotations

import numpy as np

from esam.data.skips import SKIP_IMAGE_CORRUPT, SKIP_IMAGE_MISSING, SKIP_IMAGE_SIZE


class ImageReadError(Exception):
    """An image could not be used; ``reason`` is one of the image-level skip reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_image(path: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB, pixels as stored (no EXIF rotation).

    Raises:
        ImageReadError: missing, undecodable or of a different size than ``expected_hw``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.array(im.convert("RGB"))
    except FileNotFoundError as e:
        raise ImageReadError(SKIP_IMAGE_MISSING, f"{path}: file not found") from e
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageReadError(
            SKIP_IMAGE_CORRUPT, f"{path}: cannot be decoded as an image ({e})"
        ) from e
    if expected_hw is not None and tuple(rgb.shape[:2]) != tuple(expected_hw):
        raise ImageReadError(
            SKIP_IMAGE_SIZE,
            f"{path}: image is {rgb.shape[0]}x{rgb.shape[1]} but the annotation file says "
            f"{expected_hw[0]}x{expected_hw[1]}",
        )
    return rgb
