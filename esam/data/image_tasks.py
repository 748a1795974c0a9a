"""Decoding images (and per-image ground truth) in DataLoader workers.

One item is one image: the worker reads the file and runs a task-specific ``prepare`` step
(decoding masks, sampling prompts) so the main process only runs the model. A file that cannot
be used comes back as an item carrying the error, and the runner decides whether that is fatal
or a counted skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from esam.data.coco import ImageSpec
from esam.data.images import ImageReadError, read_image
from esam.data.skips import SKIP_IMAGE_MISSING


@dataclass
class LoadedImage:
    """A decoded image with its task payload.

    Attributes:
        spec: the image's annotation record.
        image: HxWx3 uint8 RGB, or None when ``error`` is set.
        error: (skip reason, message) when the image could not be used.
        payload: what ``prepare`` returned (None on error).
    """

    spec: ImageSpec
    image: np.ndarray | None
    error: tuple[str, str] | None = None
    payload: Any = None


class ImageTaskDataset(Dataset[LoadedImage]):
    """Images in a fixed order, each read and prepared on access.

    Args:
        specs: images to load.
        prepare: ``prepare(spec, image) -> payload`` run in the worker (must be picklable), or
            None for no payload.
    """

    def __init__(
        self, specs: list[ImageSpec], prepare: Callable[[ImageSpec, np.ndarray], Any] | None = None
    ) -> None:
        self.specs = specs
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> LoadedImage:
        spec = self.specs[index]
        if spec.path is None:
            return LoadedImage(
                spec, None, (SKIP_IMAGE_MISSING, f"image id {spec.image_id}: file not found")
            )
        try:
            image = read_image(spec.path, (spec.height, spec.width))
        except ImageReadError as e:
            return LoadedImage(spec, None, (e.reason, str(e)))
        payload = self.prepare(spec, image) if self.prepare is not None else None
        return LoadedImage(spec, image, None, payload)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: On the CPU, decoding workers are used only from this many cores on: below it they take
#: cores from torch's own threads, which run the model (measured on 2 cores: 6.1x the naive
#: loop with 0 workers, 4.2-4.5x with 2).
CPU_WORKERS_MIN_CORES = 8
#: The most decoding workers chosen by default.
MAX_DEFAULT_WORKERS = 4


def default_workers(device: str, cores: int | None = None) -> int:
    """Decoding workers chosen when a run does not say.

    * CUDA: the GPU runs the model and the main process only feeds it, so image decoding goes
      to ``min(4, cores - 1)`` workers.
    * CPU: torch already uses every core for the model, so workers would compete with it; none
      below :data:`CPU_WORKERS_MIN_CORES` cores, then one per 8 cores (at most 4).
    """
    n = available_cores() if cores is None else cores
    if device.startswith("cuda"):
        return max(0, min(MAX_DEFAULT_WORKERS, n - 1))
    if n < CPU_WORKERS_MIN_CORES:
        return 0
    return min(MAX_DEFAULT_WORKERS, n // CPU_WORKERS_MIN_CORES)


def _single(batch: list[LoadedImage]) -> LoadedImage:
    return batch[0]


def make_loader(dataset: ImageTaskDataset, workers: int) -> DataLoader[LoadedImage]:
    """A DataLoader yielding one :class:`LoadedImage` at a time, in order."""
    return DataLoader(
        dataset,
        batch_size=1,
        shuffle=False,
        num_workers=max(0, int(workers)),
        collate_fn=_single,
        prefetch_factor=2 if workers > 0 else None,
    )
