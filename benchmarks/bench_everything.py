"""Segment everything: esam's generator vs segment-anything's, same model, same settings.

Usage::

    python benchmarks/bench_everything.py [--model efficientsam_vitt] [--checkpoint PATH]
        [--size 1200x1800] [--points-per-side 32] [--points-per-batch 64] [--loose]
        [--repeats 2] [--threads 1] [--pred-iou-thresh X] [--stability-score-thresh X]
        [--notebook-cap-gib 20] [--skip-sam] [--skip-notebook] [--json OUT.json]

What is compared, side by side in one run:

* esam: ``esam.EfficientSamAutomaticMaskGenerator`` (predicted-IoU filter before upsampling,
  survivors upsampled ``upsample_batch`` at a time, candidates kept as packed bitmaps until NMS
  and run-length encoded only if they survive it).
* sam: segment-anything's ``SamAutomaticMaskGenerator``, unchanged, driving the same EfficientSAM
  model through ``esam.everything.sam_compat.SamPredictorShim`` (it upsamples every mask of a
  decoder batch, ``points_per_batch`` x 3, to full resolution at once, and keeps every
  candidate as an RLE until NMS).

* notebook: the official EfficientSAM notebook's method: every grid point in one decoder call
  and every mask (points x 3) upsampled to full resolution at once, then thresholded; run in a
  process whose address space is capped at ``--notebook-cap-gib`` (``RLIMIT_AS``), so it
  reports either its measured peak or that it could not run within the cap. It uses the same
  (centred) grid as the others; only its memory and time are compared, not its masks.

Each side runs in a fresh subprocess: build the model, warm up with a one-point grid, return
freed heap to the OS, then measure the peak RSS growth of one ``generate`` call
(:class:`esam.bench.memory.PeakMemory`: the kernel's high-water mark, reset before the call),
which is also the first timed call, and time ``--repeats - 1`` more (minimum reported). The parent compares the masks: each esam mask is
matched to the sam mask of highest IoU; the mean IoU of matches and the difference in counts are
reported with the speed and memory ratios.

Weights: ``--checkpoint`` or esam's deterministic stand-in weights (no download). Timings do not
depend on the weight values, but how many masks pass the filters does, and the stand-in model's
masks rarely pass SAM's default thresholds; ``--loose`` sets ``pred_iou_thresh`` and
``stability_score_thresh`` to 0 (and box NMS to 0.95) so that many masks survive, the setting
where the full-resolution step dominates; ``--pred-iou-thresh`` / ``--stability-score-thresh``
set the two filters explicitly (the same on every side; the settings are printed). The image is
synthetic (seeded shapes on a gradient). Threads: ``--threads`` (``OMP_NUM_THREADS`` too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image: a colour gradient with 12 seeded flat ellipses and rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    img = img.astype(np.uint8)
    for _ in range(12):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.03, 0.2) * h, rng.uniform(0.03, 0.2) * w
        if rng.uniform() < 0.5:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        img[m] = rng.integers(0, 256, 3)
    return img


def settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "points_per_side": args.points_per_side,
        "points_per_batch": args.points_per_batch,
        "output_mode": "coco_rle",
    }
    if args.loose:
        out.update(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95)
    if args.pred_iou_thresh is not None:
        out["pred_iou_thresh"] = args.pred_iou_thresh
    if args.stability_score_thresh is not None:
        out["stability_score_thresh"] = args.stability_score_thresh
    return out


def notebook_worker(args: argparse.Namespace) -> None:
    """All grid points in one decoder call, all masks upsampled at once, under a memory cap."""
    import resource

    cap = int(args.notebook_cap_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    out: dict[str, Any] = {"impl": "notebook", "cap_gib": args.notebook_cap_gib}
    try:
        import torch
        import torch.nn.functional as F

        import esam
        from esam.bench.memory import PeakMemory
        from esam.standin import load_standin_weights
        from esam.utils.allocator import trim_heap

        torch.set_num_threads(args.threads)
        h, w = (int(v) for v in args.size.split("x"))
        image = make_image(h, w)
        model = esam.build_model(args.model, args.checkpoint).eval()
        if args.checkpoint is None:
            load_standin_weights(model)
        n = args.points_per_side
        offset = 1 / (2 * n)  # segment-anything's grid: points at cell centres
        axis = np.linspace(offset, 1 - offset, n)
        grid = np.stack(np.meshgrid(axis * w, axis * h), -1).reshape(-1, 2)
        pixels = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0

        def run() -> int:
            with torch.inference_mode():
                embedding = model.get_image_embeddings(pixels)
                pts = torch.as_tensor(grid, dtype=torch.float32)[None, :, None]  # 1xNx1x2
                labels = torch.ones(pts.shape[:3], dtype=torch.int64)
                low_res, iou = model.predict_masks(embedding, pts, labels, True, h, w)
                logits = F.interpolate(low_res[0].flatten(0, 1)[:, None], (h, w), mode="bicubic")
                masks = logits[:, 0] > model.mask_threshold  # (N*3)xHxW
                del logits
                keep = iou[0].flatten() > settings(args).get("pred_iou_thresh", 0.88)
                return int(keep.sum()) if masks.shape[0] else 0

        trim_heap()
        t0 = time.perf_counter()
        with PeakMemory("cpu") as mem:
            n_kept = run()
        out.update(
            ok=True,
            seconds=time.perf_counter() - t0,
            n_masks_upsampled=3 * len(grid),
            n_masks_passing_iou=n_kept,
            peak_growth_mib=(mem.peak_bytes - mem.baseline_bytes) / 2**20,
            memory_method=mem.method,
        )
    except (MemoryError, RuntimeError) as e:
        out.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    Path(args.result).write_text(json.dumps(out))


def worker(args: argparse.Namespace) -> None:
    import torch

    import esam
    from esam.bench.memory import PeakMemory
    from esam.everything.sam_compat import sam_generator
    from esam.standin import load_standin_weights
    from esam.utils.allocator import trim_heap

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    image = make_image(h, w)
    model = esam.build_model(args.model, args.checkpoint)
    if args.checkpoint is None:
        load_standin_weights(model)
    kw = settings(args)
    if args.worker == "esam":
        generator: Any = esam.EfficientSamAutomaticMaskGenerator(model, **kw)
    else:
        generator = sam_generator(model, **kw)
    warm = {**kw, "points_per_side": 1}
    if args.worker == "esam":  # warm-up on a one-point grid: same code paths, little time
        esam.EfficientSamAutomaticMaskGenerator(model, **warm).generate(image)
    else:
        sam_generator(model, **warm).generate(image)
    trim_heap()
    t0 = time.perf_counter()
    with PeakMemory("cpu") as mem:
        records = generator.generate(image)
    times = [time.perf_counter() - t0]
    for _ in range(args.repeats - 1):
        t0 = time.perf_counter()
        generator.generate(image)
        times.append(time.perf_counter() - t0)
    out = {
        "impl": args.worker,
        "n_masks": len(records),
        "seconds": times,
        "peak_growth_mib": (mem.peak_bytes - mem.baseline_bytes) / 2**20,
        "memory_method": mem.method,
        "segmentations": [r["segmentation"] for r in records],
    }
    Path(args.result).write_text(json.dumps(out))


def match(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> tuple[float | None, int]:
    """Mean IoU of each of our masks with its best match among theirs, and how many matched."""
    from pycocotools import mask as mask_utils

    if not ours or not theirs:
        return None, 0
    iou = np.asarray(mask_utils.iou(ours, theirs, [0] * len(theirs)))
    best = iou.max(axis=1)
    return float(best.mean()), int((best >= 0.5).sum())


def main() -> None:
    from esam.utils.io import write_json_atomic
    from esam.utils.meta import run_metadata

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="efficientsam_vitt")
    p.add_argument("--checkpoint")
    p.add_argument("--size", default="1200x1800", help="HxW of the synthetic image")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--loose", action="store_true", help="no IoU/stability filters")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pred-iou-thresh", type=float, help="both sides (default: SAM's 0.88)")
    p.add_argument("--stability-score-thresh", type=float, help="both sides (default: 0.95)")
    p.add_argument("--notebook-cap-gib", type=float, default=20.0, help="RLIMIT_AS of notebook")
    p.add_argument("--skip-sam", action="store_true", help="do not run segment-anything's")
    p.add_argument("--skip-notebook", action="store_true", help="do not run the notebook method")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    p.add_argument("--worker", choices=["esam", "sam", "notebook"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.worker == "notebook":
        notebook_worker(args)
        return
    if args.worker:
        worker(args)
        return

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        impls = ["esam"] + ([] if args.skip_sam else ["sam"])
        impls += [] if args.skip_notebook else ["notebook"]
        for impl in impls:
            result = Path(tmp) / f"{impl}.json"
            cmd = [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--worker",
                impl,
                "--result",
                str(result),
            ]
            print(f"running {impl} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=impl != "notebook", env=env)
            if result.is_file():
                runs[impl] = json.loads(result.read_text())
            else:  # killed (e.g. by the kernel) before it could report
                runs[impl] = {"ok": False, "error": "the process ended without a result"}
    esam_run = runs["esam"]
    summary: dict[str, Any] = {
        "settings": {**settings(args), "size": args.size, "model": args.model},
        "weights": args.checkpoint or "standin",
        "threads": args.threads,
        "n_masks": {"esam": esam_run["n_masks"]},
        "seconds_min": {"esam": min(esam_run["seconds"])},
        "peak_growth_mib": {"esam": esam_run["peak_growth_mib"]},
        "memory_method": esam_run["memory_method"],
        "meta": run_metadata("cpu", "fp32"),  # hardware, versions, git commit
    }
    if "sam" in runs:
        sam_run = runs["sam"]
        miou, n_matched = match(esam_run["segmentations"], sam_run["segmentations"])
        summary["n_masks"]["sam"] = sam_run["n_masks"]
        summary["mean_iou_of_matches"] = miou
        summary["n_matched"] = n_matched
        summary["seconds_min"]["sam"] = min(sam_run["seconds"])
        summary["speedup_sam_over_esam"] = min(sam_run["seconds"]) / min(esam_run["seconds"])
        summary["peak_growth_mib"]["sam"] = sam_run["peak_growth_mib"]
    if "notebook" in runs:
        summary["notebook"] = runs["notebook"]
    print(json.dumps(summary, indent=2))
    if args.json:
        write_json_atomic(args.json, summary)


if __name__ == "__main__":
    main()
