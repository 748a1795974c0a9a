"""Images as the generator takes them: any common numpy layout, turned into HxWx3 uint8 RGB."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from esam.errors import InputError

log = logging.getLogger(__name__)


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


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


#: The EXIF tag of the orientation a viewer applies to the stored pixels.
EXIF_ORIENTATION = 0x0112


def read_image_file(path: str | os.PathLike[str], *, exif_transpose: bool = False) -> np.ndarray:
    """Read an image file for the generator, keeping 16-bit grey values (PIL's RGB conversion
    would clip them); other modes are converted to RGB.

    Pixels are used as stored, as datasets annotate them; a photo whose EXIF orientation asks
    viewers to rotate or mirror it is shown differently from how it is stored, so a warning
    says so unless ``exif_transpose`` applies the orientation (prompts and output masks are
    then in the displayed frame).

    Returns:
        HxW uint16 for 16-bit grey files, HxW uint8 for 8-bit grey, HxWx3 or HxWx4 uint8
        otherwise; :func:`as_rgb_uint8` turns any of them into RGB.

    Raises:
        FileNotFoundError: no such file.
        InputError: the file is not an image PIL can decode.
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
            if im.mode in _SIXTEEN_BIT_MODES:
                return np.asarray(im).astype(np.uint16)
            if im.mode in ("I", "F"):  # 32-bit grey: PIL's RGB conversion clips it at 255
                values = np.asarray(im)
                if im.mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
                    return values.astype(np.uint16)
                lo, hi = (float(values.min()), float(values.max())) if values.size else (0, 0)
                raise InputError(
                    f"{path}: a {'32-bit integer' if im.mode == 'I' else 'floating-point'} "
                    f"grey image with values from {lo:g} to {hi:g}; convert it to 8 or 16 bits "
                    "first (its range has no standard mapping to colours)"
                )
            if im.mode in ("L", "RGB", "RGBA"):
                return np.asarray(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: cannot be read as an image ({e})") from e
