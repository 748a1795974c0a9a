"""A tiny COCO-format dataset the project draws itself, for tests, demos and benchmarks.

Each image is a smooth gradient with eight objects in a 4x2 grid of cells, painted from their own
ground-truth masks (so image and annotation agree pixel for pixel):

====  =============  ==========================================  ======
cell  category       annotation                                  size
====  =============  ==========================================  ======
0     rectangle      polygon (4 points)                          large
1     ellipse        compressed RLE                              medium
2     triangle       polygon (3 points)                          small
3     polygon_pair   polygon with two parts                      medium
4     ring           uncompressed RLE (with a hole)              medium
5     dots           uncompressed RLE, ``iscrowd`` = 1           small
6     hexagon        polygon (6 points)                          medium
7     disc           compressed RLE                              small
====  =============  ==========================================  ======

The shipped sample in ``esam/assets/sample`` is ``write_synthetic_coco(dir, n_images=4)``, with
a detections file in COCO results format (``write_synthetic_detections``). Regenerate with
``python -m esam.data.synthetic esam/assets/sample``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from esam.utils.deps import require

CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "polygon_pair", "supercategory": "shape"},
    {"id": 5, "name": "ring", "supercategory": "shape"},
    {"id": 6, "name": "dots", "supercategory": "shape"},
    {"id": 7, "name": "hexagon", "supercategory": "shape"},
    {"id": 8, "name": "disc", "supercategory": "shape"},
]

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "assets" / "sample"


def sample_paths() -> tuple[Path, Path]:
    """(annotation json, image folder) of the shipped sample."""
    return SAMPLE_DIR / "annotations" / "instances.json", SAMPLE_DIR / "images"


def _rle_of(mask: np.ndarray) -> dict[str, Any]:
    mask_utils = require("pycocotools.mask")
    rle: dict[str, Any] = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle


def _poly_mask(polys: list[list[float]], h: int, w: int) -> np.ndarray:
    mask_utils = require("pycocotools.mask")
    rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    return np.asarray(mask_utils.decode(rle)).astype(bool)


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """Column-major run lengths starting with a background run (COCO's iscrowd format)."""
    flat = mask.astype(np.uint8).ravel(order="F")
    counts: list[int] = []
    current, run = 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = int(v), 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _poly_bbox(polys: list[list[float]]) -> list[float]:
    xs = [x for p in polys for x in p[0::2]]
    ys = [y for p in polys for y in p[1::2]]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _rle_bbox_area(mask: np.ndarray) -> tuple[list[float], float]:
    mask_utils = require("pycocotools.mask")
    rle = _rle_of(mask)
    return [float(v) for v in mask_utils.toBbox(rle)], float(mask_utils.area(rle))


def make_image(
    image_id: int, height: int = 256, width: int = 384, seed: int = 0
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image and its annotations.

    Returns:
        (HxWx3 uint8 RGB image, COCO annotation dicts with ids ``image_id * 100 + cell``).
    """
    rng = np.random.default_rng([seed, image_id])
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(60, 120, size=3)
    img = np.stack(
        [base[c] + 40 * (xx / width) * (c != 1) + 40 * (yy / height) * (c != 0) for c in range(3)],
        axis=-1,
    )
    cw, ch = width / 4.0, height / 2.0
    anns: list[dict[str, Any]] = []

    def cell(k: int) -> tuple[float, float]:
        return (k % 4) * cw, (k // 4) * ch

    def jitter(a: float) -> float:
        return float(rng.uniform(-a, a))

    def add(
        k: int, mask: np.ndarray, segmentation: Any, bbox: list[float], area: float, crowd: int = 0
    ) -> None:
        color = rng.integers(150, 256, size=3) if k % 2 == 0 else rng.integers(0, 60, size=3)
        img[mask] = color
        anns.append(
            {
                "id": image_id * 100 + k,
                "image_id": image_id,
                "category_id": k + 1,
                "segmentation": segmentation,
                "area": area,
                "bbox": [round(v, 2) for v in bbox],
                "iscrowd": crowd,
            }
        )

    # 0: large rectangle as a 4-point polygon
    x0, y0 = cell(0)
    rw, rh = 0.9 * cw + jitter(2), 0.9 * ch + jitter(2)
    px, py = x0 + (cw - rw) / 2 + jitter(2), y0 + (ch - rh) / 2 + jitter(2)
    poly = [[px, py, px + rw, py, px + rw, py + rh, px, py + rh]]
    poly = [[round(v, 2) for v in poly[0]]]
    m = _poly_mask(poly, height, width)
    add(0, m, poly, _poly_bbox(poly), float(m.sum()))
    # 1: medium ellipse as compressed RLE
    x0, y0 = cell(1)
    cx, cy = x0 + cw / 2 + jitter(4), y0 + ch / 2 + jitter(4)
    ax, ay = 26 + jitter(3), 20 + jitter(3)
    m = ((xx + 0.5 - cx) / ax) ** 2 + ((yy + 0.5 - cy) / ay) ** 2 <= 1.0
    rle = _rle_of(m)
    bbox, area = _rle_bbox_area(m)
    add(1, m, {"size": rle["size"], "counts": rle["counts"].decode("ascii")}, bbox, area)
    # 2: small triangle as a 3-point polygon
    x0, y0 = cell(2)
    tx, ty = x0 + cw / 2 + jitter(10), y0 + ch / 2 + jitter(10)
    s = 18 + jitter(3)
    poly = [[round(v, 2) for v in (tx - s / 2, ty + s / 2, tx + s / 2, ty + s / 2, tx, ty - s / 2)]]
    m = _poly_mask(poly, height, width)
    add(2, m, poly, _poly_bbox(poly), float(m.sum()))
    # 3: two-part polygon (two squares side by side)
    x0, y0 = cell(3)
    sx, sy, q = x0 + 10 + jitter(3), y0 + 40 + jitter(4), 30 + jitter(3)
    poly = [
        [round(v, 2) for v in (sx, sy, sx + q, sy, sx + q, sy + q, sx, sy + q)],
        [
            round(v, 2)
            for v in (
                sx + q + 12,
                sy + 10,
                sx + 2 * q + 12,
                sy + 10,
                sx + 2 * q + 12,
                sy + q + 10,
                sx + q + 12,
                sy + q + 10,
            )
        ],
    ]
    m = _poly_mask(poly, height, width)
    add(3, m, poly, _poly_bbox(poly), float(m.sum()))
    # 4: ring (hole in the middle) as uncompressed RLE
    x0, y0 = cell(4)
    cx, cy = x0 + cw / 2 + jitter(4), y0 + ch / 2 + jitter(4)
    r2 = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2
    m = (r2 <= (30 + jitter(2)) ** 2) & (r2 >= (14 + jitter(2)) ** 2)
    bbox, area = _rle_bbox_area(m)
    add(4, m, _uncompressed_rle(m), bbox, area)
    # 5: a crowd of dots as one iscrowd uncompressed RLE
    x0, y0 = cell(5)
    m = np.zeros((height, width), dtype=bool)
    for _ in range(6):
        dx, dy = x0 + rng.uniform(20, cw - 20), y0 + rng.uniform(20, ch - 20)
        m |= (xx + 0.5 - dx) ** 2 + (yy + 0.5 - dy) ** 2 <= 9.0
    bbox, area = _rle_bbox_area(m)
    add(5, m, _uncompressed_rle(m), bbox, area, crowd=1)
    # 6: medium hexagon as a 6-point polygon
    x0, y0 = cell(6)
    cx, cy, r = x0 + cw / 2 + jitter(4), y0 + ch / 2 + jitter(4), 30 + jitter(3)
    ang = np.deg2rad(np.arange(6) * 60.0 + jitter(20))
    poly = [
        [
            round(float(v), 2)
            for xy in zip(cx + r * np.cos(ang), cy + r * np.sin(ang), strict=True)
            for v in xy
        ]
    ]
    m = _poly_mask(poly, height, width)
    add(6, m, poly, _poly_bbox(poly), float(m.sum()))
    # 7: small disc as compressed RLE
    x0, y0 = cell(7)
    cx, cy, r = x0 + cw / 2 + jitter(15), y0 + ch / 2 + jitter(20), 9 + jitter(2)
    m = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r**2
    rle = _rle_of(m)
    bbox, area = _rle_bbox_area(m)
    add(7, m, {"size": rle["size"], "counts": rle["counts"].decode("ascii")}, bbox, area)
    return np.clip(img, 0, 255).astype(np.uint8), anns


def write_synthetic_coco(
    out_dir: str | Path,
    n_images: int = 4,
    height: int = 256,
    width: int = 384,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``images/<id>.png`` and ``annotations/instances.json`` under ``out_dir``.

    Returns:
        (annotation json, image folder).
    """
    from PIL import Image

    out = Path(out_dir)
    img_dir = out / "images"
    ann_dir = out / "annotations"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        img, anns = make_image(image_id, height, width, seed)
        name = f"{image_id:012d}.png"
        Image.fromarray(img).save(img_dir / name, optimize=True)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        annotations.extend(anns)
    data = {
        "info": {"description": "esam synthetic shapes", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    ann_path = ann_dir / "instances.json"
    ann_path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    return ann_path, img_dir


def synthetic_detections(annotations: str | Path, seed: int = 0) -> list[dict[str, Any]]:
    """Detections in COCO results format for a synthetic annotation file.

    One detection per non-crowd instance (its box shifted by up to 2 px, score 0.5-1.0) and one
    low-scoring false positive per image; deterministic for a given ``seed``.
    """
    data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    rng = np.random.default_rng(seed)
    dets: list[dict[str, Any]] = []
    for ann in data["annotations"]:
        if ann.get("iscrowd"):
            continue
        x, y, w, h = ann["bbox"]
        dx, dy = rng.uniform(-2, 2, size=2)
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [round(x + dx, 2), round(y + dy, 2), w, h],
                "score": round(float(rng.uniform(0.5, 1.0)), 4),
            }
        )
    for img in data["images"]:
        dets.append(
            {
                "image_id": img["id"],
                "category_id": 1,
                "bbox": [5.0, 5.0, 30.0, 20.0],
                "score": 0.05,
            }
        )
    return dets


def write_synthetic_detections(
    annotations: str | Path, out_path: str | Path, seed: int = 0
) -> Path:
    """Write :func:`synthetic_detections` to ``out_path``."""
    out = Path(out_path)
    out.write_text(
        json.dumps(synthetic_detections(annotations, seed), separators=(",", ":")) + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic COCO-format sample.")
    parser.add_argument("out_dir")
    parser.add_argument("--n-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ann, _ = write_synthetic_coco(args.out_dir, n_images=args.n_images, seed=args.seed)
    write_synthetic_detections(ann, Path(args.out_dir) / "detections.json", seed=args.seed)
    print(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
