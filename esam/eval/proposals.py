"""Zero-shot object proposals: class-agnostic mask average recall (the SAM paper's protocol).

A proposal source returns, for each image, masks ranked by a score (for a segment-everything
model: its predicted IoU). The highest ``max_proposals`` of each image are evaluated against
every ground-truth instance, whatever its category, with pycocotools' ``COCOeval`` on masks and
``useCats = 0``: AR@100 and AR@1000 (recall averaged over IoU 0.50:0.05:0.95), each also per
COCO size bucket (by the annotation's ``area``: small < 32^2 <= medium < 96^2 <= large), and for
LVIS per category frequency (rare / common / frequent: the recall of the instances of that group,
proposals matched against that group's instances only). Crowd regions are ignored as COCOeval
ignores them. Values are in percent. The results name this protocol ``sam`` (the Segment Anything
paper's zero-shot object proposals, :data:`esam.eval.config.PROPOSALS_PROTOCOL`), so the report
puts them in one table with the numbers published under it.

Sources: ``oracle`` (the ground-truth masks themselves: AR@1000 = 100 by construction, a check of
the wiring) and ``box_grid`` (filled boxes on a fixed multi-scale grid, a weightless floor) are
built in; a model's source is supplied by the caller (``esam eval proposals`` builds one from
:mod:`esam.everything`), so this package does not depend on the generator.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from esam.data.coco import AnnotationSet, ImageSpec, handle_missing_images
from esam.data.image_tasks import ImageTaskDataset, LoadedImage, make_loader
from esam.data.masks import decode_mask, drop_short_polygon_parts, encode_mask
from esam.data.skips import (
    SKIP_IMAGE_MISSING,
    SKIP_IN_SKIPPED_IMAGE,
    n_images_skipped,
)
from esam.errors import InputError
from esam.eval.config import ProposalsConfig
from esam.eval.instseg import load_mask_ground_truth
from esam.eval.outputs import assemble_and_write
from esam.eval.zeroshot import EvalRun, _dataset_block
from esam.runtime import distributed as dist_utils
from esam.utils.deps import require
from esam.utils.meta import utc_now

log = logging.getLogger(__name__)

#: Proposal budgets reported (COCOeval's maxDets).
BUDGETS = (100, 1000)
SIZES = ("small", "medium", "large")
#: LVIS category frequency codes and their names in the metrics.
FREQUENCIES = {"r": "rare", "c": "common", "f": "frequent"}


class ProposalSource(Protocol):
    """What the harness needs from a proposal generator (structural: no base class to import).

    Attributes:
        name: recorded in the results.
        needs_ground_truth: the source reads the ground-truth masks (reference baselines only).
        checkpoint: weights file, or None.
        weights_note: where the weights come from (e.g. ``standin``), or None.
    """

    name: str
    needs_ground_truth: bool
    checkpoint: str | None
    weights_note: str | None

    def propose(
        self, image: np.ndarray, gt_masks: np.ndarray | None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Proposals of one HxWx3 uint8 image: compressed COCO RLEs (``counts`` as str) and
        their K scores (higher is better). ``gt_masks`` (GxHxW bool) only if
        ``needs_ground_truth``."""
        ...

    def describe(self) -> dict[str, Any]:
        """Processing facts recorded in the results' ``model`` block."""
        ...


#: ``factory(cfg, device) -> ProposalSource`` for model names that are not built in.
SourceFactory = Callable[[ProposalsConfig, str], ProposalSource]


class OracleProposals:
    """The ground-truth masks as proposals (score 1): AR = 100 when no image has more
    instances than the budget."""

    name = "oracle"
    needs_ground_truth = True
    checkpoint: str | None = None
    weights_note: str | None = "none (ground truth)"

    def propose(
        self, image: np.ndarray, gt_masks: np.ndarray | None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        if gt_masks is None:
            raise InputError("the oracle needs the ground-truth masks")
        return [encode_mask(m) for m in gt_masks], np.ones(len(gt_masks), np.float32)

    def describe(self) -> dict[str, Any]:
        return {"kind": "oracle", "proposals": "ground-truth masks (non-crowd), score 1"}


class BoxGridProposals:
    """Filled boxes on a fixed grid, coarse levels first: a floor that needs no model.

    Level ``l`` (0 = whole image) has boxes of ``1 / 2**l`` of the image's width and height, at
    aspect ratios 1, 2 and 1/2 (area kept), placed every half box; scores fall with the level
    and within a level in raster order, so the ranking is fixed.

    Args:
        levels: number of levels.
    """

    name = "box_grid"
    needs_ground_truth = False
    checkpoint: str | None = None
    weights_note: str | None = "none (fixed boxes)"

    def __init__(self, levels: int = 5) -> None:
        self.levels = levels

    def boxes(self, height: int, width: int) -> np.ndarray:
        """Kx4 integer boxes (x0, y0, x1, y1), best first, clipped to the image."""
        out: list[tuple[int, int, int, int]] = []
        for level in range(self.levels):
            for aspect in (1.0, 2.0, 0.5):
                bw = min(width, max(1, round(width / 2**level * aspect**0.5)))
                bh = min(height, max(1, round(height / 2**level / aspect**0.5)))
                sx, sy = max(1, bw // 2), max(1, bh // 2)
                for y0 in range(0, max(1, height - bh + 1), sy):
                    for x0 in range(0, max(1, width - bw + 1), sx):
                        out.append((x0, y0, x0 + bw, y0 + bh))
        return np.asarray(list(dict.fromkeys(out)), dtype=np.int64).reshape(-1, 4)

    def propose(
        self, image: np.ndarray, gt_masks: np.ndarray | None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        h, w = image.shape[:2]
        boxes = self.boxes(h, w)
        rles = []
        mask = np.zeros((h, w), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            mask[:] = False
            mask[y0:y1, x0:x1] = True
            rles.append(encode_mask(mask))
        scores = 1.0 - np.arange(len(boxes), dtype=np.float64) / (len(boxes) + 1)
        return rles, scores

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "box_grid",
            "proposals": f"{self.levels} levels of boxes of 1/2**level of the image side, "
            "aspect ratios 1, 2, 1/2, stride half a box; coarse levels ranked first",
        }


BUILTIN_SOURCES: dict[str, Callable[[], ProposalSource]] = {
    "oracle": OracleProposals,
    "box_grid": BoxGridProposals,
}


# ------------------------------------------------------------------------------ metrics


def ground_truth(images: list[ImageSpec], frequency: dict[int, str] | None = None) -> dict:
    """A class-agnostic COCO ground-truth dataset (category 1) of the images' instances.

    Args:
        images: the evaluated images with their kept instances.
        frequency: LVIS category id -> ``r``/``c``/``f``; recorded as ``frequency`` on each
            annotation when given.
    """
    anns = []
    for spec in images:
        for inst in spec.instances:
            ann: dict[str, Any] = {
                "id": inst.ann_id,
                "image_id": spec.image_id,
                "category_id": 1,
                "segmentation": inst.segmentation,
                "area": inst.area,
                "iscrowd": inst.iscrowd,
                "bbox": list(inst.bbox) if inst.bbox is not None else [0.0, 0.0, 0.0, 0.0],
            }
            if frequency is not None:
                ann["frequency"] = frequency.get(inst.category_id)
            anns.append(ann)
    drop_short_polygon_parts(anns)  # COCOeval reads a first part of 4 numbers as a box
    return {
        "images": [{"id": s.image_id, "height": s.height, "width": s.width} for s in images],
        "annotations": anns,
        "categories": [{"id": 1, "name": "object"}],
    }


def _average_recall(recall: np.ndarray) -> float | None:
    """Mean over IoU thresholds of a T-vector, in percent; None where no instance counts."""
    valid = recall[recall > -1]
    return None if valid.size == 0 else 100.0 * float(valid.mean())


def average_recall(
    gt: dict[str, Any], results: list[dict[str, Any]], img_ids: list[int]
) -> dict[str, float | None]:
    """AR of ranked mask proposals at each budget of :data:`BUDGETS`, overall and by size.

    Args:
        gt: a :func:`ground_truth` dataset.
        results: ``{"image_id", "category_id": 1, "segmentation": RLE, "score"}`` entries.
        img_ids: evaluated images (those without proposals count with recall 0).

    Returns:
        ``ar_100``, ``ar_1000``, ``ar_small_100`` ... ``ar_large_1000``, in percent (None where
        no ground-truth instance falls in the bucket).
    """
    coco_mod = require("pycocotools.coco")
    cocoeval = require("pycocotools.cocoeval")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gt_api = coco_mod.COCO()
        gt_api.dataset = gt
        gt_api.createIndex()
        if results:
            dt_api = gt_api.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results])
        else:  # loadRes rejects an empty list; no proposal means recall 0
            dt_api = coco_mod.COCO()
            dt_api.dataset = {**gt, "annotations": []}
            dt_api.createIndex()
        ev = cocoeval.COCOeval(gt_api, dt_api, "segm")
        ev.params.useCats = 0
        ev.params.imgIds = sorted(img_ids)
        ev.params.maxDets = list(BUDGETS)
        ev.evaluate()
        ev.accumulate()
    recall = ev.eval["recall"]  # T x K(=1) x A x M
    areas = list(ev.params.areaRngLbl)
    out: dict[str, float | None] = {}
    for m, budget in enumerate(BUDGETS):
        out[f"ar_{budget}"] = _average_recall(recall[:, 0, areas.index("all"), m])
    for m, budget in enumerate(BUDGETS):
        for size in SIZES:
            out[f"ar_{size}_{budget}"] = _average_recall(recall[:, 0, areas.index(size), m])
    return out


def proposal_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]], img_ids: list[int], lvis: bool
) -> dict[str, Any]:
    """:func:`average_recall`, plus for LVIS the AR of each frequency group (``ar_rare_1000``
    ...), each group's instances evaluated alone against all proposals."""
    metrics: dict[str, Any] = dict(average_recall(gt, results, img_ids))
    if lvis:
        for code, label in FREQUENCIES.items():
            subset = {
                **gt,
                "annotations": [a for a in gt["annotations"] if a.get("frequency") == code],
            }
            group = average_recall(subset, results, img_ids)
            for budget in BUDGETS:
                metrics[f"ar_{label}_{budget}"] = group[f"ar_{budget}"]
    return metrics


# ------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class PrepareGroundTruth:
    """Worker-side step: decode the non-crowd ground-truth masks for sources that read them."""

    needed: bool

    def __call__(self, spec: ImageSpec, image: np.ndarray) -> np.ndarray | None:
        if not self.needed:
            return None
        masks = [
            decode_mask(i.segmentation, spec.height, spec.width)
            for i in spec.instances
            if not i.iscrowd
        ]
        return np.stack(masks) if masks else np.zeros((0, spec.height, spec.width), bool)


def image_proposals(
    source: ProposalSource, item: LoadedImage, max_proposals: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One image's ranked proposals as COCO results, and its row."""
    assert item.image is not None
    spec = item.spec
    t0 = time.perf_counter()
    rles, scores = source.propose(item.image, item.payload)
    seconds = time.perf_counter() - t0
    scores = np.asarray(scores, dtype=np.float64)
    if len(rles) != len(scores):
        raise RuntimeError(f"{source.name}: {len(rles)} masks but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")[:max_proposals]
    for k in order:
        if list(rles[k]["size"]) != [spec.height, spec.width]:
            raise RuntimeError(
                f"{source.name}: proposal of size {rles[k]['size']} for image id "
                f"{spec.image_id} of size {[spec.height, spec.width]}"
            )
    results = [
        {
            "image_id": spec.image_id,
            "category_id": 1,
            "segmentation": rles[k],
            "score": float(scores[k]),
        }
        for k in order
    ]
    row = {
        "image_id": spec.image_id,
        "n_gt": sum(1 for i in spec.instances if not i.iscrowd),
        "n_proposals": len(rles),
        "n_kept": len(results),
        "seconds": round(seconds, 4),
    }
    return results, row


@dataclass
class _LocalRun:
    aset: AnnotationSet
    images: list[ImageSpec]
    base_skips: Counter[str]
    source: ProposalSource
    part: tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int], list[int], float]


def _build_source(
    cfg: ProposalsConfig, device: str, factory: SourceFactory | None
) -> ProposalSource:
    if cfg.model in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[cfg.model]()
    if factory is None:
        raise InputError(
            f"unknown proposal source {cfg.model!r}: built in are {sorted(BUILTIN_SOURCES)}; "
            "models are run through `esam eval proposals`"
        )
    return factory(cfg, device)


def _run_local(
    cfg: ProposalsConfig,
    source: ProposalSource | None,
    factory: SourceFactory | None,
    ctx: dist_utils.DistContext,
    device: str,
) -> _LocalRun:
    dist_utils.check_device(device)
    aset = load_mask_ground_truth(
        cfg.dataset, cfg.annotations, cfg.images, cfg.limit_images, "mask recall"
    )
    base_skips: Counter[str] = Counter(aset.skips)
    images = handle_missing_images(aset.images, base_skips, cfg.skip_bad_images)
    if source is None:
        source = _build_source(cfg, device, factory)
    mine = dist_utils.shard(images, ctx)
    loader = make_loader(
        ImageTaskDataset(mine, PrepareGroundTruth(source.needs_ground_truth)),
        int(cfg.workers or 0),
    )
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    run_skips: Counter[str] = Counter()
    dropped: list[int] = []
    t0 = time.perf_counter()
    bar = tqdm(loader, total=len(mine), unit="img", disable=not (cfg.progress and ctx.is_main))
    for item in bar:
        if item.error is not None:
            reason, message = item.error
            if not cfg.skip_bad_images:
                cls = FileNotFoundError if reason == SKIP_IMAGE_MISSING else InputError
                raise cls(f"{message} (pass --skip-bad-images to count and skip such images)")
            log.warning("%s: skipped", message)
            run_skips[reason] += 1
            run_skips[SKIP_IN_SKIPPED_IMAGE] += len(item.spec.instances)
            dropped.append(item.spec.image_id)
            continue
        res, row = image_proposals(source, item, cfg.max_proposals)
        results.extend(res)
        rows.append(row)
    elapsed = time.perf_counter() - t0
    part = (results, rows, dict(run_skips), dropped, elapsed)
    return _LocalRun(aset, images, base_skips, source, part)


def _model_block(source: ProposalSource, name: str) -> dict[str, Any]:
    from esam.utils.io import sha256_file

    ckpt = source.checkpoint
    return {
        "name": name,
        "checkpoint": ckpt,
        "checkpoint_sha256": sha256_file(ckpt) if ckpt else None,
        "weights": source.weights_note,
        "adapter": f"{type(source).__module__}.{type(source).__qualname__}",
        "processing": source.describe(),
    }


def _results_config(cfg: ProposalsConfig, source: ProposalSource, world_size: int) -> dict:
    """The run's ``config`` block; ``generator`` is null for the weightless references, which
    do not read the generator settings (so they never split their rows)."""
    config = cfg.results_config(world_size)
    if source.name in BUILTIN_SOURCES:
        config["generator"] = None
    return config


def run_proposals(
    cfg: ProposalsConfig,
    source: ProposalSource | None = None,
    factory: SourceFactory | None = None,
) -> EvalRun | None:
    """Run the object-proposal benchmark.

    Args:
        cfg: the run's settings.
        source: a ready proposal source (tests); else built from ``cfg.model``.
        factory: builds the source of a model name that is not built in (``oracle``,
            ``box_grid``), e.g. the automatic mask generator over an EfficientSAM model.

    Returns:
        The results and per-image rows on rank 0 (written to ``cfg.output`` when set); None on
        other ranks.
    """
    start_time = utc_now()
    ctx = dist_utils.init_distributed(cfg.device)
    try:
        device = dist_utils.device_for(cfg.device, ctx)
        local = dist_utils.run_collectively(
            lambda: _run_local(cfg, source, factory, ctx, device), ctx
        )
        gathered = dist_utils.gather_to_main(local.part, ctx)
        if gathered is None:
            return None
        skips = Counter(local.base_skips)
        results: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        dropped: set[int] = set()
        for part in gathered:
            results.extend(part[0])
            rows.extend(part[1])
            skips.update(part[2])
            dropped.update(part[3])
        rows.sort(key=lambda r: r["image_id"])
        aset = local.aset
        evaluated = [s for s in local.images if s.image_id not in dropped]
        frequency = None
        if cfg.dataset == "lvis":
            frequency = {int(c): str(v.get("frequency")) for c, v in aset.api.cats.items()}
        gt = ground_truth(evaluated, frequency)
        metrics: dict[str, Any] = proposal_metrics(
            gt, results, [s.image_id for s in evaluated], lvis=cfg.dataset == "lvis"
        )
        metrics["n_images"] = len(evaluated)
        metrics["n_instances"] = sum(1 for a in gt["annotations"] if not a["iscrowd"])
        metrics["n_proposals"] = len(results)
        wall = max(part[4] for part in gathered)
        n_skipped = n_images_skipped(skips)
        out = assemble_and_write(
            task="proposals",
            output=cfg.output,
            model=_model_block(local.source, cfg.model),
            dataset=_dataset_block(aset, len(aset.images) - n_skipped, n_skipped),
            config=_results_config(cfg, local.source, ctx.world_size),
            metrics=metrics,
            skips=skips,
            rows=rows,
            device=device,
            start_time=start_time,
            extra={
                "timing": {
                    "loop_wall_s": round(wall, 4),
                    "images_per_s": round(len(rows) / wall, 4) if wall > 0 else None,
                    "note": "wall time of the image loop of the slowest process, evaluation excluded",
                }
            },
        )
        log.info(
            "mask AR@100 %s, AR@1000 %s (%d images, %d instances, %d proposals)",
            *(
                ("n/a" if metrics[k] is None else f"{metrics[k]:.2f}")
                for k in ("ar_100", "ar_1000")
            ),
            metrics["n_images"],
            metrics["n_instances"],
            metrics["n_proposals"],
        )
        return EvalRun(out, rows)
    finally:
        dist_utils.finish(ctx)
