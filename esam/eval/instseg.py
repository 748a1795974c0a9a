"""Instance segmentation from detector boxes: a mask per detection, scored by COCOeval / LVISEval.

A detections file in COCO results format (``image_id``, ``category_id``, ``bbox`` as
(x, y, w, h), ``score``; e.g. ViTDet-H boxes) gives the prompts. The model predicts one mask
per box (keeping the box's category and score), and the masks are evaluated as segmentation
results: COCO with ``COCOeval`` (segm, maxDets 1/10/100), LVIS with ``LVISEval`` (at most 300
detections per image). AP values are reported in percent.

Detections that cannot be used are counted by reason (unknown image or category, zero-size
box, box outside the image, ...), never dropped silently. Boxes are clipped to the image
[0, W] x [0, H] before they reach any model unless the protocol preset says otherwise
(``efficientvit-sam`` passes raw boxes): EfficientSAM's prompt encoder replaces a negative
coordinate by -1, so a detector box starting at x = -0.3 would be encoded at x = -1 rather than
at the image edge.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from esam.adapters import Prompts, SegmentationAdapter, build_adapter
from esam.data.coco import AnnotationSet, ImageSpec, load_annotation_set
from esam.data.image_tasks import ImageTaskDataset, make_loader
from esam.data.masks import drop_short_polygon_parts, encode_mask
from esam.data.prompts import box_from_bbox, clip_boxes, empty_boxes
from esam.data.skips import (
    SKIP_BAD_POLYGON,
    SKIP_BAD_RLE,
    SKIP_IMAGE_MISSING,
    SKIP_NO_SEGMENTATION,
    SKIP_SHORT_POLYGON,
)
from esam.errors import InputError
from esam.eval.config import MAX_DETS, InstSegConfig
from esam.eval.metrics import choose_masks
from esam.eval.outputs import assemble_and_write, dataset_block, model_block
from esam.eval.zeroshot import EvalRun
from esam.runtime import distributed as dist_utils
from esam.utils.deps import require
from esam.utils.meta import utc_now

log = logging.getLogger(__name__)


SKIP_DET_UNKNOWN_IMAGE = "detection_unknown_image"
SKIP_DET_UNKNOWN_CATEGORY = "detection_unknown_category"
SKIP_DET_ZERO_BOX = "detection_zero_size_box"
SKIP_DET_OUTSIDE = "detection_box_outside_image"
SKIP_DET_NOT_EVALUATED = "detection_image_not_evaluated"
SKIP_DET_OVER_MAX = "detection_over_max_dets"
SKIP_DET_SKIPPED_IMAGE = "detection_in_skipped_image"

_METRIC_KEYS_COCO = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
_LVIS_KEYS = {
    "AP": "ap",
    "AP50": "ap50",
    "AP75": "ap75",
    "APs": "ap_small",
    "APm": "ap_medium",
    "APl": "ap_large",
    "APr": "ap_rare",
    "APc": "ap_common",
    "APf": "ap_frequent",
}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_detections(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a detections file in COCO results format.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a JSON list of detections; the message names the first bad entry.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"detections file not found: {p}. Pass a COCO results json (e.g. ViTDet-H boxes) with --detections"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a valid JSON file: {e}") from e
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a JSON list of detections, got {type(data).__name__}")
    for i, det in enumerate(data):
        if not isinstance(det, dict):
            raise InputError(f"{p}: detection #{i} is not an object")
        for key in ("image_id", "category_id"):
            if not isinstance(det.get(key), int) or isinstance(det.get(key), bool):
                raise InputError(
                    f"{p}: detection #{i} has no integer {key!r} (got {det.get(key)!r})"
                )
        bbox = det.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise InputError(
                f"{p}: detection #{i} needs 'bbox' = [x, y, w, h] numbers (got {bbox!r})"
            )
        if not _is_number(det.get("score")):
            raise InputError(
                f"{p}: detection #{i} needs a finite number 'score' (got {det.get('score')!r})"
            )
    return data


@dataclass(frozen=True)
class IndexedDetection:
    """A detection and its position in the detections file.

    Attributes:
        index: position in the detections file.
        image_id, category_id, score: as in the file.
        bbox: the detector's (x, y, w, h), as in the file.
        box: the prompt box (x0, y0, x1, y1), clipped to the image unless the protocol says not.
    """

    index: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float
    box: tuple[float, float, float, float]


def select_detections(
    detections: list[dict[str, Any]],
    known_images: set[int],
    evaluated_images: set[int],
    categories: set[int],
    dataset: str,
    max_dets: int,
    image_sizes: dict[int, tuple[int, int]],
    clip: bool = True,
) -> tuple[dict[int, list[IndexedDetection]], Counter[str]]:
    """Group usable detections by image and count the others by reason.

    Each box is clipped to its image ([0, W] x [0, H], sizes from ``image_sizes`` as
    (height, width)); a box with no area left is counted as ``detection_box_outside_image``.
    With ``clip`` False the prompt is the detector's raw box (a box entirely outside its image
    is still counted and left out).
    For LVIS only the ``max_dets`` highest-scoring detections of each image are kept (the
    rule ``LVISResults`` applies); COCOeval applies its own per-category limit.

    Raises:
        ValueError: no detection refers to a known image and category.
    """
    skips: Counter[str] = Counter()
    by_image: dict[int, list[IndexedDetection]] = {}
    matched = clipped = 0
    for i, det in enumerate(detections):
        img, cat = int(det["image_id"]), int(det["category_id"])
        if img not in known_images:
            skips[SKIP_DET_UNKNOWN_IMAGE] += 1
            continue
        if cat not in categories:
            skips[SKIP_DET_UNKNOWN_CATEGORY] += 1
            continue
        matched += 1
        if img not in evaluated_images:
            skips[SKIP_DET_NOT_EVALUATED] += 1
            continue
        x, y, w, h = (float(v) for v in det["bbox"])
        if w <= 0 or h <= 0:
            skips[SKIP_DET_ZERO_BOX] += 1
            continue
        ih, iw = image_sizes[img]
        box = clip_boxes(box_from_bbox((x, y, w, h)), ih, iw)[0]
        if empty_boxes(box)[0]:
            skips[SKIP_DET_OUTSIDE] += 1
            continue
        raw = box_from_bbox((x, y, w, h))
        if (box != raw).any():
            clipped += 1
        x0, y0, x1, y1 = (float(v) for v in (box if clip else raw))
        by_image.setdefault(img, []).append(
            IndexedDetection(i, img, cat, (x, y, w, h), float(det["score"]), (x0, y0, x1, y1))
        )
    if detections and matched == 0:
        raise InputError(
            f"none of the {len(detections)} detections refers to an image and category of the "
            "annotation file: check that detections and annotations belong to the same dataset"
        )
    for reason in (SKIP_DET_UNKNOWN_IMAGE, SKIP_DET_UNKNOWN_CATEGORY, SKIP_DET_OUTSIDE):
        if skips[reason]:
            log.warning("%d detections skipped: %s", skips[reason], reason)
    if clipped:
        log.info(
            "%d detection boxes %s their image", clipped, "clipped to" if clip else "extend beyond"
        )
    if dataset == "lvis":
        for img, dets in by_image.items():
            if len(dets) > max_dets:
                ranked = sorted(dets, key=lambda d: d.score, reverse=True)
                skips[SKIP_DET_OVER_MAX] += len(dets) - max_dets
                by_image[img] = sorted(ranked[:max_dets], key=lambda d: d.index)
    return by_image, skips


@contextlib.contextmanager
def _numpy_float_alias_for_lvis() -> Iterator[None]:
    """Provide ``np.float`` for the duration of an LVIS evaluation only.

    lvis 0.5.3 (the latest release) calls ``np.float`` in ``LVISEval``, an alias NumPy removed
    in 1.24 (so it fails under NumPy 2). The alias is set to the builtin ``float`` it always was,
    only when missing, and removed again afterwards so nothing else sees a patched NumPy.
    """
    added = not hasattr(np, "float")
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def _coco_summary(ev: Any) -> list[float]:
    """AP, AP50, AP75 and AP small / medium / large of an accumulated ``COCOeval`` at its last
    ``maxDets`` (-1 where undefined), as ``COCOeval.summarize`` computes them, whose own
    headline AP reads the limit 100 whatever ``maxDets`` holds."""
    precision = ev.eval["precision"]  # T x R x K x A x M; -1 where there is no ground truth
    thresholds = np.asarray(ev.params.iouThrs)
    areas = list(ev.params.areaRngLbl)

    def mean(iou: float | None, area: str) -> float:
        p = precision[..., areas.index(area), -1]
        if iou is not None:
            p = p[np.flatnonzero(np.isclose(thresholds, iou))]
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    return [
        mean(None, "all"),
        mean(0.5, "all"),
        mean(0.75, "all"),
        mean(None, "small"),
        mean(None, "medium"),
        mean(None, "large"),
    ]


def _pct(v: float) -> float | None:
    return None if v is None or v < 0 or not math.isfinite(v) else 100.0 * float(v)


def evaluate_detections(
    gt_api: Any,
    results: list[dict[str, Any]],
    dataset: str,
    img_ids: list[int] | None = None,
    max_dets: int | None = None,
    iou_type: str = "segm",
) -> dict[str, Any]:
    """AP of detection results against the ground truth, in percent.

    Args:
        gt_api: ``pycocotools.coco.COCO`` (coco) or ``lvis.LVIS`` (lvis) ground truth.
        results: COCO results format; for ``segm`` each needs an RLE ``segmentation`` (its
            ``bbox`` is dropped so areas come from the masks, as detectron2 does).
        dataset: ``coco`` or ``lvis``.
        img_ids: evaluated image ids (all ground-truth images when None).
        max_dets: COCO's last maxDets, per image and category (100), or LVIS's per-image limit
            (300) when None.
        iou_type: ``segm`` or ``bbox``.

    Returns:
        ``ap``, ``ap50``, ``ap75``, ``ap_small``, ``ap_medium``, ``ap_large`` (LVIS adds
        ``ap_rare``, ``ap_common``, ``ap_frequent``); None where undefined.
    """
    max_dets = max_dets or MAX_DETS[dataset]
    keys = _METRIC_KEYS_COCO if dataset == "coco" else tuple(_LVIS_KEYS.values())
    if not results:
        log.warning("no detections to evaluate: every AP is undefined")
        return {k: None for k in keys}
    res = copy.deepcopy(results)
    if iou_type == "segm":
        for r in res:
            r.pop("bbox", None)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if dataset == "coco":
            cocoeval = require("pycocotools.cocoeval")
            dt = gt_api.loadRes(res)
            ev = cocoeval.COCOeval(gt_api, dt, iou_type)
            if img_ids is not None:
                ev.params.imgIds = sorted(img_ids)
            # COCO's limits are 1, 10, 100; the last one is what the summary reads
            ev.params.maxDets = sorted(d for d in {1, 10, max_dets} if d <= max_dets)
            ev.evaluate()
            ev.accumulate()
            if max_dets == 100:
                ev.summarize()  # its table assumes 100 (it would print -1 for other limits)
            out = {k: _pct(v) for k, v in zip(keys, _coco_summary(ev), strict=True)}
        else:
            lvis = require("lvis")
            with _numpy_float_alias_for_lvis():
                dt = lvis.LVISResults(gt_api, res, max_dets=max_dets)
                ev = lvis.LVISEval(gt_api, dt, iou_type)
                if img_ids is not None:
                    ev.params.img_ids = sorted(img_ids)
                ev.run()
                ev.print_results()
                got = ev.get_results()
            out = {v: _pct(float(got[k])) for k, v in _LVIS_KEYS.items()}
    for line in buf.getvalue().splitlines():
        log.info("%s", line)
    return out


def load_mask_ground_truth(
    dataset: str, annotations: str, images: str, limit_images: int | None, metric: str
) -> AnnotationSet:
    """Every ground-truth instance (crowd included, any size), for a metric over masks.

    Args:
        dataset: ``coco``, ``lvis`` or ``sa1b``.
        annotations, images: as :func:`esam.data.coco.load_annotation_set` takes them.
        limit_images: evaluate only the first N images (None: all).
        metric: named in the error (``segm AP``, ``mask recall``).

    Raises:
        InputError: an instance whose segmentation cannot be evaluated as a mask (missing,
            too short or bad polygon, bad RLE): counts by reason.
    """
    aset = load_annotation_set(
        dataset,
        annotations,
        images,
        include_crowd=True,
        limit_images=limit_images,
        need_bbox=False,
        min_area=-math.inf,
    )
    skips = aset.skips
    bad = {
        k: skips[k]
        for k in (SKIP_NO_SEGMENTATION, SKIP_SHORT_POLYGON, SKIP_BAD_POLYGON, SKIP_BAD_RLE)
        if skips[k]
    }
    if bad:
        raise InputError(
            f"{annotations}: ground-truth annotations that cannot be evaluated as masks: {bad}; "
            f"{metric} needs every ground-truth instance to have a valid segmentation"
        )
    api_anns = getattr(aset.api, "anns", None)
    if isinstance(api_anns, dict):  # the ground truth COCOeval / LVISEval rasterise
        dropped = drop_short_polygon_parts(api_anns.values())
        if dropped:
            log.info(
                "%d polygon part(s) of fewer than 3 points left out of the ground truth", dropped
            )
    return aset


def _image_rows(
    adapter: SegmentationAdapter,
    image: np.ndarray,
    dets: list[IndexedDetection],
    mask_choice: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Masks for one image's detections: (segmentation results, per-detection rows)."""
    adapter.set_image(image)
    boxes = np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4)
    pred = adapter.predict(Prompts(boxes=boxes), multimask_output=mask_choice != "single")
    idx = choose_masks(pred.masks, pred.scores, None, mask_choice)
    results, rows = [], []
    for k, det in enumerate(dets):
        mask = pred.masks[k, idx[k]]
        results.append(
            {
                "image_id": det.image_id,
                "category_id": det.category_id,
                "score": det.score,
                "segmentation": encode_mask(mask),
                "bbox": list(det.bbox),
            }
        )
        rows.append(
            {
                "image_id": det.image_id,
                "det_index": det.index,
                "category_id": det.category_id,
                "score": det.score,
                "box": [float(v) for v in boxes[k]],
                "mask_index": int(idx[k]),
                "n_masks": int(pred.masks.shape[1]),
                "pred_score": float(pred.scores[k, idx[k]]),
                "mask_area": int(mask.sum()),
            }
        )
    return results, rows


def _images_to_segment(
    images: list[ImageSpec],
    by_image: dict[int, list[IndexedDetection]],
    cfg: InstSegConfig,
    skips: Counter[str],
) -> tuple[list[ImageSpec], set[int]]:
    """Images with detections to load, and those dropped because their file is missing.

    Raises:
        FileNotFoundError: a needed image is missing and ``skip_bad_images`` is off.
    """
    todo: list[ImageSpec] = []
    dropped: set[int] = set()
    for spec in images:
        if spec.image_id not in by_image:
            continue
        if spec.path is None:
            if not cfg.skip_bad_images:
                raise FileNotFoundError(
                    f"image id {spec.image_id} not found; tried {', '.join(spec.tried)}. Pass the "
                    "image folder with --images, or --skip-bad-images to count and skip it."
                )
            log.warning("image id %d not found: skipped with its detections", spec.image_id)
            skips[SKIP_IMAGE_MISSING] += 1
            skips[SKIP_DET_SKIPPED_IMAGE] += len(by_image[spec.image_id])
            dropped.add(spec.image_id)
            continue
        todo.append(spec)
    return todo, dropped


@dataclass
class _LocalRun:
    """One process's setup (needed by rank 0 to assemble) and its share of masks and rows."""

    aset: AnnotationSet
    evaluated: set[int]
    todo: list[ImageSpec]
    dropped_images: set[int]
    skips: Counter[str]
    adapter: SegmentationAdapter
    part: tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int], list[int], float]


def _run_local(
    cfg: InstSegConfig,
    adapter: SegmentationAdapter | None,
    ctx: dist_utils.DistContext,
    device: str,
) -> _LocalRun:
    """Load annotations and detections, build the model, segment this process's images."""
    dist_utils.check_device(device)
    aset = load_mask_ground_truth(
        cfg.dataset, cfg.annotations, cfg.images, cfg.limit_images, "segm AP"
    )
    assert cfg.max_dets is not None
    detections = load_detections(cfg.detections)
    evaluated = {s.image_id for s in aset.images}
    by_image, skips = select_detections(
        detections,
        set(int(i) for i in aset.api.imgs),
        evaluated,
        set(int(c) for c in aset.api.cats),
        cfg.dataset,
        cfg.max_dets,
        {s.image_id: (s.height, s.width) for s in aset.images},
        clip=bool(cfg.clip_boxes),
    )
    todo, dropped_images = _images_to_segment(aset.images, by_image, cfg, skips)
    if adapter is None:
        adapter = build_adapter(cfg.model, cfg.checkpoint, device)
    if not adapter.supports_boxes or adapter.needs_ground_truth:
        raise InputError(f"model {adapter.name!r} cannot segment detector boxes")
    mine = dist_utils.shard(todo, ctx)
    loader = make_loader(ImageTaskDataset(mine), int(cfg.workers or 0))
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    run_skips: Counter[str] = Counter()
    run_dropped: list[int] = []
    t0 = time.perf_counter()
    bar = tqdm(loader, total=len(mine), unit="img", disable=not (cfg.progress and ctx.is_main))
    for item in bar:
        dets = by_image[item.spec.image_id]
        if item.error is not None:
            reason, message = item.error
            if not cfg.skip_bad_images:
                raise InputError(
                    f"{message} (pass --skip-bad-images to count and skip such images)"
                )
            log.warning("%s: skipped", message)
            run_skips[reason] += 1
            run_skips[SKIP_DET_SKIPPED_IMAGE] += len(dets)
            run_dropped.append(item.spec.image_id)
            continue
        assert item.image is not None
        res, rws = _image_rows(adapter, item.image, dets, str(cfg.mask_choice))
        results.extend(res)
        rows.extend(rws)
    elapsed = time.perf_counter() - t0
    part = (results, rows, dict(run_skips), run_dropped, elapsed)
    return _LocalRun(aset, evaluated, todo, dropped_images, skips, adapter, part)


def run_instseg(cfg: InstSegConfig, adapter: SegmentationAdapter | None = None) -> EvalRun | None:
    """Run instance segmentation from detector boxes.

    Under torchrun every process segments its share of the images; if one fails, all stop
    with its message (:func:`esam.runtime.distributed.run_collectively`).

    Returns:
        The results and per-detection rows on rank 0; None on other ranks.
    """
    start_time = utc_now()
    ctx = dist_utils.init_distributed(cfg.device)
    try:
        device = dist_utils.device_for(cfg.device, ctx)
        local = dist_utils.run_collectively(lambda: _run_local(cfg, adapter, ctx, device), ctx)
        gathered = dist_utils.gather_to_main(local.part, ctx)
        if gathered is None:
            return None
        aset, evaluated, todo = local.aset, local.evaluated, local.todo
        skips, dropped_images = local.skips, local.dropped_images
        all_rows: list[dict[str, Any]] = []
        all_results: list[dict[str, Any]] = []
        for part in gathered:
            all_results.extend(part[0])
            all_rows.extend(part[1])
            skips.update(part[2])
            dropped_images.update(part[3])
        keyed = sorted(
            zip(all_rows, all_results, strict=True),
            key=lambda p: (p[0]["image_id"], p[0]["det_index"]),
        )
        all_rows = [p[0] for p in keyed]
        all_results = [p[1] for p in keyed]
        img_ids = sorted(evaluated - dropped_images)
        metrics: dict[str, Any] = evaluate_detections(
            aset.api, all_results, cfg.dataset, img_ids=img_ids, max_dets=cfg.max_dets
        )
        metrics["n_detections"] = len(all_results)
        metrics["n_images"] = len(img_ids)
        wall = max(part[4] for part in gathered)
        out = assemble_and_write(
            task="instseg",
            output=cfg.output,
            model=model_block(local.adapter, cfg.model or None),
            dataset={
                **dataset_block(aset, len(img_ids), len(dropped_images)),
                "n_images_with_detections": len(todo),
            },
            config=cfg.results_config(ctx.world_size),
            metrics=metrics,
            skips=skips,
            rows=all_rows,
            device=device,
            start_time=start_time,
            extra={
                "timing": {
                    "loop_wall_s": round(wall, 4),
                    "detections_per_s": round(len(all_rows) / wall, 4) if wall > 0 else None,
                    "note": "wall time of the image loop of the slowest process, evaluation excluded",
                },
                "detections_sha256": _sha(cfg.detections),
            },
            extra_files={".segm.json": all_results} if cfg.save_segm else None,
        )
        log.info(
            "segm AP %s (AP50 %s, S %s, M %s, L %s) from %d detections",
            *(
                ("n/a" if metrics[k] is None else f"{metrics[k]:.2f}")
                for k in ("ap", "ap50", "ap_small", "ap_medium", "ap_large")
            ),
            len(all_results),
        )
        return EvalRun(out, all_rows)
    finally:
        dist_utils.finish(ctx)


def _sha(path: str) -> str:
    from esam.utils.io import sha256_file

    return sha256_file(path)
