"""``esam everything``: segment everything in one image; COCO-RLE records and an overlay.

The records are those of segment-anything's ``SamAutomaticMaskGenerator`` in ``coco_rle``
mode (segmentation, area, bbox x/y/w/h, predicted_iou, point_coords, stability_score,
crop_box), written as one JSON list, so tools made for SAM's ``amg.py`` output read them.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from pathlib import Path

from esam.cli.model_args import add_model_arguments, build_cli_model, check_weights_given

log = logging.getLogger(__name__)

# (flag, type, default, help); the generator's keyword is the flag with underscores
_SETTINGS: tuple[tuple[str, type, object, str], ...] = (
    ("--points-per-side", int, 32, "grid points along each side of the image (default: 32)"),
    ("--points-per-batch", int, 64, "point prompts per decoder call (default: 64)"),
    ("--pred-iou-thresh", float, 0.88, "minimum predicted IoU (default: 0.88)"),
    ("--stability-score-thresh", float, 0.95, "minimum stability score (default: 0.95)"),
    ("--stability-score-offset", float, 1.0, "stability score logit offset (default: 1.0)"),
    ("--box-nms-thresh", float, 0.7, "box NMS IoU within a crop (default: 0.7)"),
    ("--crop-n-layers", int, 0, "extra crop layers (default: 0)"),
    ("--crop-nms-thresh", float, 0.7, "box NMS IoU across crops (default: 0.7)"),
    ("--crop-overlap-ratio", float, 512 / 1500, "crop overlap, fraction of the side"),
    ("--crop-n-points-downscale-factor", int, 1, "grid downscale per crop layer (default: 1)"),
    ("--min-mask-region-area", int, 0, "remove holes/islands below this area (needs OpenCV)"),
    ("--upsample-batch", int, 16, "masks upsampled to full size at once (default: 16)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "everything",
        help="segment everything in an image (automatic mask generation)",
        description=__doc__,
    )
    add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True, help="input image (any format PIL reads)")
    p.add_argument(
        "--exif-transpose",
        action="store_true",
        help="rotate/mirror the image as its EXIF orientation says, so coordinates and masks "
        "are in the frame viewers show (default: pixels as stored, as datasets annotate them)",
    )
    for flag, kind, default, text in _SETTINGS:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", type=Path, required=True, help="output JSON: list of COCO-RLE records")
    p.add_argument("--overlay", type=Path, help="also write the image with every mask coloured")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    import esam
    from esam.data.images import as_rgb_uint8, read_image_file
    from esam.everything.overlay import RleMasks, overlay_masks
    from esam.utils.deps import require
    from esam.utils.io import check_writable_file, write_bytes_atomic, write_json_atomic

    check_weights_given(args)
    check_writable_file(args.out, "--out")
    if args.overlay is not None:
        check_writable_file(args.overlay, "--overlay")
    image = as_rgb_uint8(
        read_image_file(args.image, exif_transpose=args.exif_transpose), str(args.image)
    )
    require("pycocotools.mask", extra="eval")  # records and overlay use COCO RLEs

    model = build_cli_model(args)
    settings = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag, *_ in _SETTINGS
    }
    generator = esam.EfficientSamAutomaticMaskGenerator(
        model.to(args.device), output_mode="coco_rle", **settings
    )
    start = time.perf_counter()
    records = generator.generate(image)
    seconds = time.perf_counter() - start

    write_json_atomic(args.out, records)
    print(f"masks: {args.out} ({len(records)} masks in {seconds:.1f} s)")
    if args.overlay is not None:
        masks = RleMasks([r["segmentation"] for r in records])  # decoded one at a time
        buf = io.BytesIO()
        overlay_masks(image, masks, areas=[r["area"] for r in records]).save(buf, format="PNG")
        write_bytes_atomic(args.overlay, buf.getvalue())
        print(f"overlay: {args.overlay}")
    return 0
