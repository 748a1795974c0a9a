"""Zero-shot instance segmentation from ground-truth prompts: box and click mIoU on COCO / LVIS.

For every kept ground-truth instance a prompt is derived from the annotation (a box, or one or
three clicks), the model predicts masks, one mask is chosen, and its IoU with the ground-truth
mask is recorded. The run reports mIoU over all instances and per COCO size bucket, with every
per-instance row saved beside the aggregate (the protocol of the EfficientSAM paper's Tables 4
and 5, with every switch explicit).

Speed: images are decoded (and masks and prompts prepared) in DataLoader workers, the encoder
runs once per image, and all prompts of an image go through the decoder in one call (one call
per click round for iterative clicks). Under ``torchrun`` the images are sharded across
processes and the rows merged on rank 0.

SA-1B-format data (``dataset="sa1b"``) loads into the same annotation set as COCO (one
instance per mask, category 1) and runs through the same code.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from esam.adapters import Prediction, Prompts, SegmentationAdapter, build_adapter
from esam.data.coco import (
    AnnotationSet,
    ImageSpec,
    handle_missing_images,
    load_annotation_set,
)
from esam.data.gt_prompts import PreparePrompts, ZeroShotPayload
from esam.data.image_tasks import ImageTaskDataset, LoadedImage, make_loader
from esam.data.prompts import PAD_LABEL, n_clicks, next_error_click
from esam.data.skips import (
    SKIP_IMAGE_MISSING,
    SKIP_IN_SKIPPED_IMAGE,
    n_images_skipped,
)
from esam.errors import InputError
from esam.eval.config import MIN_AREA, ZeroShotConfig
from esam.eval.metrics import (
    aggregate_miou,
    choose_masks,
    mask_iou,
    round_mask_choice,
    size_bucket,
)
from esam.eval.outputs import assemble_and_write, dataset_block, model_block
from esam.runtime import distributed as dist_utils
from esam.utils.meta import utc_now

log = logging.getLogger(__name__)


#: Instances decoded together in one ``predict`` call (their masks are Qx3xHxW at full size).
INSTANCES_PER_CALL = 64


@dataclass
class EvalRun:
    """What a run returns on rank 0: the results object and the per-instance rows."""

    results: dict[str, Any]
    rows: list[dict[str, Any]]


def _prompts(payload_gt: np.ndarray, adapter: SegmentationAdapter, **kw: Any) -> Prompts:
    return Prompts(gt_masks=payload_gt if adapter.needs_ground_truth else None, **kw)


@dataclass
class _Round:
    """One decoder call for all Q instances and the mask chosen for each."""

    pred: Prediction
    index: np.ndarray  # Q chosen output indices
    chosen: np.ndarray  # QxHxW bool
    iou: np.ndarray  # Q IoU in percent


def _decode(
    adapter: SegmentationAdapter, prompts: Prompts, gt: np.ndarray, cfg: ZeroShotConfig
) -> _Round:
    clicks = None if prompts.points is None else int(prompts.points.shape[1])
    choice = round_mask_choice(str(cfg.mask_choice), clicks)
    pred = adapter.predict(prompts, multimask_output=choice != "single")
    idx = choose_masks(pred.masks, pred.scores, gt, choice)
    chosen = pred.masks[np.arange(len(idx)), idx]
    return _Round(pred, idx, chosen, mask_iou(chosen, gt))


def _iterate_clicks(
    adapter: SegmentationAdapter,
    first: _Round,
    points: np.ndarray,
    labels: np.ndarray,
    gt: np.ndarray,
    cfg: ZeroShotConfig,
) -> tuple[_Round, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Add clicks on the error regions of each previous prediction, one round at a time.

    Returns:
        (last round, QxNx2 points, QxN labels, IoU of every round).
    """
    rnd, history = first, [first.iou]
    for _ in range(1, n_clicks(cfg.prompt)):
        q = len(labels)
        nxt = np.zeros((q, 1, 2), dtype=np.float32)
        nxt_lab = np.zeros((q, 1), dtype=np.int64)
        for k in range(q):
            given = points[k][labels[k] != PAD_LABEL]
            nxt[k, 0], nxt_lab[k, 0] = next_error_click(
                gt[k], rnd.chosen[k], given, str(cfg.no_error_click)
            )
        points = np.concatenate([points, nxt], axis=1)
        labels = np.concatenate([labels, nxt_lab], axis=1)
        rnd = _decode(adapter, _prompts(gt, adapter, points=points, labels=labels), gt, cfg)
        history.append(rnd.iou)
    return rnd, points, labels, history


def evaluate_image(
    adapter: SegmentationAdapter,
    image: np.ndarray,
    spec: ImageSpec,
    payload: ZeroShotPayload,
    cfg: ZeroShotConfig,
) -> list[dict[str, Any]]:
    """Run the model on one image's prompts and return one row per instance.

    The encoder runs once; each prompt round (one, or one per click for ``iterative``) is a
    single ``predict`` call with the prompts of up to :data:`INSTANCES_PER_CALL` instances
    (an image with more is decoded in chunks of that many: the outputs are Qx3xHxW, which on
    an SA-1B image with hundreds of masks would otherwise take gigabytes).
    """
    if not payload.instances:
        return []
    adapter.set_image(image)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(payload.instances), INSTANCES_PER_CALL):
        part = _payload_slice(payload, slice(start, start + INSTANCES_PER_CALL))
        rows.extend(_evaluate_instances(adapter, spec, part, cfg))
    return rows


def _payload_slice(payload: ZeroShotPayload, part: slice) -> ZeroShotPayload:
    """The instances ``part`` of a payload (with their masks and prompts)."""

    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[part]

    return ZeroShotPayload(
        payload.instances[part],
        payload.gt_masks[part],
        cut(payload.boxes),
        cut(payload.points),
        cut(payload.labels),
        payload.skips,
    )


def _evaluate_instances(
    adapter: SegmentationAdapter, spec: ImageSpec, payload: ZeroShotPayload, cfg: ZeroShotConfig
) -> list[dict[str, Any]]:
    """:func:`evaluate_image` for instances of the image already set in ``adapter``."""
    gt = payload.gt_masks
    history: list[np.ndarray] = []
    if payload.boxes is not None:
        prompts = _prompts(gt, adapter, boxes=payload.boxes)
        rnd = _decode(adapter, prompts, gt, cfg)
    else:
        assert payload.points is not None and payload.labels is not None
        prompts = _prompts(gt, adapter, points=payload.points, labels=payload.labels)
        rnd = _decode(adapter, prompts, gt, cfg)
        if cfg.click == "iterative":
            rnd, points, labels, history = _iterate_clicks(
                adapter, rnd, payload.points, payload.labels, gt, cfg
            )
            prompts = Prompts(points=points, labels=labels)
    rows: list[dict[str, Any]] = []
    for k, inst in enumerate(payload.instances):
        row: dict[str, Any] = {
            "image_id": spec.image_id,
            "ann_id": inst.ann_id,
            "category_id": inst.category_id,
            "area": inst.area,
            "size": size_bucket(inst.area),  # the COCO bucket; see config.size_buckets
            "iscrowd": inst.iscrowd,
            "prompt": cfg.prompt,
        }
        if prompts.boxes is not None:
            row["box"] = [float(v) for v in prompts.boxes[k]]
        if prompts.points is not None and prompts.labels is not None:
            row["points"] = [[float(x), float(y)] for x, y in prompts.points[k]]
            row["labels"] = [int(v) for v in prompts.labels[k]]
        row["iou"] = float(rnd.iou[k])
        if history:
            row["iou_per_click"] = [float(v[k]) for v in history]
        row["mask_index"] = int(rnd.index[k])
        row["n_masks"] = int(rnd.pred.masks.shape[1])
        row["pred_score"] = float(rnd.pred.scores[k, rnd.index[k]])
        rows.append(row)
    return rows


def _fail_or_skip(item: LoadedImage, cfg: ZeroShotConfig, skips: Counter[str]) -> None:
    assert item.error is not None
    reason, message = item.error
    if not cfg.skip_bad_images:
        cls = FileNotFoundError if reason == SKIP_IMAGE_MISSING else InputError
        raise cls(f"{message} (pass --skip-bad-images to count and skip such images)")
    log.warning("%s: skipped", message)
    skips[reason] += 1
    skips[SKIP_IN_SKIPPED_IMAGE] += len(item.spec.instances)


@dataclass
class _LocalRun:
    """What one process did: its setup (needed by rank 0 to assemble) and its share of rows."""

    aset: AnnotationSet
    images: list[ImageSpec]
    base_skips: Counter[str]
    adapter: SegmentationAdapter
    part: tuple[list[dict[str, Any]], dict[str, int], float]


def _run_local(
    cfg: ZeroShotConfig,
    adapter: SegmentationAdapter | None,
    ctx: dist_utils.DistContext,
    device: str,
) -> _LocalRun:
    """Load the annotations, build the model and evaluate this process's share of the images."""
    dist_utils.check_device(device)
    aset = load_annotation_set(
        cfg.dataset,
        cfg.annotations,
        cfg.images,
        include_crowd=bool(cfg.include_crowd),
        limit_images=cfg.limit_images,
        need_bbox=cfg.prompt == "box" and cfg.box_source == "bbox",
        min_area=MIN_AREA,
    )
    base_skips: Counter[str] = Counter(aset.skips)
    # an image left with no instance has nothing to evaluate: it is neither read nor needed
    with_instances = [spec for spec in aset.images if spec.instances]
    images = handle_missing_images(with_instances, base_skips, cfg.skip_bad_images)
    if adapter is None:
        adapter = build_adapter(cfg.model, cfg.checkpoint, device)
    if cfg.prompt == "box" and not adapter.supports_boxes:
        raise InputError(f"model {adapter.name!r} does not accept box prompts")
    if cfg.prompt != "box" and not adapter.supports_points:
        raise InputError(f"model {adapter.name!r} does not accept point prompts (use --prompt box)")
    mine = dist_utils.shard(images, ctx)
    prepare = PreparePrompts(
        cfg.prompt, str(cfg.click), str(cfg.box_source), cfg.seed, bool(cfg.clip_boxes)
    )
    loader = make_loader(ImageTaskDataset(mine, prepare), int(cfg.workers or 0))
    rows: list[dict[str, Any]] = []
    run_skips: Counter[str] = Counter()
    t0 = time.perf_counter()
    bar = tqdm(loader, total=len(mine), unit="img", disable=not (cfg.progress and ctx.is_main))
    for item in bar:
        if item.error is not None:
            _fail_or_skip(item, cfg, run_skips)
            continue
        assert item.image is not None
        run_skips.update(item.payload.skips)
        rows.extend(evaluate_image(adapter, item.image, item.spec, item.payload, cfg))
        bar.set_postfix(instances=len(rows))
    elapsed = time.perf_counter() - t0
    return _LocalRun(aset, images, base_skips, adapter, (rows, dict(run_skips), elapsed))


def run_zeroshot(cfg: ZeroShotConfig, adapter: SegmentationAdapter | None = None) -> EvalRun | None:
    """Run the zero-shot benchmark.

    Under torchrun every process evaluates its share of the images; if one fails, all stop
    with its message (:func:`esam.runtime.distributed.run_collectively`).

    Args:
        cfg: the run's settings.
        adapter: a ready adapter (tests, benchmarks); built from ``cfg.model`` when None.

    Returns:
        The results and rows on rank 0 (results written to ``cfg.output`` when set); None on
        other ranks.
    """
    start_time = utc_now()
    ctx = dist_utils.init_distributed(cfg.device)
    try:
        device = dist_utils.device_for(cfg.device, ctx)
        local = dist_utils.run_collectively(lambda: _run_local(cfg, adapter, ctx, device), ctx)
        gathered = dist_utils.gather_to_main(local.part, ctx)
        if gathered is None:
            return None
        all_rows = sorted(
            (r for part in gathered for r in part[0]), key=lambda r: (r["image_id"], r["ann_id"])
        )
        skips = Counter(local.base_skips)
        for part in gathered:
            skips.update(part[1])
        wall = max(part[2] for part in gathered)
        metrics = aggregate_miou(all_rows, str(cfg.size_buckets))
        n_done = len({r["image_id"] for r in all_rows})
        aset = local.aset
        n_skipped = n_images_skipped(skips)
        results = assemble_and_write(
            task="zeroshot",
            output=cfg.output,
            model=model_block(local.adapter, cfg.model if cfg.model else None),
            dataset={
                **_dataset_block(aset, len(aset.images) - n_skipped, n_skipped),
                "n_images_with_instances": n_done,
            },
            config=cfg.results_config(ctx.world_size),
            metrics=metrics,
            skips=skips,
            rows=all_rows,
            device=device,
            start_time=start_time,
            extra={"timing": _timing(wall, len(all_rows), len(local.images))},
        )
        _log_summary(metrics, skips)
        return EvalRun(results, all_rows)
    finally:
        dist_utils.finish(ctx)


def _dataset_block(aset: AnnotationSet, n_images: int, n_skipped: int) -> dict[str, Any]:
    """The results' ``dataset`` block; SA-1B data has no single annotation file to hash, so its
    ``annotations_sha256`` is the digest of its jsons computed on loading."""
    if aset.dataset != "sa1b":
        return dataset_block(aset, n_images, n_skipped)
    info = dict(aset.info)
    return {
        "name": aset.dataset,
        "annotations": str(aset.annotations),
        "annotations_sha256": info.pop("annotations_sha256"),
        "images": str(aset.images_dir),
        "n_images": n_images,
        "n_images_skipped": n_skipped,
        "n_images_selected": len(aset.images),
        "n_images_in_file": aset.n_images_in_file,
        **info,
    }


def _timing(wall_s: float, n_instances: int, n_images: int) -> dict[str, Any]:
    return {
        "loop_wall_s": round(wall_s, 4),
        "instances_per_s": round(n_instances / wall_s, 4) if wall_s > 0 else None,
        "images_per_s": round(n_images / wall_s, 4) if wall_s > 0 else None,
        "note": "wall time of the image loop of the slowest process, model loading excluded",
    }


def _log_summary(metrics: dict[str, Any], skips: Counter[str]) -> None:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    log.info(
        "mIoU %s (small %s, medium %s, large %s) over %d instances",
        fmt(metrics["miou"]),
        fmt(metrics["miou_small"]),
        fmt(metrics["miou_medium"]),
        fmt(metrics["miou_large"]),
        metrics["n_instances"],
    )
    if skips:
        log.info("skipped: %s", ", ".join(f"{k}={v}" for k, v in sorted(skips.items())))
