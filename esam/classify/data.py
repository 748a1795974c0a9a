"""Labelled images: class folders or a flat val folder with a labels file; timm transforms.

Class indices are the sorted class-folder names of the training set (ImageNet's train/ gives
the usual 0..999 order of sorted synsets). A validation set is mapped onto those classes by
name: an ImageNet-layout val folder through its folder names; a flat ILSVRC val folder through
a labels file whose labels are class names (synsets) or integer indices into a synset list
(``synset_words.txt``; by default ImageNet-1K's sorted synsets from timm). Anything that does
not map (an unknown synset, an image without a label, a label without an image, an empty class
folder) is a named :class:`~esam.errors.InputError`, never a silently wrong label.

Unreadable images are counted, not fatal: a training sample is taken from the next readable
image (the skipped file named in the batch), an evaluation image is left out under the skip
reason ``image_corrupt`` / ``image_missing``.

Augmentation randomness is a function of ``(seed, epoch, index)``: the transform runs with
Python's, NumPy's and torch's global generators seeded from it (and restored after), so a
sample is the same in any worker, process or resumed run.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from esam.data.imagefolder import IMAGE_EXTENSIONS, read_rgb, scan_image_folder
from esam.data.images import ImageReadError
from esam.errors import InputError
from esam.runtime.seeding import derive_seed

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SYNSET = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class LabeledImages:
    """Images with class indices.

    Attributes:
        root: the folder.
        files: image paths relative to ``root`` (sorted).
        targets: class index of every file.
        classes: class names; index i is class i.
        layout: ``folders`` (ImageNet layout) or ``flat`` (with a labels file).
    """

    root: Path
    files: tuple[str, ...]
    targets: tuple[int, ...]
    classes: tuple[str, ...]
    layout: str = "folders"
    labels_file: str | None = field(default=None)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        """Absolute path of image ``index``."""
        return self.root / self.files[index]


def _empty_class_folders(root: Path, classes: tuple[str, ...], targets: tuple[int, ...]) -> None:
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        listed = ", ".join(str(root / c) for c in empty[:5])
        more = f" ({len(empty)} in all)" if len(empty) > 5 else ""
        raise InputError(
            f"empty class folder(s): {listed}{more} hold no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "remove them or add images, since class indices follow the folder list"
        )


def train_images(path: str | Path) -> LabeledImages:
    """The training set: class sub-folders, sorted names = class indices.

    Raises:
        FileNotFoundError: no such folder.
        InputError: a flat folder (no classes), no images, or an empty class folder.
    """
    folder = scan_image_folder(path)
    if not folder.classes:
        raise InputError(
            f"training images {path} are a flat folder; training needs one sub-folder per class "
            "(the ImageNet train/ layout)"
        )
    _empty_class_folders(folder.root, folder.classes, folder.targets)
    return LabeledImages(folder.root, folder.files, folder.targets, folder.classes)


def read_synsets(path: str | Path | None) -> list[str]:
    """The class list integer labels index: the first word of each line of ``path``, or
    ImageNet-1K's 1000 sorted synsets (timm's list) when ``path`` is None."""
    if path is None:
        from esam.utils.deps import require

        info = require("timm.data", extra="classify").ImageNetInfo()
        return [info.index_to_label_name(i) for i in range(info.num_classes())]
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"synset list not found: {p}")
    names = [line.split()[0] for line in p.read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(f"{p}: the synset list is empty")
    return names


def parse_labels(path: str | Path) -> dict[str, str]:
    """A labels file: ``FILE LABEL`` or ``FILE, LABEL`` per line -> {file name: label text}.

    Raises:
        InputError: a malformed line or a file named twice (with its line number).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labels file not found: {p}")
    labels: dict[str, str] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise InputError(f"{p}:{n}: expected 'FILE LABEL', got {line.strip()!r}")
        name = Path(parts[0]).name
        if name in labels:
            raise InputError(f"{p}:{n}: {name} is labelled twice")
        labels[name] = parts[1]
    if not labels:
        raise InputError(f"{p}: no labels")
    return labels


def val_images(
    path: str | Path,
    classes: tuple[str, ...] | list[str],
    labels: str | Path | None = None,
    synsets: str | Path | None = None,
) -> LabeledImages:
    """The validation set mapped onto the training ``classes``.

    Args:
        path: ImageNet-layout folder, or a flat folder of images (then ``labels`` is needed).
        classes: the classifier's class names (training folder names).
        labels: labels file of a flat folder (see :func:`parse_labels`).
        synsets: the list integer labels index (see :func:`read_synsets`).

    Raises:
        InputError: unknown class names or synsets, integer labels out of range, images
            without labels or labels without images (counts and examples named), an empty
            class folder, a flat folder without a labels file.
    """
    index = {c: i for i, c in enumerate(classes)}
    folder = scan_image_folder(path)
    if folder.classes:
        _empty_class_folders(folder.root, folder.classes, folder.targets)
        unknown = [c for c in folder.classes if c not in index]
        if unknown:
            raise InputError(
                f"{path}: class folder(s) {unknown[:10]} are not classes of the training set "
                f"({len(classes)} classes, e.g. {list(classes[:3])})"
            )
        targets = tuple(index[folder.classes[t]] for t in folder.targets)
        return LabeledImages(folder.root, folder.files, targets, tuple(classes))
    if labels is None:
        raise InputError(
            f"{path} is a flat folder of images: pass its labels file (--labels FILE, one "
            "'FILE LABEL' line per image)"
        )
    table = parse_labels(labels)
    files = list(folder.files)
    names = {Path(f).name for f in files}
    unlabelled = [f for f in files if Path(f).name not in table]
    absent = sorted(set(table) - names)
    if unlabelled or absent:
        raise InputError(
            f"{labels} does not match {path}: {len(table)} labels for {len(files)} images; "
            f"{len(unlabelled)} image(s) without a label (e.g. {unlabelled[:3]}), "
            f"{len(absent)} label(s) of images not in the folder (e.g. {absent[:3]})"
        )
    synset_list: list[str] | None = None
    targets_list: list[int] = []
    unknown_labels: set[str] = set()
    for f in files:
        text = table[Path(f).name]
        name = text
        if text.isdigit():
            if synset_list is None:
                synset_list = read_synsets(synsets)
            k = int(text)
            if k >= len(synset_list):
                unknown_labels.add(text)
                continue
            name = synset_list[k]
        if name not in index:
            unknown_labels.add(text if name == text else f"{text} ({name})")
            continue
        targets_list.append(index[name])
    if unknown_labels:
        kind = "synsets" if all(_SYNSET.match(u.split()[0]) for u in unknown_labels) else "labels"
        raise InputError(
            f"{labels}: unknown {kind} {sorted(unknown_labels)[:10]} ({len(unknown_labels)} in "
            f"all): not among the {len(classes)} training classes"
            + (f" or the {len(synset_list)} synsets" if synset_list is not None else "")
        )
    return LabeledImages(
        folder.root, folder.files, tuple(targets_list), tuple(classes), "flat", str(labels)
    )


def train_transform(img_size: int, aug: Any) -> Callable[[Any], torch.Tensor]:
    """timm's training transform: RandomResizedCrop, flip, RandAugment, normalise, erasing."""
    from esam.utils.deps import require

    timm_data = require("timm.data", extra="classify")
    return timm_data.create_transform(
        input_size=img_size,
        is_training=True,
        scale=tuple(aug.scale),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter if aug.color_jitter is not None else 0.0,
        auto_augment=aug.auto_augment,
        interpolation=aug.interpolation,
        re_prob=aug.reprob,
        re_mode=aug.remode,
        re_count=1,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def eval_transform(img_size: int, crop_pct: float) -> Callable[[Any], torch.Tensor]:
    """timm's evaluation transform: resize to img_size / crop_pct (bicubic), centre crop."""
    from esam.utils.deps import require

    timm_data = require("timm.data", extra="classify")
    return timm_data.create_transform(
        input_size=img_size,
        is_training=False,
        crop_pct=crop_pct,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def _seeded(transform: Callable[[Any], torch.Tensor], image: Any, seed: int) -> torch.Tensor:
    """``transform(image)`` with the global generators seeded from ``seed``, then restored."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        try:
            return transform(image)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ClassificationSet(Dataset[dict[str, Any]]):
    """``index`` or ``(epoch, index)`` -> ``{"image": 3xSxS float32, "label": int, "index": int,
    "ok": bool, "unreadable": str}``.

    Args:
        images: the labelled images.
        transform: PIL image -> 3xSxS tensor.
        seed: the run's seed (augmentation draws from ``(seed, epoch, index)``).
        train: replace an unreadable image by the next readable one (True) or return it with
            ``ok=False`` and a zero image, to be counted as skipped (False).
        size: side of the zero image returned for an unreadable evaluation image.
    """

    def __init__(
        self,
        images: LabeledImages,
        transform: Callable[[Any], torch.Tensor],
        seed: int = 0,
        train: bool = True,
        size: int = 224,
    ) -> None:
        self.images = images
        self.transform = transform
        self.seed = seed
        self.train = train
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, index: int) -> tuple[int, np.ndarray | None, list[str], str]:
        n = len(self.images)
        skipped: list[str] = []
        reason = ""
        for k in range(n if self.train else 1):
            i = (index + k) % n
            try:
                return i, read_rgb(self.images.path(i)), skipped, reason
            except ImageReadError as e:
                log.warning("%s: skipped (%s)", self.images.path(i), e)
                skipped.append(str(self.images.path(i)))
                reason = e.reason
        if self.train:
            raise InputError(f"no image of {self.images.root} can be read ({n} tried)")
        return index, None, skipped, reason

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        from PIL import Image

        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        i, rgb, skipped, reason = self._read(index)
        if rgb is None:
            image = torch.zeros(3, self.size, self.size)
        else:
            seed = derive_seed(self.seed, epoch, index)
            image = _seeded(self.transform, Image.fromarray(rgb), seed)
        return {
            "image": image,
            "label": self.images.targets[i],
            "index": index,
            "ok": rgb is not None,
            "skip_reason": reason,
            "unreadable": "\n".join(skipped),
        }
