"""COCO and LVIS instance annotations: loading, image resolution, validation and skip counting.

Annotations are read through ``pycocotools`` (COCO) or the ``lvis`` package (LVIS v0.5 and v1).
LVIS images live in COCO's ``train2017`` / ``val2017`` folders; their path is resolved from the
image's ``coco_url`` (``<images>/<split>/<file>`` or ``<images>/<file>``).

SA-1B data (``dataset="sa1b"``: tar shards or folders of jpg + json pairs) loads into the same
:class:`AnnotationSet` through :mod:`esam.data.sa1b`, so the benchmark evaluates it exactly as
it evaluates COCO.

Nothing is dropped silently: every instance or image left out is counted under one of the
reasons of :mod:`esam.data.skips`, and the counts go into the results file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esam.data.masks import decode_mask, segmentation_problem
from esam.data.skips import (
    SKIP_AREA,
    SKIP_BAD_POLYGON,
    SKIP_BAD_RLE,
    SKIP_BOX_OUTSIDE,
    SKIP_CROWD,
    SKIP_EMPTY_MASK,
    SKIP_IMAGE_MISSING,
    SKIP_IN_SKIPPED_IMAGE,
    SKIP_UNKNOWN_IMAGE,
    SKIP_ZERO_BOX,
)
from esam.errors import InputError
from esam.utils.deps import require

log = logging.getLogger(__name__)

DATASETS = ("coco", "lvis")


@dataclass(frozen=True)
class InstanceSpec:
    """One ground-truth instance as given by the annotation file.

    Attributes:
        ann_id: annotation id.
        category_id: category id.
        area: the annotation's ``area`` field (pixels), used for the size buckets.
        iscrowd: 1 for crowd regions, 0 otherwise (LVIS has no crowd regions).
        bbox: (x, y, w, h) in image pixels, or None when the annotation has none.
        segmentation: polygons (list of [x0, y0, x1, y1, ...]) or RLE dict, as stored.
    """

    ann_id: int
    category_id: int
    area: float
    iscrowd: int
    bbox: tuple[float, float, float, float] | None
    segmentation: Any = field(repr=False)


@dataclass(frozen=True)
class ImageSpec:
    """One image and its kept instances.

    Attributes:
        image_id: image id.
        height, width: size declared by the annotation file.
        path: resolved image file, or None when no candidate exists.
        tried: candidate paths looked at, for error messages.
        instances: the instances that passed the annotation checks, by annotation id.
    """

    image_id: int
    height: int
    width: int
    path: str | None
    tried: tuple[str, ...]
    instances: tuple[InstanceSpec, ...] = ()


@dataclass
class AnnotationSet:
    """A loaded annotation file restricted to the evaluated images.

    Attributes:
        dataset: ``coco``, ``lvis`` or ``sa1b``.
        annotations: the annotation file (for ``sa1b``: the folders or shards, as given).
        images_dir: the image folder (likewise).
        images: the evaluated images, sorted by id (after ``limit_images``).
        skips: instance and image skip counts so far, by reason.
        api: the ``pycocotools.coco.COCO`` or ``lvis.LVIS`` object (for ``sa1b``: the
            :class:`esam.data.sa1b.SA1BDataset`).
        n_images_in_file: images listed in the annotation file.
        info: facts about the file (LVIS version, category count).
    """

    dataset: str
    annotations: Path
    images_dir: Path
    images: list[ImageSpec]
    skips: Counter[str]
    api: Any
    n_images_in_file: int
    info: dict[str, Any]


def load_api(dataset: str, annotations: str | Path) -> Any:
    """Load an annotation file with pycocotools (``coco``) or the lvis package (``lvis``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown dataset, or the file is not a valid annotation json.
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file not found: {path}. COCO instances_val2017.json is published at "
            "cocodataset.org (2017 Train/Val annotations); LVIS lvis_v1_val.json at lvisdataset.org."
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a valid JSON file: {e}") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InputError(
            f"{path}: not an instance annotation file (needs 'images' and 'annotations')"
        )
    check_dataset_kind(data, dataset, path)
    check_ids(data, path)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            if dataset == "coco":
                api: Any = require("pycocotools.coco").COCO()
                api.dataset = data
                api.createIndex()
            else:
                api = _lvis_from_dict(require("lvis").LVIS, data)
    except (KeyError, TypeError, AssertionError) as e:
        raise InputError(f"{path}: cannot be indexed as a {dataset} annotation file: {e!r}") from e
    for line in buf.getvalue().splitlines():
        log.debug("%s", line)
    return api


#: Keys only LVIS files have: on every category, and on every image.
LVIS_CATEGORY_KEYS = ("frequency", "synset")
LVIS_IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")
#: Category counts of the released LVIS versions.
LVIS_VERSIONS = {1230: "v0.5", 1203: "v1"}


def looks_like_lvis(data: dict[str, Any]) -> bool:
    """Whether an annotation dict is in LVIS format: every category has LVIS's ``frequency`` or
    ``synset`` and every image its ``neg_category_ids`` / ``not_exhaustive_category_ids``."""
    cats = data.get("categories") or []
    images = data.get("images") or []
    if not cats or not images:
        return False
    return all(
        isinstance(c, dict) and any(k in c for k in LVIS_CATEGORY_KEYS) for c in cats
    ) and all(isinstance(im, dict) and all(k in im for k in LVIS_IMAGE_KEYS) for im in images)


def check_dataset_kind(data: dict[str, Any], dataset: str, path: Path) -> None:
    """Raise ValueError when an annotation file's format contradicts ``--dataset``.

    LVIS is evaluated under its federated rules (negative and not-exhaustive categories), COCO
    under COCO's; a file evaluated under the other's rules gives numbers labelled with the wrong
    dataset, so the format must match the flag.
    """
    is_lvis = looks_like_lvis(data)
    n_cats = len(data.get("categories") or [])
    if dataset == "lvis" and not is_lvis:
        raise InputError(
            f"{path}: --dataset lvis, but this is not an LVIS annotation file ({n_cats} categories "
            f"without LVIS's {'/'.join(LVIS_CATEGORY_KEYS)}, or images without "
            f"{' and '.join(LVIS_IMAGE_KEYS)}); for a COCO-format file pass --dataset coco"
        )
    if dataset == "coco" and is_lvis:
        version = LVIS_VERSIONS.get(n_cats, "of unknown version")
        raise InputError(
            f"{path}: --dataset coco, but this is an LVIS annotation file ({n_cats} categories, "
            f"LVIS {version}); pass --dataset lvis so it is evaluated under LVIS's rules"
        )


def check_ids(data: dict[str, Any], path: Path) -> None:
    """Refuse image and annotation ids that are not integers or not unique.

    pycocotools and lvis index both by id in dicts: a repeated id would silently replace an
    earlier image or mask, and ids of another type would match nothing.

    Raises:
        InputError: naming the file, the list, the position and the id.
    """

    def ids(key: str, field: str) -> Iterator[tuple[int, Any]]:
        entries = data.get(key)
        if not isinstance(entries, list):
            raise InputError(f"{path}: '{key}' must be a list, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or field not in entry:
                raise InputError(f"{path}: {key}[{i}] has no {field!r} field")
            value = entry[field]
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(
                    f"{path}: {key}[{i}] has {field} {value!r} ({type(value).__name__}); "
                    "COCO-format ids are integers"
                )
            yield i, value

    for key in ("images", "annotations"):
        first: dict[int, int] = {}
        for i, value in ids(key, "id"):
            if value in first:
                raise InputError(
                    f"{path}: {key}[{i}] repeats id {value} of {key}[{first[value]}]; ids must "
                    "be unique (the indexes keep only one entry per id)"
                )
            first[value] = i
    for _ in ids("annotations", "image_id"):
        pass


def _lvis_from_dict(lvis_cls: Any, data: dict[str, Any]) -> Any:
    """An ``lvis.LVIS`` built from an already parsed dict (its constructor wants a path)."""
    api = lvis_cls.__new__(lvis_cls)
    api.logger = logging.getLogger("lvis")
    api.dataset = data
    api._create_index()
    return api


def image_entries(api: Any) -> dict[int, dict[str, Any]]:
    """Image id -> image entry of the annotation file (COCO and LVIS objects alike)."""
    return dict(api.imgs)


def annotations_by_image(api: Any, dataset: str) -> dict[int, list[dict[str, Any]]]:
    """Image id -> its annotations, each list sorted by annotation id."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for ann in api.dataset["annotations"]:
        grouped.setdefault(int(ann["image_id"]), []).append(ann)
    for anns in grouped.values():
        anns.sort(key=lambda a: int(a["id"]))
    return grouped


def resolve_image_path(
    images_dir: Path, entry: dict[str, Any], dataset: str
) -> tuple[str | None, tuple[str, ...]]:
    """Find an image file.

    COCO entries are looked up by ``file_name``; LVIS entries by ``coco_url`` (the COCO split
    folder and file name), since LVIS images are COCO images. Both fall back to the other key
    and to the bare file name in ``images_dir``.

    Returns:
        (path or None, candidate paths tried in order).
    """
    candidates: list[Path] = []
    by_url: list[Path] = []
    url = entry.get("coco_url")
    if isinstance(url, str) and url:
        parts = url.rstrip("/").split("/")
        by_url = (
            [images_dir / parts[-2] / parts[-1], images_dir / parts[-1]] if len(parts) >= 2 else []
        )
    by_name: list[Path] = []
    name = entry.get("file_name")
    if isinstance(name, str) and name:
        by_name = [images_dir / name, images_dir / Path(name).name]
        stem = Path(name).name
        if stem.startswith("COCO_") and stem.count("_") >= 2:  # COCO_val2014_000000123.jpg
            bare = stem.split("_", 2)[2]
            by_name += [images_dir / bare]
    candidates = by_name + by_url if dataset == "coco" else by_url + by_name
    seen: list[str] = []
    for c in candidates:
        s = str(c)
        if s in seen:
            continue
        seen.append(s)
        if c.is_file():
            return s, tuple(seen)
    return None, tuple(seen)


def box_problem(bbox: Any, height: int | None = None, width: int | None = None) -> str | None:
    """Skip reason for a COCO (x, y, w, h) box, or None when it is usable.

    A box needs finite values and positive width and height (else :data:`SKIP_ZERO_BOX`); with
    the image size given, it must also keep a positive area once clipped to the image
    [0, width] x [0, height], as the harness clips every box prompt (else
    :data:`SKIP_BOX_OUTSIDE`).
    """
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return SKIP_ZERO_BOX
    try:
        vals = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return SKIP_ZERO_BOX
    if not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
        return SKIP_ZERO_BOX
    if height is not None and width is not None:
        x, y, w, h = vals
        if min(x + w, width) <= max(x, 0.0) or min(y + h, height) <= max(y, 0.0):
            return SKIP_BOX_OUTSIDE
    return None


def instance_problem(
    ann: dict[str, Any],
    height: int,
    width: int,
    *,
    include_crowd: bool,
    need_bbox: bool,
    min_area: float = 1.0,
) -> str | None:
    """Why an annotation is left out of the benchmark, or None when it is kept."""
    if int(ann.get("iscrowd", 0) or 0) and not include_crowd:
        return SKIP_CROWD
    if "area" not in ann:
        raise InputError(f"annotation id {ann.get('id')} has no 'area' field")
    area = ann["area"]
    if isinstance(area, bool) or not isinstance(area, int | float) or not math.isfinite(area):
        raise InputError(f"annotation id {ann.get('id')} has area {area!r}: must be a number")
    if area < min_area:
        return SKIP_AREA
    problem = segmentation_problem(ann.get("segmentation"), height, width)
    if problem is not None:
        return problem
    if need_bbox:
        return box_problem(ann.get("bbox"), height, width)
    return None


def _kept_instances(
    anns: Sequence[dict[str, Any]],
    height: int,
    width: int,
    skips: Counter[str],
    rules: dict[str, Any],
    sa1b: bool = False,
) -> tuple[InstanceSpec, ...]:
    """The annotations of one ``height`` x ``width`` image that pass :func:`instance_problem`
    under ``rules`` (its keyword arguments); each one left out is counted in ``skips`` under
    its problem. ``sa1b``: every mask is category 1 and not crowd (SA-1B has neither field).
    """
    kept: list[InstanceSpec] = []
    for ann in anns:
        problem = instance_problem(ann, height, width, **rules)
        if problem is not None:
            skips[problem] += 1
            continue
        bbox: Any = ann.get("bbox")
        box: tuple[float, float, float, float] | None = None
        if box_problem(bbox) is None:
            x, y, bw, bh = (float(v) for v in bbox)
            box = (x, y, bw, bh)
        kept.append(
            InstanceSpec(
                ann_id=int(ann["id"]),
                category_id=1 if sa1b else int(ann.get("category_id", -1)),
                area=float(ann["area"]),
                iscrowd=0 if sa1b else int(ann.get("iscrowd", 0) or 0),
                bbox=box,
                segmentation=ann["segmentation"],
            )
        )
    return tuple(kept)


def load_annotation_set(
    dataset: str,
    annotations: str | Path,
    images_dir: str | Path,
    *,
    include_crowd: bool = False,
    limit_images: int | None = None,
    need_bbox: bool = True,
    min_area: float = 1.0,
) -> AnnotationSet:
    """Load annotations and keep the instances the benchmark evaluates.

    Args:
        dataset: ``coco``, ``lvis`` or ``sa1b``.
        annotations: instance annotation json (for ``sa1b``: SA-1B folders or tar shards, see
            :func:`esam.data.sa1b.resolve_sources`).
        images_dir: image folder (for LVIS the folder holding COCO's split folders, or the
            split folder itself; for ``sa1b`` the same as ``annotations``).
        include_crowd: keep ``iscrowd`` regions (left out by default).
        limit_images: evaluate only the first N images by id.
        need_bbox: the annotation's ``bbox`` must have positive width and height (box prompts
            from annotation boxes).
        min_area: instances with a smaller ``area`` field are left out.

    Returns:
        The images (sorted by id) with their kept instances and the skip counts.
    """
    if limit_images is not None and limit_images < 1:
        raise InputError(f"limit_images must be >= 1, got {limit_images}")
    rules = {"include_crowd": include_crowd, "need_bbox": need_bbox, "min_area": min_area}
    if dataset == "sa1b":
        return _load_sa1b_set(annotations, images_dir, rules, limit_images)
    images_path = Path(images_dir)
    if not images_path.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_path}")
    api = load_api(dataset, annotations)
    entries = image_entries(api)
    grouped = annotations_by_image(api, dataset)
    skips: Counter[str] = Counter()
    unknown = sum(len(v) for k, v in grouped.items() if k not in entries)
    if unknown:
        log.warning("%d annotations refer to images missing from the file's 'images'", unknown)
        skips[SKIP_UNKNOWN_IMAGE] += unknown
    ids = sorted(entries)
    if limit_images is not None:
        ids = ids[:limit_images]
    images: list[ImageSpec] = []
    for image_id in ids:
        entry = entries[image_id]
        try:
            h, w = int(entry["height"]), int(entry["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"{annotations}: image id {image_id} lacks a valid height/width"
            ) from e
        kept = _kept_instances(grouped.get(image_id, []), h, w, skips, rules)
        path, tried = resolve_image_path(images_path, entry, dataset)
        images.append(ImageSpec(image_id, h, w, path, tried, kept))
    info: dict[str, Any] = {"n_categories": len(api.cats)}
    if dataset == "lvis":
        info["lvis_version"] = LVIS_VERSIONS.get(len(api.cats), "unknown")
    file_info = api.dataset.get("info")
    if isinstance(file_info, dict) and "version" in file_info:
        info["file_version"] = str(file_info["version"])
    return AnnotationSet(
        dataset=dataset,
        annotations=Path(annotations),
        images_dir=images_path,
        images=images,
        skips=skips,
        api=api,
        n_images_in_file=len(entries),
        info=info,
    )


def _load_sa1b_set(
    annotations: str | Path,
    images: str | Path,
    rules: dict[str, Any],
    limit_images: int | None,
) -> AnnotationSet:
    """:func:`load_annotation_set` for SA-1B data (:mod:`esam.data.sa1b`): tar shards or
    folders of jpg + json pairs, named by ``annotations`` and again by ``images``. ``rules``:
    the keyword arguments of :func:`instance_problem`.

    Every mask is an instance of category 1 (SA-1B has no categories, no crowd regions); image
    paths are the jpg files, or ``<shard>.tar::<member>`` for tar members. A json without its jpg
    is an image whose file is missing (:func:`handle_missing_images`). ``info`` holds the
    SHA-256 of the jsons (each preceded by its length as 8 bytes, in the reader's order), the
    same for the tar and folder forms of the same data.
    """
    import hashlib

    from esam.data.sa1b import SA1BDataset, resolve_sources

    # each RLE's runs are checked once, by instance_problem, and only for the images evaluated
    reader = SA1BDataset(str(annotations), require_image=False, check_rle=False)
    if resolve_sources(str(images)) != reader.sources:
        raise InputError(
            "--dataset sa1b reads each image beside its json: pass the same folders or tar "
            f"shards as --images and --annotations (got {images} and {annotations})"
        )
    digest = hashlib.sha256()
    skips = Counter(reader.skips)  # unpaired and ignored files
    index_of: dict[int, int] = {}
    # every record is evaluated without a limit: parsed once, here; with one, only the ids
    records: dict[int, Any] = {}
    for i in range(len(reader)):  # every json: the digest, the image ids
        raw = reader.json_bytes(i)
        digest.update(len(raw).to_bytes(8, "little") + raw)
        rec = reader.parse_record(i, raw) if limit_images is None else None
        image_id = rec.image_id if rec is not None else reader.parse_image_id(i, raw)
        if image_id in index_of:
            first = reader.locations(index_of[image_id])
            raise InputError(
                f"image id {image_id} occurs twice: {first[0] or first[1]} and "
                f"{reader.locations(i)[0] or reader.locations(i)[1]}"
            )
        index_of[image_id] = i
        if rec is not None:
            records[image_id] = rec
    ids = sorted(index_of)[:limit_images]
    specs = []
    for image_id in ids:  # only the images evaluated: their records, instances and counts
        rec = records.get(image_id) or reader.record(index_of[image_id])
        counts = Counter(rec.skips)
        kept = _kept_instances(rec.annotations, rec.height, rec.width, counts, rules, sa1b=True)
        skips.update(counts)
        tried = rec.image_location or rec.json_location.removesuffix(".json") + ".jpg"
        specs.append(
            ImageSpec(rec.image_id, rec.height, rec.width, rec.image_location, (tried,), kept)
        )
    return AnnotationSet(
        dataset="sa1b",
        annotations=Path(annotations),
        images_dir=Path(images),
        images=specs,
        skips=skips,
        api=reader,
        n_images_in_file=len(reader),
        info={
            "format": "SA-1B (sa_<id>.jpg + sa_<id>.json pairs)",
            "n_sources": len(reader.sources),
            "annotations_sha256": digest.hexdigest(),
        },
    )


def decoded_instances(
    spec: ImageSpec, skips: Counter[str]
) -> Iterator[tuple[InstanceSpec, np.ndarray]]:
    """Each kept instance of ``spec`` with its decoded HxW bool mask.

    Annotations are checked on loading, so this is the last line of defence: an instance whose
    segmentation does not decode, or whose mask is empty, is counted in ``skips`` under its
    reason (and logged) instead of raising, which a DataLoader worker must never do.
    """
    for inst in spec.instances:
        try:
            mask = decode_mask(inst.segmentation, spec.height, spec.width)
        except (ValueError, TypeError, OverflowError) as e:
            reason = SKIP_BAD_RLE if isinstance(inst.segmentation, dict) else SKIP_BAD_POLYGON
            log.warning("annotation id %d: segmentation not decodable (%s)", inst.ann_id, e)
            skips[reason] += 1
            continue
        if not mask.any():
            skips[SKIP_EMPTY_MASK] += 1
            continue
        yield inst, mask


def handle_missing_images(
    images: list[ImageSpec], skips: Counter[str], skip_bad_images: bool
) -> list[ImageSpec]:
    """Drop images whose file was not found, counting them, or raise.

    Raises:
        FileNotFoundError: when ``skip_bad_images`` is False and an image is missing; the
            message names the image id and the paths tried.
    """
    kept = []
    for spec in images:
        if spec.path is not None:
            kept.append(spec)
            continue
        if not skip_bad_images:
            raise FileNotFoundError(
                f"image id {spec.image_id} not found; tried {', '.join(spec.tried) or '(no file name)'}. "
                "Pass the COCO image folder with --images, or --skip-bad-images to count and skip it."
            )
        log.warning(
            "image id %d not found (tried %s): skipped", spec.image_id, ", ".join(spec.tried)
        )
        skips[SKIP_IMAGE_MISSING] += 1
        skips[SKIP_IN_SKIPPED_IMAGE] += len(spec.instances)
    return kept
