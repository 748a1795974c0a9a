"""Fine-tuning samples: an image at the encoder's size and up to K of its masks.

A sample is addressed by ``(epoch, index)`` (the sampler's ``with_epoch`` mode) and all its
randomness comes from ``(seed, epoch, index)``: which masks are drawn, and the seed of the
generator the training step draws this image's prompts from (every round). A sample is the
same in whichever worker, process or resumed run loads it, so N processes train exactly as one
process with the same global batch.

The image is stretched (bilinear, no padding) to ``img_size`` x ``img_size``, as the official
preprocessing does; masks are decoded only for the drawn annotations and resized (area) to the
loss resolution ``mask_size`` x ``mask_size``, thresholded at one half. Masks that are empty or
smaller than ``min_area`` at that resolution are not drawn; annotations whose RLE does not
decode to the image's size are left out, as are those the record left out (no segmentation,
no integer id). An image whose json or jpg cannot be read, or whose jpg is not its json's size,
is replaced by the next one and named in the batch (``unreadable``); so is an image left with
no mask to draw (no annotations, or all of them left out), which is counted
(``image_without_usable_masks``) instead of named: it would take a place in the batch and
teach nothing.

Every left-out annotation is counted by reason in the sample's ``skips``, together with the
record's own counts (``image_without_annotations``), in epoch 0 only and only for the image at
the sample's own index (a replacement is counted where it is drawn itself): each image is
drawn once per epoch, so the counts are of annotations, not of draws, however many epochs run
(with N processes the sampler may repeat up to N - 1 images to even out the ranks; theirs
count twice). Only the annotations a sample examines are counted: it stops once it has K masks.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from esam.data.images import ImageReadError
from esam.data.masks import rle_problem
from esam.data.skips import SKIP_BAD_RLE, SKIP_EMPTY_MASK
from esam.errors import InputError

log = logging.getLogger(__name__)

#: Skip reason of masks below the minimum area at the loss resolution.
SKIP_SMALL_MASK = "mask_below_min_area"
#: Unreadable images in a row after which a sample stops looking (the data are likely not
#: SA-1B's format at all, and every sample would read the whole set before failing).
MAX_UNREADABLE_IN_A_ROW = 1000
#: Count of images replaced because none of their masks could be drawn.
SKIP_NO_USABLE_MASK = "image_without_usable_masks"


@dataclass(frozen=True)
class SampleSettings:
    """How samples are cut."""

    img_size: int
    """Encoder input side (the image is stretched to it)."""
    mask_size: int
    """Side of the masks the loss compares (the decoder's low-res output, or the input)."""
    max_masks: int
    """K: masks drawn per image (padded when fewer)."""
    min_area: int
    """Smallest mask area (pixels at ``mask_size``) that may be drawn."""
    seed: int


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's randomness."""
    return np.random.Generator(np.random.PCG64([seed, epoch, index, 7]))


class FinetuneSamples(Dataset[dict[str, Any]]):
    """``(epoch, index)`` -> one fine-tuning sample from an SA-1B-format dataset.

    Each sample is a dict: ``image`` 3xSxS float32 in [0, 1]; ``masks`` KxTxT bool (T =
    ``mask_size``); ``valid`` K bool (False for padding); ``prompt_seed`` the seed of this
    image's prompt generator; ``index`` the image used; ``unreadable`` the paths
    skipped to reach a readable image ('\\n'-separated); ``skips`` counts of left-out
    annotations by reason (epoch 0 only, see the module doc).

    Args:
        data: an :class:`esam.data.sa1b.SA1BDataset` (anything with ``__len__``, ``record``,
            ``read_image`` and ``decode_mask``).
        settings: the sample settings.
    """

    def __init__(self, data: Any, settings: SampleSettings) -> None:
        if len(data) < 1:
            raise InputError("the fine-tuning data holds no image")
        self.data = data
        self.settings = settings

    def __len__(self) -> int:
        return len(self.data)

    def _name(self, i: int, which: int = 0) -> str:
        """The jpg (``which`` 0) or json (1) of image ``i``, for messages."""
        locations = getattr(self.data, "locations", None)
        return str(locations(i)[which]) if callable(locations) else f"image {i}"

    def _read(self, i: int) -> tuple[Any, np.ndarray] | str:
        """Image ``i``'s record and HxWx3 pixels, or the name of what could not be read."""
        try:
            record = self.data.record(i)
        except InputError as e:  # a json that does not parse or lacks its image block
            log.warning("image %d: skipped (%s)", i, e)
            return self._name(i, 1)
        try:
            return record, self.data.read_image(i, (record.height, record.width))
        except (ImageReadError, InputError) as e:  # InputError: a damaged shard member
            log.warning("image %d: skipped (%s)", i, e)
            return self._name(i)

    def _draw(
        self, record: Any, h: int, w: int, rng: np.random.Generator
    ) -> tuple[list[torch.Tensor], Counter[str]]:
        """Up to K masks of ``record`` (TxT bool, in a random order) and the left-out counts."""
        s = self.settings
        skips: Counter[str] = Counter(getattr(record, "skips", {}))
        masks: list[torch.Tensor] = []
        for j in rng.permutation(len(record.annotations)):
            if len(masks) == s.max_masks:
                break
            ann = record.annotations[int(j)]
            seg = ann.get("segmentation")
            if not isinstance(seg, dict) or rle_problem(seg, h, w) is not None:
                skips[SKIP_BAD_RLE] += 1
                continue
            full = torch.from_numpy(self.data.decode_mask(ann, h, w).astype(np.float32))
            small = F.interpolate(full[None, None], (s.mask_size, s.mask_size), mode="area")[0, 0]
            mask = small >= 0.5
            area = int(mask.sum())
            if area == 0:
                skips[SKIP_EMPTY_MASK] += 1
                continue
            if area < s.min_area:
                skips[SKIP_SMALL_MASK] += 1
                continue
            masks.append(mask)
        return masks, skips

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        s = self.settings
        rng = sample_rng(s.seed, epoch, index)
        unreadable: list[str] = []
        skips: Counter[str] = Counter()
        n = len(self.data)
        for step in range(n):
            i = (index + step) % n
            read = self._read(i)
            if isinstance(read, str):
                unreadable.append(read)
                if len(unreadable) == MAX_UNREADABLE_IN_A_ROW < n:
                    raise InputError(
                        f"{len(unreadable)} images in a row cannot be read, the last {read} "
                        "(see the warnings above): is this SA-1B-format data (jpg + json pairs)?"
                    )
                continue
            record, image = read
            h, w = image.shape[:2]
            masks, counts = self._draw(record, h, w, rng)
            if step == 0:
                skips.update(counts)
                if not masks:
                    skips[SKIP_NO_USABLE_MASK] += 1
            if masks:
                break
        else:
            raise InputError(
                f"no image of the fine-tuning data can be read and has a mask to train on "
                f"({n} tried; unreadable: {len(unreadable)})"
            )
        k = len(masks)
        out_masks = torch.zeros(s.max_masks, s.mask_size, s.mask_size, dtype=torch.bool)
        if k:
            out_masks[:k] = torch.stack(masks)
        valid = torch.zeros(s.max_masks, dtype=torch.bool)
        valid[:k] = True
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        img = F.interpolate(img[None], (s.img_size, s.img_size), mode="bilinear")[0]
        return {
            "image": img.clamp_(0.0, 1.0),
            "masks": out_masks,
            "valid": valid,
            "prompt_seed": int(rng.integers(1 << 62)),
            "index": i,
            "unreadable": "\n".join(unreadable),
            "skips": dict(skips) if epoch == 0 else {},
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (``unreadable`` a list of names, ``skips`` summed)."""
    skips: Counter[str] = Counter()
    for s in samples:
        skips.update(s["skips"])
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "masks": torch.stack([s["masks"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "prompt_seed": torch.tensor([s["prompt_seed"] for s in samples], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "unreadable": [p for s in samples for p in s["unreadable"].split("\n") if p],
        "skips": dict(skips),
    }
