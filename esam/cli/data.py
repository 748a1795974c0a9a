"""``esam data``: datasets in SA-1B's layout (generated, or converted from COCO / LVIS) and a
generated classification set in ImageNet's layout.

Subcommands::

    esam data synth-sa1b --out DIR --images N --seed S [--size PX | --size WxH]
                         [--shapes MIN MAX] [--min-area PX] [--shard-size N]
                         [--format tar|folder]
    esam data coco-to-sa1b --annotations FILE --images DIR --out DIR [--shard-size N]
                           [--dataset coco|lvis] [--skip-bad-images]
    esam data synth-classes --out DIR --classes N --per-class N [--val-per-class N]
                            [--size PX] [--seed S]

Each prints a JSON summary (files written, images, masks, counts by reason) on stdout.
``docs/data.md`` describes the formats and which bad inputs are errors and which are counted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _size(text: str) -> tuple[int, int]:
    """``256`` -> (256, 256); ``320x240`` -> (width 320, height 240)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected PX or WxH in pixels, got {text!r}")
    return (values[0], values[-1])


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``esam data`` with its ``synth-sa1b``, ``coco-to-sa1b`` and ``synth-classes``
    subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "data",
        help="datasets: synthetic or converted SA-1B sets, a synthetic ImageNet-layout set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="data_task", metavar="TASK", required=True)

    s = tasks.add_parser(
        "synth-sa1b",
        help="write a seeded synthetic dataset in SA-1B's layout",
        description="Textured scenes of overlapping shapes with one mask per visible part, "
        "written as SA-1B tar shards (or folders) of sa_<id>.jpg + sa_<id>.json; the same "
        "seed gives the same bytes.",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    s.add_argument("--images", required=True, type=_positive, metavar="N", help="images")
    s.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    s.add_argument(
        "--size",
        type=_size,
        default=(256, 256),
        metavar="PX|WxH",
        help="image size: a side in pixels, or WIDTHxHEIGHT (default: 256)",
    )
    s.add_argument(
        "--shapes",
        type=_positive,
        nargs=2,
        default=[10, 21],
        metavar=("MIN", "MAX"),
        help="shapes painted per image, drawn from MIN..MAX (default: 10 21); fewer shapes "
        "give fewer, larger visible parts",
    )
    s.add_argument(
        "--min-area",
        type=_positive,
        default=16,
        metavar="PX",
        help="drop (and count) visible parts smaller than this many pixels (default: 16)",
    )
    s.add_argument(
        "--shard-size", type=_positive, default=1000, metavar="N", help="images per shard"
    )
    s.add_argument(
        "--format",
        choices=("tar", "folder"),
        default="tar",
        help="tar shards (default, as SA-1B ships) or one plain folder per shard",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=synth_sa1b_cli)

    c = tasks.add_parser(
        "coco-to-sa1b",
        help="convert a COCO / LVIS instance annotation file and its images to SA-1B tar shards",
        description="One sa_<image_id>.jpg + .json pair per image (masks as compressed RLE, "
        "crowd regions left out and counted; JPEGs copied, other formats re-encoded at "
        "quality 95), written atomically as tar shards.",
    )
    c.add_argument("--annotations", required=True, metavar="FILE", help="instance json")
    c.add_argument(
        "--images",
        required=True,
        metavar="DIR",
        help="image folder (for LVIS: COCO's image root or split folder)",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    c.add_argument(
        "--shard-size", type=_positive, default=1000, metavar="N", help="images per shard"
    )
    c.add_argument("--dataset", choices=("coco", "lvis"), default="coco", help="file format")
    c.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="count and skip missing, unreadable or mis-sized images instead of stopping",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=coco_to_sa1b_cli)

    k = tasks.add_parser(
        "synth-classes",
        help="write a seeded synthetic classification set in ImageNet's layout (train/, val/)",
        description="One shape of its own colour per class (disc, square, triangle, cross, "
        "ring, bars, diamond; at most 8 classes) on a noisy background, written as PNGs in "
        "class folders under OUT/train and OUT/val (the layout of esam eval imagenet --train "
        "/ --val); the same seed gives the same bytes.",
    )
    k.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    k.add_argument("--classes", required=True, type=_positive, metavar="N", help="classes (1-8)")
    k.add_argument(
        "--per-class", required=True, type=_positive, metavar="N", help="train images per class"
    )
    k.add_argument(
        "--val-per-class",
        type=_positive,
        default=None,
        metavar="N",
        help="val images per class (default: a quarter of --per-class, at least 1)",
    )
    k.add_argument("--size", type=_positive, default=32, metavar="PX", help="side (default: 32)")
    k.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    k.set_defaults(func=synth_classes_cli)
    return p


def synth_sa1b_cli(args: argparse.Namespace) -> int:
    from esam.data.synth_sa1b import write_synthetic_sa1b

    width, height = args.size
    summary = write_synthetic_sa1b(
        args.out,
        args.images,
        seed=args.seed,
        height=height,
        width=width,
        shard_size=args.shard_size,
        layout=args.format,
        min_area=args.min_area,
        shapes=(args.shapes[0], args.shapes[1]),
        progress=not args.no_progress,
    )
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def coco_to_sa1b_cli(args: argparse.Namespace) -> int:
    from esam.data.convert import coco_to_sa1b

    summary = coco_to_sa1b(
        args.annotations,
        args.images,
        args.out,
        dataset=args.dataset,
        shard_size=args.shard_size,
        skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def synth_classes_cli(args: argparse.Namespace) -> int:
    from esam.data.synth_classes import write_synth_classes

    summary = write_synth_classes(
        args.out,
        args.classes,
        args.per_class,
        val_per_class=args.val_per_class,
        size=args.size,
        seed=args.seed,
    )
    print(json.dumps(summary.as_dict(), indent=2))
    return 0
