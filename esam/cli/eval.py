"""``esam eval``: zero-shot benchmarks (box / click mIoU, instance segmentation from boxes).

Subcommands::

    esam eval zeroshot --model NAME [--checkpoint PATH] --dataset coco|lvis --annotations FILE
                       --images DIR --prompt box|point1|point3 [...] --output FILE.json
    esam eval instseg  --model NAME [--checkpoint PATH] --dataset coco|lvis --annotations FILE
                       --images DIR --detections FILE [...] --output FILE.json
    esam eval models   (list the available model adapters)

Run under ``torchrun --nproc_per_node N -m esam.cli.main eval ...`` to shard images across
processes (one per GPU, or several on CPU).
"""

from __future__ import annotations

import argparse
from typing import Any


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="adapter name (see 'esam eval models')")
    p.add_argument("--checkpoint", help="weights file of the model (never downloaded)")
    p.add_argument("--dataset", required=True, choices=("coco", "lvis"), help="annotation format")
    p.add_argument("--annotations", required=True, help="instance annotation json")
    p.add_argument(
        "--images",
        required=True,
        help="image folder (LVIS: the COCO image root holding train2017/ and val2017/, or one of them)",
    )
    p.add_argument("--limit-images", type=int, help="evaluate only the first N images by id")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--workers", type=int, default=2, help="image decoding workers (default: 2)")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="count and skip missing, corrupt or mis-sized images instead of stopping",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--output", required=True, help="results JSON (rows are written beside it)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam eval`` with its ``zeroshot``, ``instseg`` and ``models`` subcommands."""
    p = sub.add_parser(
        "eval",
        help="zero-shot benchmarks: box/click mIoU and instance segmentation from detector boxes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    z = tasks.add_parser(
        "zeroshot",
        help="mIoU of masks prompted by ground-truth boxes or clicks",
        description="mIoU (percent) over all instances and per COCO size bucket.",
    )
    _add_common(z)
    z.add_argument(
        "--prompt",
        default="box",
        choices=("box", "point1", "point3"),
        help="prompt kind (default: box)",
    )
    z.add_argument(
        "--click",
        default="random",
        choices=("random", "center", "iterative"),
        help=(
            "click rule for point prompts: random (uniform in the mask, EfficientSAM paper), center "
            "(distance-transform maximum), iterative (centre, then error-region clicks) (default: random)"
        ),
    )
    z.add_argument(
        "--box-source",
        default="bbox",
        choices=("bbox", "mask"),
        help="box prompts from the annotation bbox or the tight box of the mask (default: bbox)",
    )
    z.add_argument(
        "--mask-choice",
        default="score",
        choices=("score", "single", "oracle"),
        help="highest predicted IoU of 3 outputs, the single output, or the best against GT (default: score)",
    )
    z.add_argument("--include-crowd", action="store_true", help="evaluate iscrowd regions too")
    z.add_argument("--seed", type=int, default=0, help="seed of random clicks (default: 0)")
    z.set_defaults(func=run_zeroshot_cli)

    i = tasks.add_parser(
        "instseg",
        help="segm AP of masks prompted by detector boxes (COCOeval / LVISEval)",
        description="One mask per detection box; AP in percent.",
    )
    _add_common(i)
    i.add_argument("--detections", required=True, help="detections json in COCO results format")
    i.add_argument(
        "--mask-choice",
        default="score",
        choices=("score", "single"),
        help="highest predicted IoU of 3 outputs or the single output (default: score)",
    )
    i.add_argument(
        "--max-dets", type=int, help="detections per image (default: COCO 100, LVIS 300)"
    )
    i.add_argument(
        "--save-segm", action="store_true", help="also write the masks as <stem>.segm.json"
    )
    i.set_defaults(func=run_instseg_cli)

    m = tasks.add_parser("models", help="list the model adapters")
    m.set_defaults(func=list_models_cli)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "annotations": args.annotations,
        "images": args.images,
        "limit_images": args.limit_images,
        "device": args.device,
        "workers": args.workers,
        "skip_bad_images": args.skip_bad_images,
        "progress": not args.no_progress,
        "output": args.output,
    }


def run_zeroshot_cli(args: argparse.Namespace) -> int:
    from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot

    cfg = ZeroShotConfig(
        **_common(args),
        prompt=args.prompt,
        click=args.click,
        box_source=args.box_source,
        mask_choice=args.mask_choice,
        include_crowd=args.include_crowd,
        seed=args.seed,
    )
    run = run_zeroshot(cfg)
    if run is not None:
        m = run.results["metrics"]
        print(_format_miou(m, args.output))
    return 0


def run_instseg_cli(args: argparse.Namespace) -> int:
    from esam.eval.instseg import InstSegConfig, run_instseg

    cfg = InstSegConfig(
        **_common(args),
        detections=args.detections,
        mask_choice=args.mask_choice,
        max_dets=args.max_dets,
        save_segm=args.save_segm,
    )
    run = run_instseg(cfg)
    if run is not None:
        m = run.results["metrics"]
        vals = ", ".join(
            f"{k}={'n/a' if m[k] is None else format(m[k], '.2f')}"
            for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
        )
        print(f"{vals} ({m['n_detections']} detections) -> {args.output}")
    return 0


def list_models_cli(args: argparse.Namespace) -> int:
    from esam.eval.adapters import ENTRY_POINT_GROUP, available_adapters

    for name, source in available_adapters().items():
        print(f"{name:24s} {source}")
    print(f"(add more through the entry-point group '{ENTRY_POINT_GROUP}')")
    return 0


def _format_miou(m: dict[str, Any], output: str) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    return (
        f"mIoU={f(m['miou'])} small={f(m['miou_small'])} medium={f(m['miou_medium'])} "
        f"large={f(m['miou_large'])} ({m['n_instances']} instances) -> {output}"
    )
