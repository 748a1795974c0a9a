"""``esam predict``: segment one object in one image from a box or points."""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import numpy as np

from esam.cli.model_args import add_model_arguments, build_cli_model, check_weights_given
from esam.errors import InputError

log = logging.getLogger(__name__)


def _floats(text: str, n: int | None, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from e
    if n is not None and len(vals) != n:
        raise InputError(f"{what} must have {n} values, got {len(vals)} in {text!r}")
    return vals


def parse_points(text: str) -> np.ndarray:
    """``"x,y;x,y"`` -> Nx2 array."""
    pts = [_floats(p, 2, "each point in --points") for p in text.split(";") if p.strip()]
    if not pts:
        raise InputError(f"--points must look like 'x,y;x,y', got {text!r}")
    return np.asarray(pts, dtype=np.float64)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment one object from a box or points", description=__doc__
    )
    add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True, help="input image (any format PIL reads)")
    p.add_argument(
        "--exif-transpose",
        action="store_true",
        help="rotate/mirror the image as its EXIF orientation says, so coordinates and masks "
        "are in the frame viewers show (default: pixels as stored, as datasets annotate them)",
    )
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--box", help="x0,y0,x1,y1 in image pixels")
    prompt.add_argument("--points", help="'x,y;x,y' in image pixels (with --labels)")
    p.add_argument(
        "--labels", help="point labels, e.g. 1,1 (1 positive, 0 negative); default all positive"
    )
    p.add_argument(
        "--single-mask", action="store_true", help="single-mask output instead of the best of 3"
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", type=Path, required=True, help="output mask PNG (0/255)")
    p.add_argument(
        "--overlay", type=Path, help="also write the image with the mask and prompt drawn"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    import esam
    from esam.data.images import as_rgb_uint8, read_image_file
    from esam.utils.io import write_bytes_atomic
    from esam.visualize import overlay_mask

    check_weights_given(args)
    # 16-bit grey files keep their range (PIL's RGB conversion would clip them to white)
    image = as_rgb_uint8(
        read_image_file(args.image, exif_transpose=args.exif_transpose), str(args.image)
    )

    model = build_cli_model(args)
    predictor = esam.EfficientSamPredictor(model.to(args.device))
    predictor.set_image(image)

    box = points = labels = None
    if args.box:
        box = np.asarray(_floats(args.box, 4, "--box"))
    else:
        points = parse_points(args.points)
        labels = (
            np.asarray(_floats(args.labels, len(points), "--labels"))
            if args.labels
            else np.ones(len(points))
        )
    masks, iou, _ = predictor.predict(points, labels, box, multimask_output=not args.single_mask)
    mask = masks[0]

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    write_bytes_atomic(args.out, buf.getvalue())
    print(f"mask: {args.out} ({int(mask.sum())} pixels, predicted IoU {float(iou[0]):.3f})")
    if args.overlay:
        buf = io.BytesIO()
        overlay_mask(image, mask, box, points, labels).save(buf, format="PNG")
        write_bytes_atomic(args.overlay, buf.getvalue())
        print(f"overlay: {args.overlay}")
    return 0
