"""Instances per second of the zero-shot harness against a naive per-prompt loop.

The naive loop does what the official EfficientSAM ``forward(images, points, labels)`` does for
every prompt: encode the image, decode one box, upsample. The harness encodes each image once
and decodes all of its boxes in one call (plus DataLoader workers for decoding images and
masks). Both use the same model, weights and box prompts (from the annotations' ``bbox``), so
their per-instance IoUs must agree; the script prints the largest difference.

Default data: the project's own shipped sample (``esam/assets/sample``); default weights:
deterministic stand-in weights (speed does not depend on the values). Usage::

    python benchmarks/bench_zeroshot_harness.py [--model efficientsam_vitt] [--checkpoint PATH]
        [--annotations FILE --images DIR] [--limit-images N] [--workers 0,2] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import numpy as np
import torch

import esam
from esam.adapters.efficientsam import EfficientSamAdapter
from esam.data.coco import handle_missing_images, load_annotation_set
from esam.data.image_tasks import available_cores, default_workers
from esam.data.images import read_image
from esam.data.masks import decode_mask
from esam.data.prompts import box_from_bbox, clip_boxes
from esam.data.synthetic import sample_paths
from esam.eval.metrics import mask_iou
from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
from esam.modeling import set_reference_mode
from esam.standin import load_standin_weights
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

TARGET_RATIO = 5.0


@torch.inference_mode()
def naive_loop(
    model: Any, annotations: str, images: str, limit: int | None
) -> tuple[list[dict[str, Any]], float]:
    """Re-run the whole model (encoder included) for every box; returns rows and seconds."""
    aset = load_annotation_set("coco", annotations, images, limit_images=limit, need_bbox=True)
    specs = handle_missing_images(aset.images, aset.skips, skip_bad_images=False)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for spec in specs:
        assert spec.path is not None
        image = read_image(spec.path, (spec.height, spec.width))
        tensor = (
            torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        )  # the official input
        for inst in spec.instances:
            gt = decode_mask(inst.segmentation, spec.height, spec.width)
            if not gt.any():
                continue
            assert inst.bbox is not None
            # clipped to the image as the harness does (a negative corner would read as padding)
            box = clip_boxes(box_from_bbox(inst.bbox), spec.height, spec.width)[0]
            points = torch.from_numpy(box.reshape(1, 1, 2, 2))
            labels = torch.tensor([[[2, 3]]])
            logits, iou = model(tensor, points, labels)  # 1x1x3xHxW, 1x1x3
            best = int(torch.argmax(iou[0, 0]))
            mask = (logits[0, 0, best] > 0).numpy()
            rows.append(
                {"image_id": spec.image_id, "ann_id": inst.ann_id, "iou": float(mask_iou(mask, gt))}
            )
    return rows, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientsam_vitt")
    parser.add_argument("--checkpoint", help="weights (default: stand-in weights)")
    parser.add_argument("--annotations", help="COCO json (default: the shipped sample)")
    parser.add_argument("--images", help="image folder (default: the shipped sample)")
    parser.add_argument("--limit-images", type=int)
    parser.add_argument(
        "--workers", default="0,2", help="comma-separated worker counts to time (default: 0,2)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--official-naive",
        action="store_true",
        help="also time the naive loop with the official computation (esam's reference mode)",
    )
    parser.add_argument("--output", help="write a results JSON here")
    args = parser.parse_args(argv)

    ann_default, img_default = sample_paths()
    annotations = args.annotations or str(ann_default)
    images = args.images or str(img_default)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = utc_now()
    model = esam.build_model(args.model, checkpoint=args.checkpoint)
    if args.checkpoint is None:
        load_standin_weights(model)
    model.eval()
    adapter = EfficientSamAdapter(model, args.model, args.checkpoint)

    # warm-up (not timed): one encoder pass and one decoder call
    warm = np.zeros((64, 64, 3), dtype=np.uint8)
    adapter.set_image(warm)
    model(
        torch.zeros(1, 3, 64, 64),
        torch.tensor([[[[1.0, 1.0], [30.0, 30.0]]]]),
        torch.tensor([[[2, 3]]]),
    )

    worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    harness: dict[int, tuple[float, Any]] = {}
    for workers in worker_counts:
        cfg = ZeroShotConfig(
            model=args.model,
            dataset="coco",
            annotations=annotations,
            images=images,
            prompt="box",
            limit_images=args.limit_images,
            workers=workers,
            progress=False,
        )
        t0 = time.perf_counter()
        run = run_zeroshot(cfg, adapter=adapter)
        harness[workers] = (time.perf_counter() - t0, run)
    naive_rows, naive_s = naive_loop(model, annotations, images, args.limit_images)

    official_s = None
    if args.official_naive:
        ref_model = set_reference_mode(copy.deepcopy(model), True)
        _, official_s = naive_loop(ref_model, annotations, images, args.limit_images)

    naive_iou = {(r["image_id"], r["ann_id"]): r["iou"] for r in naive_rows}
    default = default_workers("cpu")
    weights = "stand-in weights" if args.checkpoint is None else args.checkpoint
    print(f"data: {annotations} ({len(naive_rows)} instances)")
    print(f"model: {args.model} ({weights}), CPU threads {torch.get_num_threads()}")
    naive_ips = len(naive_rows) / naive_s
    print(f"naive:   {naive_s:8.2f} s  {naive_ips:7.2f} instances/s  (full model per prompt)")
    ratios: dict[int, float] = {}
    max_diff = 0.0
    for workers, (seconds, run) in harness.items():
        assert run is not None
        n = len(run.rows)
        if n != len(naive_rows) or n == 0:
            print(f"instance counts differ: harness {n}, naive {len(naive_rows)}", file=sys.stderr)
            return 1
        diff = max(abs(r["iou"] - naive_iou[(r["image_id"], r["ann_id"])]) for r in run.rows)
        max_diff = max(max_diff, diff)
        ratios[workers] = (n / seconds) / naive_ips
        mark = "  <- default here" if workers == default else ""
        print(
            f"harness: {seconds:8.2f} s  {n / seconds:7.2f} instances/s  (workers={workers}: "
            f"{ratios[workers]:.2f}x the naive loop){mark}"
        )
    if official_s is not None:
        best_s = min(sec for sec, _ in harness.values())
        print(
            f"naive, official computation: {official_s:8.2f} s "
            f"{len(naive_rows) / official_s:7.2f} instances/s "
            f"(the fastest harness setting is {official_s / best_s:.2f}x faster)"
        )
    print(f"default workers on this machine ({available_cores()} cores, cpu): {default}")
    ratio = ratios.get(default, max(ratios.values()))
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(
        f"speed-up at the default setting: {ratio:.2f}x (target >= {TARGET_RATIO:.0f}x: {verdict})"
    )
    print(f"max |IoU harness - IoU naive|: {max_diff:.2e} percentage points")
    n = len(naive_rows)
    harness_ips = ratio * naive_ips
    if args.output:
        results = make_results(
            "harness_speed",
            model={"name": args.model, "checkpoint": args.checkpoint, "checkpoint_sha256": None},
            config={
                "prompt": "box",
                "workers": worker_counts,
                "default_workers": default,
                "limit_images": args.limit_images,
                "warmup": True,
            },
            metrics={
                "harness_instances_per_s": harness_ips,
                "naive_instances_per_s": naive_ips,
                "speedup": ratio,
                **{f"speedup_workers_{w}": r for w, r in ratios.items()},
                "n_instances": n,
                "max_abs_iou_diff": max_diff,
                "official_naive_instances_per_s": None if official_s is None else n / official_s,
            },
            meta=run_metadata(device="cpu", dtype="fp32", start_time=start),
            dataset={"annotations": annotations, "images": images},
        )
        write_json_atomic(args.output, results)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
