"""Where a promptable segmenter's box-prompt mIoU falls short, by mask area.

For every mask of an SA-1B-format set (a folder or tar shards, e.g. the held-out set of
``bench_finetune_scratch.py``), prompted with its exact box as ``esam eval zeroshot --prompt
box`` prompts it, the script scores four masks against the ground truth:

* ``chosen``: the model's output of highest predicted IoU (what the harness scores);
* ``best_of_3``: the best of the three multimask outputs (a perfect IoU head's choice);
* ``lowres_exact``: the ground truth itself passed through the model's low-resolution grid
  (area-averaged onto the grid of its logits, then resized as the predictor resizes logits):
  the ceiling of a model whose low-resolution masks were exactly right;
* ``box_fill``: the prompt box, filled (the harness's ``box_fill`` reference).

It prints and writes (``--json``) their mIoU overall and per area bin (pixels, ``--bins``), so
that a shortfall can be told apart: a poor IoU head (``chosen`` far below ``best_of_3``), a
grid too coarse for the masks (``lowres_exact`` low), or masks not learned yet (``best_of_3``
far below ``lowres_exact``). The ``chosen`` mIoU is the harness's box-prompt mIoU on the same
masks.

Usage::

    python benchmarks/bench_finetune_by_size.py --checkpoint RUN_DIR/model.pt \
        --data HELDOUT_DIR [--model efficientsam] [--bins 32,64,128,256,1024] [--json FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from esam import build_model
from esam.adapters.baselines import fill_boxes
from esam.data.sa1b import SA1BDataset
from esam.eval.metrics import mask_iou
from esam.finetune.losses import downsample_masks
from esam.predictor import EfficientSamPredictor
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now

#: The columns, in print order.
COLUMNS = ("chosen", "best_of_3", "lowres_exact", "box_fill")


def lowres_exact(masks: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Ground-truth masks as a perfect low-resolution prediction would show them.

    Args:
        masks: QxHxW bool.
        grid: (h, w) of the model's low-resolution logits.

    Returns:
        QxHxW bool: each mask area-averaged onto ``grid``, shifted to logits (covered fraction
        minus one half, so that more than half covered is inside), resized bicubically to HxW
        as :class:`~esam.predictor.EfficientSamPredictor` resizes logits, thresholded at 0.
    """
    soft = downsample_masks(masks, grid)  # Qxhxw in [0, 1]
    logits = F.interpolate((soft - 0.5)[:, None], tuple(masks.shape[-2:]), mode="bicubic")
    return (logits[:, 0] > 0).numpy()


def score_image(
    predictor: EfficientSamPredictor, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray
) -> list[dict[str, float]]:
    """The four IoUs of each mask of one image.

    Args:
        predictor: wraps the model being scored.
        image: HxWx3 uint8.
        masks: QxHxW bool ground truth.
        boxes: Qx4 (x0, y0, x1, y1) prompt boxes in pixels.

    Returns:
        Q dicts: ``area`` (pixels) and one IoU in percent per column of :data:`COLUMNS`
        (``esam.eval.metrics.mask_iou``, the harness's IoU).
    """
    h, w = image.shape[:2]
    predictor.set_image(image)
    with torch.no_grad():
        pred, _, low = predictor.predict_batch(boxes=boxes)  # sorted by predicted IoU
    exact = lowres_exact(torch.from_numpy(masks), tuple(low.shape[-2:]))
    outputs = mask_iou(pred, masks[:, None])  # QxM
    exact_iou = mask_iou(exact, masks)
    filled_iou = mask_iou(fill_boxes(boxes, h, w), masks)
    return [
        {
            "area": float(gt.sum()),
            "chosen": float(outputs[k, 0]),
            "best_of_3": float(outputs[k].max()),
            "lowres_exact": float(exact_iou[k]),
            "box_fill": float(filled_iou[k]),
        }
        for k, gt in enumerate(masks)
    ]


def score_dataset(
    predictor: EfficientSamPredictor, data: SA1BDataset, progress: bool = True
) -> list[dict[str, float]]:
    """:func:`score_image` over every image of ``data`` (boxes from each mask's ``bbox``)."""
    rows: list[dict[str, float]] = []
    for index in tqdm(range(len(data)), desc="images", disable=not progress):
        rec, image = data[index]
        masks = np.stack([data.decode_mask(a, rec.height, rec.width) for a in rec.annotations])
        xywh = np.array([a["bbox"] for a in rec.annotations], dtype=np.float64)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        rows.extend(score_image(predictor, image, masks, boxes))
    return rows


def summarise(rows: list[dict[str, float]], bins: list[float]) -> list[dict[str, Any]]:
    """mIoU (percent) of each column overall and per area bin ``[lo, hi)``; ``rows`` as
    :func:`score_image` returns them."""
    area = np.array([r["area"] for r in rows])
    edges = [0.0, *bins, float("inf")]
    groups = [("all", np.ones(len(rows), dtype=bool))]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        label = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}"
        groups.append((label, (area >= lo) & (area < hi)))
    table = []
    for label, sel in groups:
        entry: dict[str, Any] = {"area_px": label, "n_masks": int(sel.sum())}
        for col in COLUMNS:
            values = [r[col] for r, s in zip(rows, sel, strict=True) if s]
            entry[col] = float(np.mean(values)) if values else None
        table.append(entry)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model file (e.g. RUN_DIR/model.pt)")
    p.add_argument("--model", default="efficientsam", help="registered model name")
    p.add_argument("--data", required=True, help="SA-1B-format folder, tar shards or glob")
    p.add_argument("--bins", default="32,64,128,256,1024", help="area bin edges, pixels")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = utc_now()
    bins = sorted(float(b) for b in args.bins.split(",") if b.strip())
    model = build_model(args.model, args.checkpoint).eval()
    data = SA1BDataset(args.data)
    rows = score_dataset(EfficientSamPredictor(model), data, progress=not args.no_progress)
    table = summarise(rows, bins)
    print(f"{'area px':>10} {'masks':>6} " + " ".join(f"{c:>12}" for c in COLUMNS))
    for entry in table:
        cells = " ".join(
            f"{entry[c]:12.1f}" if entry[c] is not None else f"{'-':>12}" for c in COLUMNS
        )
        print(f"{entry['area_px']:>10} {entry['n_masks']:>6} {cells}")
    if args.json:
        write_json_atomic(
            args.json,
            {
                "task": "finetune_error_by_size",
                "model": args.model,
                "checkpoint": str(args.checkpoint),
                "data": str(args.data),
                "skips": dict(data.skips),
                "bins": bins,
                "table": table,
                "meta": run_metadata(start_time=start),
            },
        )


if __name__ == "__main__":
    main()
