"""Pretraining samples: an augmented view of an image, its masking noise and (cached) targets.

A sample is addressed by ``(epoch, index)`` (the sampler's ``with_epoch`` mode), and all its
randomness comes from ``(seed, epoch, index)``: the crop and flip of the view (or which of the
K cached views is used) and the noise that decides the token mask. A sample is therefore the
same in whichever worker, process or resumed run loads it, which is what makes several
processes train exactly like one process with the same global batch.

Unreadable images are not fatal: the sample is taken from the next readable image instead,
and the unreadable file is named in the batch (``unreadable``) so the run counts and reports
it. With a teacher cache, images the cache could not read are treated the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from esam.data.imagefolder import ImageFolder, decode_rgb, read_rgb
from esam.data.images import ImageReadError, read_image_bytes
from esam.data.views import DEFAULT_RATIO, apply_view, crop_view, sample_view
from esam.errors import InputError

log = logging.getLogger(__name__)

#: Stream tags, so the view and the mask of a sample (and the masks of held-out evaluation)
#: draw from independent generators.
VIEW_STREAM, MASK_STREAM, EVAL_MASK_STREAM = 1, 2, 3


def sample_rng(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one sample's randomness of one kind (view or mask)."""
    return np.random.Generator(np.random.PCG64([seed, epoch, index, stream]))


@dataclass(frozen=True)
class ViewSettings:
    """How views are cut: output side, random-resized-crop scale range, flips."""

    size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    flip_prob: float = 0.5
    teacher_size: int | None = None
    """Also render each view at this side for an online teacher (None: the teacher takes the
    student's view)."""


class PretrainViews(Dataset[dict[str, Any]]):
    """``(epoch, index)`` -> one pretraining sample.

    Each sample is a dict: ``image`` 3xSxS float32 (ImageNet-normalised view), ``noise`` N
    float32 uniform in [0, 1) (the masking noise of the sample's N tokens), ``target`` NxD
    float16 teacher features of that view (only with a cache), ``teacher_crop`` hxwx3 uint8
    and ``teacher_flip`` the view's crop and flip, for rendering it at the teacher's side
    (:func:`esam.data.views.render_crops`; only with an online teacher of another side), ``index`` the image used, and
    ``unreadable`` the paths skipped to get a readable image ('' separated by '\\n').

    Args:
        images: the image folder.
        views: view settings (ignored with a cache: its views are used).
        num_tokens: tokens per view (``(size / patch) ** 2``).
        seed: the run's seed.
        cache: a :class:`~esam.sami.cache.TeacherCache` over the same images, or None.
    """

    def __init__(
        self,
        images: ImageFolder,
        views: ViewSettings,
        num_tokens: int,
        seed: int,
        cache: Any | None = None,
    ) -> None:
        if cache is not None:
            if cache.num_images != len(images):
                raise InputError(
                    f"the teacher cache holds {cache.num_images} images but {images.root} has "
                    f"{len(images)}: build the cache from this folder (esam pretrain cache-teacher)"
                )
            if cache.view_size != views.size:
                raise InputError(
                    f"the teacher cache was built for {cache.view_size} px views, the run uses "
                    f"{views.size} px (set student.img_size={cache.view_size} or rebuild the cache)"
                )
        self.images = images
        self.views = views
        self.num_tokens = num_tokens
        self.seed = seed
        self.cache = cache

    def __len__(self) -> int:
        return len(self.images)

    def _readable(self, index: int) -> tuple[int, np.ndarray, list[str]]:
        """Image ``index`` or, when it cannot be read, the next readable one (wrapping)."""
        skipped: list[str] = []
        n = len(self.images)
        unusable: set[int] = getattr(self.cache, "unreadable", set()) if self.cache else set()
        for k in range(n):
            i = (index + k) % n
            if i in unusable:
                skipped.append(str(self.images.path(i)))
                continue
            try:
                return i, self._read(i), skipped
            except ImageReadError as e:
                log.warning("%s: skipped (%s)", self.images.path(i), e)
                skipped.append(str(self.images.path(i)))
        raise InputError(f"no image of {self.images.root} can be read ({n} tried)")

    def _read(self, i: int) -> np.ndarray:
        """Image ``i`` as HxWx3 uint8; with a cache that records digests, its bytes are
        checked against the file the teacher's features came from."""
        path = str(self.images.path(i))
        if self.cache is None or not self.cache.records_digests:
            return read_rgb(path)
        data = read_image_bytes(path)
        self.cache.check_image(i, data, path)
        return decode_rgb(data, path)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        i, image, skipped = self._readable(index)
        view_rng = sample_rng(self.seed, epoch, index, VIEW_STREAM)
        sample: dict[str, Any] = {}
        if self.cache is not None:
            v = int(view_rng.integers(self.cache.views_per_image))
            params, features = self.cache[i, v]
            sample["target"] = torch.from_numpy(np.array(features, dtype=np.float16))
        else:
            h, w = image.shape[:2]
            params = sample_view(
                view_rng, h, w, self.views.scale, DEFAULT_RATIO, self.views.flip_prob
            )
        sample["image"] = apply_view(image, params, self.views.size)
        teacher_size = self.views.teacher_size
        if self.cache is None and teacher_size is not None and teacher_size != self.views.size:
            # the uint8 crop, rendered at the teacher's side where the teacher runs: a 1024 px
            # float32 view is 12 MiB per sample, the crop of an ImageNet photo under 0.6 MiB
            sample["teacher_crop"] = torch.from_numpy(crop_view(image, params))
            sample["teacher_flip"] = params.flip
        noise = sample_rng(self.seed, epoch, index, MASK_STREAM).random(self.num_tokens)
        sample["noise"] = torch.from_numpy(noise.astype(np.float32))
        sample["index"] = i
        sample["unreadable"] = "\n".join(skipped)
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples into a batch (``unreadable`` stays a list of strings)."""
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "noise": torch.stack([s["noise"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "unreadable": [p for s in samples for p in s["unreadable"].split("\n") if p],
    }
    if "target" in samples[0]:
        batch["target"] = torch.stack([s["target"] for s in samples])
    if "teacher_crop" in samples[0]:
        batch["teacher_crop"] = [s["teacher_crop"] for s in samples]
        batch["teacher_flip"] = torch.tensor([s["teacher_flip"] for s in samples])
    return batch
