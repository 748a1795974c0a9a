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

from esam.eval.protocols import DEFAULT_PROTOCOL, PROTOCOLS


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
    p.add_argument(
        "--workers",
        type=int,
        help="image decoding workers (default: chosen from the device and the cores available: "
        "none on a CPU with fewer than 8 cores, where they would compete with the model's threads)",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="count and skip missing, corrupt or mis-sized images instead of stopping",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--output", required=True, help="results JSON (rows are written beside it)")
    p.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        choices=tuple(PROTOCOLS),
        help="protocol preset: the prompt-selection rules of a paper's evaluation; switches below "
        f"override it and are recorded (default: {DEFAULT_PROTOCOL}; see docs/protocols.md)",
    )
    p.add_argument(
        "--mask-choice",
        choices=("score", "single", "oracle"),
        help="highest predicted IoU of 3 outputs, the single output, or the best against GT "
        "(oracle: zeroshot only) (default: the preset's)",
    )


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
        choices=("random", "center", "iterative"),
        help=(
            "click rule for point prompts: random (uniform in the mask), center (distance-transform "
            "maximum), iterative (centre, then error-region clicks) (default: the preset's)"
        ),
    )
    z.add_argument(
        "--box-source",
        choices=("bbox", "mask"),
        help="box prompts from the annotation bbox or the tight box of the mask (default: the "
        "preset's)",
    )
    z.add_argument(
        "--clip-boxes",
        action=argparse.BooleanOptionalAction,
        help="clip box prompts to the image (default: the preset's)",
    )
    z.add_argument(
        "--include-crowd",
        action=argparse.BooleanOptionalAction,
        help="evaluate iscrowd regions too (default: the preset's)",
    )
    z.add_argument(
        "--no-error-click",
        choices=("pad", "negative-origin"),
        help="iterative clicks once the mask is exact: padding, or a negative click at (0, 0) "
        "(default: the preset's)",
    )
    z.add_argument(
        "--size-buckets",
        choices=("coco", "inclusive"),
        help="size buckets half-open as COCO, or closed at both ends (default: the preset's)",
    )
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
        "--clip-boxes",
        action=argparse.BooleanOptionalAction,
        help="clip detector boxes to the image (default: the preset's)",
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
        "protocol": args.protocol,
        "mask_choice": args.mask_choice,
    }


def run_zeroshot_cli(args: argparse.Namespace) -> int:
    from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot

    cfg = ZeroShotConfig(
        **_common(args),
        prompt=args.prompt,
        click=args.click,
        box_source=args.box_source,
        clip_boxes=args.clip_boxes,
        include_crowd=args.include_crowd,
        no_error_click=args.no_error_click,
        size_buckets=args.size_buckets,
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
        clip_boxes=args.clip_boxes,
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
    from esam.adapters import ENTRY_POINT_GROUP, available_adapters

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
