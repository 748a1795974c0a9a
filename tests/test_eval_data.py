"""Annotation loading, image resolution and every kind of bad input (error or counted skip)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from esam.data.coco import InstanceSpec, load_annotation_set, resolve_image_path
from esam.data.images import ImageReadError, read_image
from esam.data.masks import _compressed_rle_counts, decode_mask, encode_mask, rle_problem
from esam.data.synthetic import make_image, write_synthetic_coco
from esam.errors import InputError
from esam.eval.zeroshot import PreparePrompts, ZeroShotConfig, run_zeroshot
from tests.conftest import require_shared


def _rle(mask: np.ndarray) -> dict[str, Any]:
    return encode_mask(mask)


def write_bad_dataset(root: Path) -> tuple[Path, Path]:
    """A hand-made COCO file with one instance of every problem, and images good and bad.

    Image 1 (16x20) is valid, 2 is missing, 3 is not an image, 4 is smaller than declared.
    """
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    h, w = 16, 20
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(img_dir / "1.png")
    (img_dir / "3.png").write_bytes(b"definitely not a png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img_dir / "4.png")
    good = np.zeros((h, w), dtype=bool)
    good[2:8, 3:12] = True

    def ann(i: int, image_id: int = 1, **kw: Any) -> dict[str, Any]:
        a: dict[str, Any] = {
            "id": i,
            "image_id": image_id,
            "category_id": 1,
            "area": 54.0,
            "bbox": [3, 2, 9, 6],
            "iscrowd": 0,
            "segmentation": _rle(good),
        }
        a.update(kw)
        return {k: v for k, v in a.items() if v is not None}

    anns = [
        ann(1),  # fine
        ann(2, segmentation=None),  # no segmentation
        ann(3, segmentation=[[1, 1, 5, 1]]),  # 2-point polygon
        ann(4, bbox=[3, 2, 0, 6]),  # zero-width box
        ann(5, area=0.0),  # area < 1
        ann(6, iscrowd=1),  # crowd
        ann(7, segmentation=[[1, 1, 5, 1, 5]]),  # odd coordinate count
        ann(8, segmentation={"size": [99, 99], "counts": "abc"}),  # RLE of another size
        ann(9, image_id=77),  # unknown image
        ann(10, segmentation=[[30, 30, 40, 30, 40, 40]]),  # decodes to nothing inside the image
        ann(11, image_id=2),
        ann(12, image_id=3),
        ann(13, image_id=4, segmentation=[[1, 1, 6, 1, 6, 6]]),
        # a point far outside the image: pycocotools' rasteriser would exhaust memory on it
        ann(14, segmentation=[[1, 1, 1e9, 1, 10, 10]]),
    ]
    images = [{"id": i, "file_name": f"{i}.png", "height": h, "width": w} for i in (1, 2, 3, 4)]
    ann_path = root / "instances.json"
    ann_path.write_text(
        json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
        )
    )
    return ann_path, img_dir


@pytest.fixture
def bad_dataset(tmp_path: Path) -> tuple[Path, Path]:
    return write_bad_dataset(tmp_path / "bad")


def test_every_bad_annotation_is_counted(bad_dataset: tuple[Path, Path]) -> None:
    ann, img = bad_dataset
    aset = load_annotation_set("coco", ann, img, need_bbox=True)
    assert dict(aset.skips) == {
        "no_segmentation": 1,
        "polygon_lt_3_points": 1,
        "zero_size_box": 1,
        "area_lt_1": 1,
        "crowd": 1,
        "invalid_polygon": 2,
        "invalid_rle": 1,
        "annotation_unknown_image": 1,
    }
    kept = {i.ann_id for s in aset.images for i in s.instances}
    assert kept == {1, 10, 11, 12, 13}
    # with boxes from masks, a zero-width annotation box does not matter; crowd can be kept
    aset2 = load_annotation_set("coco", ann, img, need_bbox=False, include_crowd=True)
    kept2 = {i.ann_id for s in aset2.images for i in s.instances}
    assert {4, 6} <= kept2 and "zero_size_box" not in aset2.skips


def test_missing_image_is_a_clear_error(bad_dataset: tuple[Path, Path]) -> None:
    ann, img = bad_dataset
    cfg = ZeroShotConfig(
        model="oracle",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        workers=0,
        progress=False,
    )
    with pytest.raises(FileNotFoundError, match=r"image id 2 not found; tried .*2\.png"):
        run_zeroshot(cfg)


def test_corrupt_image_is_a_clear_error(bad_dataset: tuple[Path, Path]) -> None:
    ann, img = bad_dataset
    shutil.copy(img / "1.png", img / "2.png")
    cfg = ZeroShotConfig(
        model="oracle",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        workers=0,
        progress=False,
    )
    with pytest.raises(ValueError, match=r"3\.png: cannot be decoded"):
        run_zeroshot(cfg)


def test_bad_images_counted_when_skipping(bad_dataset: tuple[Path, Path]) -> None:
    ann, img = bad_dataset
    cfg = ZeroShotConfig(
        model="oracle",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        workers=0,
        progress=False,
        skip_bad_images=True,
    )
    run = run_zeroshot(cfg)
    assert run is not None
    skips = run.results["skips"]
    assert skips["image_missing"] == 1
    assert skips["image_corrupt"] == 1
    assert skips["image_size_mismatch"] == 1
    assert skips["instance_in_skipped_image"] == 3
    assert skips["empty_mask"] == 1
    assert [r["ann_id"] for r in run.rows] == [1]
    assert run.results["metrics"]["miou"] == 100.0


def test_read_image_checks_size(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(p)
    assert read_image(str(p), (5, 7)).shape == (5, 7, 3)
    with pytest.raises(ImageReadError, match="5x7 but the annotation file says 7x5") as e:
        read_image(str(p), (7, 5))
    assert e.value.reason == "image_size_mismatch"


def test_annotation_file_errors(tmp_path: Path) -> None:
    img = tmp_path / "img"
    img.mkdir()
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_annotation_set("coco", tmp_path / "nope.json", img)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid JSON"):
        load_annotation_set("coco", bad, img)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="'images' and 'annotations'"):
        load_annotation_set("coco", bad, img)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_annotation_set("coco", bad, tmp_path / "noimg")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_annotation_set("voc", bad, img)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda d: d["images"].append(dict(d["images"][0])),
            r"images\[1\] repeats id 1 of images\[0\]",
        ),
        (
            lambda d: d["annotations"].append(dict(d["annotations"][0])),
            r"annotations\[1\] repeats id 7",
        ),
        (lambda d: d["images"][0].update(id="img1"), r"images\[0\] has id 'img1' \(str\)"),
        (lambda d: d["annotations"][0].update(image_id="1"), r"annotations\[0\] has image_id '1'"),
        (lambda d: d["annotations"][0].pop("id"), r"annotations\[0\] has no 'id' field"),
        (lambda d: d["annotations"][0].update(area=None), r"annotation id 7 has area None"),
    ],
)
def test_ids_and_areas_that_the_indexes_would_mangle_are_named_errors(
    tmp_path: Path, change: Any, match: str
) -> None:
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (8, 6)).save(img / "a.png")
    data: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 8}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 1,
                "area": 4.0,
                "bbox": [1, 1, 2, 2],
                "iscrowd": 0,
                "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]],
            }
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    assert len(load_annotation_set("coco", path, img).images[0].instances) == 1
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=match):
        load_annotation_set("coco", path, img)


def test_masks_decode_from_polygon_rle_and_uncompressed_rle(tmp_path: Path) -> None:
    image, anns = make_image(1)
    h, w = image.shape[:2]
    kinds = set()
    for a in anns:
        m = decode_mask(a["segmentation"], h, w)
        assert m.sum() == pytest.approx(a["area"], abs=0.5), a["id"]
        seg = a["segmentation"]
        kinds.add("polygon" if isinstance(seg, list) else type(seg["counts"]).__name__)
        # the drawn image agrees with its annotation
        colours = image[m].reshape(-1, 3)
        assert (colours == colours[0]).all()
    assert kinds == {"polygon", "str", "list"}
    assert any(a["iscrowd"] for a in anns)


def test_limit_images_takes_the_first_ids(tmp_path: Path) -> None:
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=4)
    data = json.loads(ann.read_text())
    data["images"] = data["images"][::-1]  # file order must not matter
    ann.write_text(json.dumps(data))
    aset = load_annotation_set("coco", ann, img, limit_images=2)
    assert [s.image_id for s in aset.images] == [1, 2]
    assert aset.n_images_in_file == 4


def test_lvis_images_resolve_through_coco_url(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "val2017" / "000000000042.jpg").write_bytes(b"x")
    entry = {
        "id": 42,
        "file_name": "COCO_val2014_000000000042.jpg",
        "coco_url": "http://images.cocodataset.org/val2017/000000000042.jpg",
    }
    path, tried = resolve_image_path(root, entry, "lvis")
    assert path == str(root / "val2017" / "000000000042.jpg")
    # the split folder itself also works
    path, _ = resolve_image_path(root / "val2017", entry, "lvis")
    assert path == str(root / "val2017" / "000000000042.jpg")
    # LVIS v1 entries have no file_name
    path, _ = resolve_image_path(root, {"id": 42, "coco_url": entry["coco_url"]}, "lvis")
    assert path is not None
    missing, tried = resolve_image_path(
        root, {"id": 7, "coco_url": "http://x/val2017/7.jpg"}, "lvis"
    )
    assert missing is None and len(tried) >= 2


def test_lvis_sample_from_shared_loads_and_resolves() -> None:
    lvis_dir = require_shared("data", "lvis_v0.5_val100")
    aset = load_annotation_set("lvis", lvis_dir / "lvis_val_100.json", lvis_dir)
    found = [s for s in aset.images if s.path is not None]
    assert len(aset.images) == 100
    assert len(found) == 4
    assert sum(len(s.instances) for s in found) == 44
    assert aset.info["lvis_version"] == "v0.5"


CORRUPT_RLE_COUNTS: list[Any] = [
    [5, -3, 318],  # a negative run (pycocotools raises OverflowError in the worker)
    [5, 3],  # runs add up to 8 of 320 pixels (pycocotools decodes uninitialised memory)
    "!!!",  # characters outside the compressed alphabet
    "zzzz",  # valid characters, wrong total
    "0`",  # ends inside a number (continuation bit set on the last character)
    "OÿR1",  # not ASCII
    [True, 319],  # booleans are not run lengths
    [1.5, 318.5],  # fractional runs
    None,
    {"a": 1},
]


def write_corrupt_rle_dataset(root: Path) -> tuple[Path, Path, np.ndarray]:
    """Image 1 (16x20): one good instance, then one RLE of each corrupt kind of the right size."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    h, w = 16, 20
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(img_dir / "1.png")
    good = np.zeros((h, w), dtype=bool)
    good[2:8, 3:12] = True
    segs = [_rle(good)] + [{"size": [h, w], "counts": c} for c in CORRUPT_RLE_COUNTS]
    anns = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "area": 54.0,
            "bbox": [3, 2, 9, 6],
            "iscrowd": 0,
            "segmentation": seg,
        }
        for i, seg in enumerate(segs)
    ]
    ann_path = root / "instances.json"
    ann_path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.png", "height": h, "width": w}],
                "annotations": anns,
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    return ann_path, img_dir, good


def test_undecodable_rle_is_a_counted_skip_not_a_worker_crash(tmp_path: Path) -> None:
    ann, img, _ = write_corrupt_rle_dataset(tmp_path / "rle")
    aset = load_annotation_set("coco", ann, img)
    assert dict(aset.skips) == {"invalid_rle": len(CORRUPT_RLE_COUNTS)}
    cfg = ZeroShotConfig(
        model="oracle",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        workers=1,  # masks are decoded in a DataLoader worker
        progress=False,
    )
    run = run_zeroshot(cfg)
    assert run is not None
    assert run.results["skips"] == {"invalid_rle": len(CORRUPT_RLE_COUNTS)}
    assert [r["ann_id"] for r in run.rows] == [1]


def test_the_worker_counts_an_rle_that_slipped_past_loading(tmp_path: Path) -> None:
    """Defence in depth: the worker step never raises on a bad segmentation, it counts it."""
    ann, img, good = write_corrupt_rle_dataset(tmp_path / "rle")
    spec = load_annotation_set("coco", ann, img).images[0]
    bad = [
        InstanceSpec(100 + k, 1, 54.0, 0, (3.0, 2.0, 9.0, 6.0), {"size": [16, 20], "counts": c})
        for k, c in enumerate(CORRUPT_RLE_COUNTS)
    ]
    spec = dataclasses.replace(spec, instances=spec.instances + tuple(bad))
    payload = PreparePrompts("box", "random", "bbox", 0)(spec, read_image(str(spec.path)))
    assert payload.skips == {"invalid_rle": len(CORRUPT_RLE_COUNTS)}
    assert [i.ann_id for i in payload.instances] == [1]
    assert (payload.gt_masks[0] == good).all()


@pytest.mark.parametrize("counts", CORRUPT_RLE_COUNTS[:6])
def test_decode_mask_refuses_corrupt_rle(counts: Any) -> None:
    with pytest.raises(ValueError, match="does not decode to a 16x20 mask"):
        decode_mask({"size": [16, 20], "counts": counts}, 16, 20)


def test_rle_check_accepts_every_valid_encoding() -> None:
    """The pure-Python reading of compressed counts agrees with pycocotools on random masks."""
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (7, 5), (64, 48), (300, 200)):
        for density in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random((h, w)) < density
            if density > 0 and h > 10:  # long runs exercise multi-character numbers
                mask[h // 4 : h // 2, : w // 2] = True
            rle = encode_mask(mask)
            assert rle_problem(rle, h, w) is None
            runs = _compressed_rle_counts(rle["counts"])
            assert runs is not None and sum(runs) == h * w
            values = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
            assert (mask == values.reshape(w, h).T).all()  # column-major runs from background
            assert (decode_mask(rle, h, w) == mask).all()
            flat = mask.ravel(order="F")
            edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
            bounds = np.concatenate([[0], edges, [flat.size]])
            raw = np.diff(bounds).tolist()
            if flat[0]:
                raw = [0, *raw]
            assert rle_problem({"size": [h, w], "counts": raw}, h, w) is None
            assert (decode_mask({"size": [h, w], "counts": raw}, h, w) == mask).all()
    assert rle_problem({"size": [16, 20], "counts": [320]}, 16, 21) == "invalid_rle"
    assert rle_problem({"size": ["16", 20], "counts": [320]}, 16, 20) == "invalid_rle"
    assert rle_problem({"size": [16.0, 20.0], "counts": [320.0]}, 16, 20) is None


def test_short_polygon_parts_are_dropped_and_the_rest_of_the_instance_kept() -> None:
    from esam.data.masks import polygon_problem

    part = [2, 2, 12, 2, 12, 9, 2, 9]
    alone = decode_mask([part], 16, 20)
    assert alone.sum() > 50
    # a 2-point sliver first: pycocotools alone would read a first part of 4 numbers as a box
    for parts in ([[1, 1, 15, 14], part], [part, [3, 3]], [[5, 5, 6, 6], part, [7, 7]]):
        assert polygon_problem(parts) is None
        assert np.array_equal(decode_mask(parts, 16, 20), alone)
    assert polygon_problem([[1, 1, 15, 14], [3, 3]]) == "polygon_lt_3_points"
    with pytest.raises(InputError, match="no polygon part has 3 points"):
        decode_mask([[1, 1, 15, 14]], 16, 20)
