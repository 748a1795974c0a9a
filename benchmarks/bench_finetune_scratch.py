"""Fine-tuning from scratch on a CPU: does the ``tiny`` config learn a promptable segmenter?

Runs the demo's fine-tuning stage (:func:`esam.demo.stage_finetune`) alone, then checks it
against its targets. The stage:

1. generates a seeded SA-1B-format set with ``esam data synth-sa1b`` (default scenes: 10-21
   overlapping textured shapes per image, one mask per visible part) at 128 px: 2000 training
   images (seed 0) and 40 held-out images (seed 1);
2. trains EfficientSAM from random weights with ``esam finetune --config tiny`` for 3 epochs
   (1500 steps of 4 images, 16 masks each; ``--epochs N`` for another length);
3. scores the held-out images through ``esam eval zeroshot --dataset sa1b`` (the code path of
   the COCO and LVIS benchmarks): box prompts, one click, and the ``box_fill`` reference (the
   prompt box itself, filled);
4. scores the same model on the shipped COCO-format sample.

This script adds a box-prompt evaluation on real COCO images when they are available
(``--coco DIR`` with ``annotations/instances_val2017.json`` and ``val2017/``; by default
``$ESAM_SHARED/data/coco_val2017_mini`` or ``../shared/data/coco_val2017_mini`` beside the
checkout, when present), then prints and writes (``--json``) one summary: the training's wall
time (from the run's results file), the mIoUs, and whether each target holds:

* training within ``--budget-min`` minutes (10);
* box mIoU on the held-out synthetic images >= 80%;
* box mIoU >= ``box_fill`` + 10 points.

The targets are reported, never enforced by the exit status: the script is a measurement.

Usage::

    python benchmarks/bench_finetune_scratch.py [--out DIR] [--threads N] [--coco DIR]
        [--budget-min 10] [--epochs N] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from esam.demo import (
    FINETUNE_RESULTS,
    FINETUNE_SET,
    FINETUNE_SIZE,
    DemoPlan,
    _cli,
    stage_finetune,
)
from esam.utils.io import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
#: Targets: box mIoU (percent) on the held-out synthetic images, and its margin over box_fill.
TARGET_BOX_MIOU = 80.0
TARGET_MARGIN = 10.0


def default_coco() -> Path | None:
    """The real COCO sample beside the checkout (``$ESAM_SHARED`` or ``../shared``), if any."""
    roots = [Path(os.environ["ESAM_SHARED"])] if os.environ.get("ESAM_SHARED") else []
    roots.append(REPO.parent / "shared")
    for root in roots:
        folder = root / "data" / "coco_val2017_mini"
        if (folder / "annotations" / "instances_val2017.json").is_file():
            return folder
    return None


def metrics(path: Path) -> dict[str, Any]:
    """The ``metrics`` of an esam results file."""
    return dict(json.loads(path.read_text())["metrics"])


def training_seconds(results: dict[str, Any]) -> float:
    """Wall time of ``esam finetune`` from its results file's start and end times."""
    meta = results["meta"]
    start, end = (datetime.fromisoformat(meta[k]) for k in ("start_time", "end_time"))
    return (end - start).total_seconds()


def summarise(folder: Path, coco: dict[str, Any] | None, budget_min: float) -> dict[str, Any]:
    """The summary of a finished stage whose results are in ``folder``."""
    train = json.loads((folder / FINETUNE_RESULTS["train"]).read_text())
    box = metrics(folder / FINETUNE_RESULTS["box"])
    point = metrics(folder / FINETUNE_RESULTS["point1"])
    fill = metrics(folder / FINETUNE_RESULTS["box_fill"])
    sample = metrics(folder / FINETUNE_RESULTS["coco_sample"])
    seconds = training_seconds(train)
    return {
        # the fine-tuning run's meta: versions, git commit, hardware, dtype
        "meta": train["meta"],
        "train": {
            "steps": train["metrics"]["steps"],
            "wall_s": seconds,
            "images_per_s": train["metrics"]["images_per_s"],
            "final_dice": train["metrics"]["final_dice"],
            "hardware": train["meta"]["hardware"],
            "config": train["config"],
        },
        "heldout": {
            "n_instances": box["n_instances"],
            "box_miou": box["miou"],
            "point1_miou": point["miou"],
            "box_fill_miou": fill["miou"],
            "by_size": {k: box[k] for k in ("miou_small", "miou_medium", "miou_large") if k in box},
        },
        "coco_sample_box_miou": sample["miou"],
        "coco_real": coco,
        "targets": {
            "train_within_min": budget_min,
            "box_miou": TARGET_BOX_MIOU,
            "margin_over_box_fill": TARGET_MARGIN,
        },
        "met": {
            "time": seconds <= 60 * budget_min,
            "box_miou": box["miou"] >= TARGET_BOX_MIOU,
            "margin": box["miou"] >= fill["miou"] + TARGET_MARGIN,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/finetune_scratch"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--coco", type=Path, default=None, help="real COCO sample (see above)")
    p.add_argument("--budget-min", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="the demo's quick setting (smoke test)")
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs of the run (default: the demo's 3)"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = DemoPlan(args.out, args.quick)
    setting = "quick" if args.quick else "full"
    n_images, epochs = FINETUNE_SET[setting]
    epochs = args.epochs or epochs
    print(
        f"tiny config from scratch: {n_images} generated {FINETUNE_SIZE} px images x {epochs} "
        f"epochs, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        flush=True,
    )
    stage_finetune(plan, epochs)
    folder = plan.results / "finetune"
    coco_dir = args.coco or default_coco()
    coco = None
    if coco_dir is not None:
        out = folder / "coco_real_box_efficientsam_synth.json"
        _cli(
            ["eval", "zeroshot", "--model", "efficientsam", "--checkpoint",
             str(plan.finetune_run / "model.pt"), "--dataset", "coco",
             "--annotations", str(coco_dir / "annotations" / "instances_val2017.json"),
             "--images", str(coco_dir / "val2017"), "--workers", "0", "--no-progress",
             "--output", str(out)]
        )  # fmt: skip
        coco = {"dir": str(coco_dir), **{k: metrics(out)[k] for k in ("miou", "n_instances")}}
    summary = summarise(folder, coco, args.budget_min)
    t, h, met = summary["train"], summary["heldout"], summary["met"]
    yes = {True: "met", False: "NOT met"}
    print(f"training: {t['steps']} steps in {t['wall_s'] / 60:.1f} min ({yes[met['time']]})")
    print(
        f"held-out synthetic ({h['n_instances']} masks): box mIoU {h['box_miou']:.1f}% "
        f"(target {TARGET_BOX_MIOU:.0f}%: {yes[met['box_miou']]}), box_fill "
        f"{h['box_fill_miou']:.1f}% (margin {h['box_miou'] - h['box_fill_miou']:+.1f}, target "
        f"+{TARGET_MARGIN:.0f}: {yes[met['margin']]}), 1-click {h['point1_miou']:.1f}%"
    )
    print(f"shipped COCO-format sample, box mIoU: {summary['coco_sample_box_miou']:.1f}%")
    if coco is not None:
        print(
            f"real COCO ({coco['dir']}, {coco['n_instances']} masks), box mIoU: {coco['miou']:.1f}%"
        )
    if args.json:
        write_json_atomic(args.json, summary)
        print(f"-> {args.json}")


if __name__ == "__main__":
    main()
