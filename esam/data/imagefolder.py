"""Image folders: the ImageNet layout (one sub-folder per class) or a flat folder of images.

Only listing happens here (sorted, so every process sees the same order); files are decoded
where they are used, through :func:`read_rgb`, which names the file that cannot be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esam.data.images import ImageReadError
from esam.data.skips import SKIP_IMAGE_CORRUPT
from esam.errors import InputError

#: File name endings read as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


@dataclass(frozen=True)
class ImageFolder:
    """The images below a folder, in a fixed order.

    Attributes:
        root: the folder.
        files: image paths relative to ``root``, sorted (class folder, then file name).
        classes: class folder names, sorted; empty for a flat folder.
        targets: class index of every file (-1 for a flat folder).
    """

    root: Path
    files: tuple[str, ...]
    classes: tuple[str, ...] = ()
    targets: tuple[int, ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        """Absolute path of image ``index``."""
        return self.root / self.files[index]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _holds_image(folder: Path) -> bool:
    """Whether ``folder`` or a folder below it (hidden ones aside) holds an image file."""
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(_is_image(f) for f in filenames):
            return True
    return False


def scan_image_folder(root: str | os.PathLike[str]) -> ImageFolder:
    """List the images of ``root``: class sub-folders (ImageNet layout) or images directly.

    Sub-folders are classes when ``root`` holds no image files itself; a root holding both
    images and folders of images is refused, since either reading would leave images out.
    Hidden files and folders are ignored, and so are files that are not images (by extension).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        InputError: no image is found (the message says which extensions count), or images
            lie both in ``root`` and in its sub-folders.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {base} (pass a folder of images, or of class folders of "
            "images as ImageNet's train/ and val/)"
        )
    top = sorted(p for p in base.iterdir() if not p.name.startswith("."))
    direct = [p.name for p in top if p.is_file() and _is_image(p.name)]
    classes = [p.name for p in top if p.is_dir()]
    if direct:
        nested = [c for c in classes if _holds_image(base / c)]
        if nested:
            raise InputError(
                f"{base} holds both images ({len(direct)}, e.g. {direct[0]}) and folders of "
                f"images ({len(nested)}, e.g. {nested[0]}/): pass a folder of images or a "
                "folder of class folders, not both (move the loose images away, or into a "
                "folder of their own)"
            )
        return ImageFolder(base, tuple(direct), (), tuple([-1] * len(direct)))
    files: list[str] = []
    targets: list[int] = []
    for c, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(base / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(base)
            for f in sorted(filenames):
                if _is_image(f):
                    files.append(str(rel / f))
                    targets.append(c)
    if not files:
        raise InputError(
            f"no images found in {base} (looked for {', '.join(IMAGE_EXTENSIONS)} files in the "
            "folder and in its sub-folders)"
        )
    return ImageFolder(base, tuple(files), tuple(classes), tuple(targets))


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (pixels as stored, no EXIF rotation).

    Raises:
        ImageReadError: the file is missing or cannot be decoded (``reason`` says which).
    """
    from esam.data.images import read_image_bytes

    return decode_rgb(read_image_bytes(str(path)), str(path))


def decode_rgb(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes, already read, as HxWx3 uint8 RGB (pixels as stored).

    Raises:
        ImageReadError: the bytes cannot be decoded (``name`` says whose).
    """
    from esam.data.images import decode_image

    try:
        return decode_image(data, name)
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises many kinds for broken files
        raise ImageReadError(
            SKIP_IMAGE_CORRUPT, f"{name}: cannot be decoded as an image ({e})"
        ) from e
