"""COCO / LVIS instance annotations rewritten in SA-1B's layout (tar shards of jpg + json).

Every image of the annotation file becomes ``sa_<image_id>.jpg`` + ``sa_<image_id>.json``,
sorted by image id, ``shard_size`` images per shard (``sa_000000.tar``, ...), each shard written
atomically (a temporary name, then a rename). The annotations are read and checked by
:func:`esam.data.coco.load_annotation_set`, so the rules and skip reasons are the benchmark's:

* crowd regions (``iscrowd`` 1) are left out and counted (``crowd``): an SA-1B mask is one
  object, a crowd region many;
* annotations whose polygon or RLE cannot be decoded are left out and counted
  (``invalid_polygon``, ``polygon_lt_3_points``, ``invalid_rle``, ``no_segmentation``), and so
  are masks that decode empty (``empty_mask``);
* every kept instance's mask (polygons and RLE alike) is stored as compressed RLE, with
  ``bbox``, ``area`` and ``point_coords`` computed from the mask
  (:func:`esam.data.sa1b.mask_annotation`), so the stored mask decodes to exactly the
  annotation's mask; categories are not kept (SA-1B has none);
* images without a kept instance are written with an empty ``annotations`` list;
* a missing or unreadable image, or one of another size than the file says, stops the
  conversion (a named error) unless ``skip_bad_images``, which counts it under its reason and
  its instances under ``instance_in_skipped_image``.

JPEG files are copied byte for byte; images in other formats (PNG, ...) are re-encoded as JPEG
at quality 95 (counted in ``n_images_reencoded``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esam.data.coco import (
    ImageSpec,
    decoded_instances,
    handle_missing_images,
    load_annotation_set,
)
from esam.data.images import ImageReadError, decode_image
from esam.data.sa1b import check_output_folder, mask_annotation, record_json, shard_name
from esam.data.skips import (
    SKIP_IMAGE_MISSING,
    SKIP_IN_SKIPPED_IMAGE,
)
from esam.data.tarshards import write_tar_atomic
from esam.errors import InputError

log = logging.getLogger(__name__)

#: JPEG quality of re-encoded (non-JPEG) images.
REENCODE_QUALITY = 95


@dataclass
class ConvertSummary:
    """What :func:`coco_to_sa1b` wrote.

    Attributes:
        out: the output folder.
        shards: the tar shards written, in order.
        n_images: images written.
        n_images_reencoded: of those, images re-encoded as JPEG (their source was not a JPEG).
        n_masks: masks written.
        n_images_in_file: images listed by the annotation file.
        skips: instances and images left out, by reason.
    """

    out: Path
    shards: list[Path] = field(default_factory=list)
    n_images: int = 0
    n_images_reencoded: int = 0
    n_masks: int = 0
    n_images_in_file: int = 0
    skips: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "out": str(self.out),
            "shards": [p.name for p in self.shards],
            "n_images_in_file": self.n_images_in_file,
            "n_images": self.n_images,
            "n_images_reencoded": self.n_images_reencoded,
            "n_masks": self.n_masks,
            "skips": dict(sorted(self.skips.items())),
        }


def _jpeg_bytes(data: bytes, rgb: Any) -> tuple[bytes, bool]:
    """(JPEG bytes, re-encoded?): the file itself when it is a JPEG, else ``rgb`` encoded."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            return data, False
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=REENCODE_QUALITY)
    return buf.getvalue(), True


def _annotations(spec: ImageSpec, skips: Counter[str]) -> list[dict[str, Any]]:
    """The SA-1B annotations of an image's kept instances (undecodable or empty ones counted)."""
    return [mask_annotation(inst.ann_id, mask) for inst, mask in decoded_instances(spec, skips)]


def _members(
    specs: list[ImageSpec], summary: ConvertSummary, skip_bad_images: bool
) -> Iterator[tuple[str, bytes]]:
    """The (name, bytes) members of one shard, counting into ``summary`` as they are made."""
    for spec in specs:
        assert spec.path is not None  # missing files are handled before
        try:
            with open(spec.path, "rb") as f:
                data = f.read()
            rgb = decode_image(data, spec.path, (spec.height, spec.width))
        except (ImageReadError, OSError) as e:
            reason = e.reason if isinstance(e, ImageReadError) else SKIP_IMAGE_MISSING
            if not skip_bad_images:
                cls = FileNotFoundError if reason == SKIP_IMAGE_MISSING else InputError
                raise cls(f"{e} (pass --skip-bad-images to count and skip such images)") from e
            log.warning("%s: skipped", e)
            summary.skips[reason] += 1
            summary.skips[SKIP_IN_SKIPPED_IMAGE] += len(spec.instances)
            continue
        jpeg, reencoded = _jpeg_bytes(data, rgb)
        annotations = _annotations(spec, summary.skips)
        stem = f"sa_{spec.image_id}"
        yield f"{stem}.jpg", jpeg
        yield f"{stem}.json", record_json(spec.image_id, spec.height, spec.width, annotations)
        summary.n_images += 1
        summary.n_images_reencoded += int(reencoded)
        summary.n_masks += len(annotations)


def coco_to_sa1b(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dataset: str = "coco",
    shard_size: int = 1000,
    skip_bad_images: bool = False,
    progress: bool = False,
) -> ConvertSummary:
    """Rewrite a COCO or LVIS instance annotation file and its images as SA-1B tar shards.

    Args:
        annotations: the instance annotation json.
        images: the image folder (for LVIS: COCO's image root or split folder).
        out: a new or empty folder for the shards.
        dataset: ``coco`` or ``lvis`` (the file's format is checked against it).
        shard_size: images per shard.
        skip_bad_images: count and skip missing, unreadable or mis-sized images instead of
            stopping.
        progress: show a progress bar.

    Returns:
        The shards written and the counts (images, masks, skips by reason).

    Raises:
        FileNotFoundError: the annotation file, the image folder, or (unless
            ``skip_bad_images``) an image is missing.
        InputError: bad arguments, a non-empty ``out``, a malformed annotation file, or (unless
            ``skip_bad_images``) an unreadable image.
    """
    from tqdm import tqdm

    if dataset not in ("coco", "lvis"):
        raise InputError(f"unknown dataset {dataset!r}; choose coco or lvis")
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    folder = check_output_folder(out)
    aset = load_annotation_set(
        dataset,
        os.fspath(annotations),
        os.fspath(images),
        include_crowd=False,
        need_bbox=False,
        min_area=0.0,
    )
    summary = ConvertSummary(folder, n_images_in_file=aset.n_images_in_file)
    summary.skips.update(aset.skips)
    specs = handle_missing_images(aset.images, summary.skips, skip_bad_images)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(specs), unit="img", disable=not progress, desc="coco-to-sa1b")
    try:
        for k, start in enumerate(range(0, len(specs), shard_size)):
            part = specs[start : start + shard_size]
            before = summary.n_images
            shard = write_tar_atomic(
                folder / f"{shard_name(k)}.tar", _members(part, summary, skip_bad_images)
            )
            summary.shards.append(shard)
            bar.update(len(part))
            if summary.n_images == before:  # every image of the shard was skipped
                shard.unlink()
                summary.shards.pop()
    except BaseException as e:
        # the shards written so far would pass for a whole (smaller) dataset: remove them, so
        # the folder is as it was and the command can be rerun as it stands
        for shard in summary.shards:
            shard.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        e.add_note(
            f"coco-to-sa1b: stopped; the {len(summary.shards)} shard(s) written were removed"
        )
        raise
    finally:
        bar.close()
    return summary
