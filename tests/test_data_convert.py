"""COCO / LVIS -> SA-1B: every kept mask round-trips exactly, everything left out is counted."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esam.cli.main import main
from esam.data.convert import coco_to_sa1b
from esam.data.images import read_image
from esam.data.masks import decode_mask
from esam.data.sa1b import SA1BDataset
from esam.data.synthetic import sample_paths, write_synthetic_coco
from esam.data.tarshards import read_member_path
from esam.errors import InputError

ANN, IMG = sample_paths()


def _by_id(ds: SA1BDataset) -> dict[int, tuple[int, dict]]:
    """annotation id -> (dataset index, annotation)."""
    out = {}
    for i in range(len(ds)):
        for ann in ds.record(i).annotations:
            out[ann["id"]] = (i, ann)
    return out


def test_the_shipped_sample_round_trips_every_kept_mask(tmp_path: Path) -> None:
    summary = coco_to_sa1b(ANN, IMG, tmp_path / "out", shard_size=3)
    assert [p.name for p in summary.shards] == ["sa_000000.tar", "sa_000001.tar"]
    assert (summary.n_images, summary.n_masks, summary.n_images_reencoded) == (4, 28, 4)
    assert summary.skips == Counter({"crowd": 4})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sa_000000.tar",
        "sa_000001.tar",
    ]  # no temporary file left behind
    ds = SA1BDataset(tmp_path / "out")
    converted = _by_id(ds)
    coco = json.loads(ANN.read_text())
    sizes = {im["id"]: (im["height"], im["width"], im["file_name"]) for im in coco["images"]}
    kept = [a for a in coco["annotations"] if not a["iscrowd"]]
    assert sorted(converted) == sorted(a["id"] for a in kept)
    for ann in kept:
        h, w, _ = sizes[ann["image_id"]]
        i, out = converted[ann["id"]]
        assert ds.record(i).image_id == ann["image_id"]
        expected = decode_mask(ann["segmentation"], h, w)  # polygons and both RLE forms
        assert np.array_equal(ds.decode_mask(out, h, w), expected)
        assert out["area"] == expected.sum() and isinstance(out["segmentation"]["counts"], str)
    for i in range(len(ds)):  # PNG sources re-encoded as JPEG at quality 95
        rec = ds.record(i)
        h, w, name = sizes[rec.image_id]
        png = read_image(str(IMG / name))
        assert np.abs(ds.read_image(i, (h, w)).astype(int) - png).mean() < 3


def test_invalid_instances_are_counted(tmp_path: Path) -> None:
    data = json.loads(ANN.read_text())
    h, w = data["images"][0]["height"], data["images"][0]["width"]
    base = {"image_id": 1, "category_id": 1, "iscrowd": 0, "area": 10.0, "bbox": [0, 0, 4, 4]}
    data["annotations"] += [
        {**base, "id": 9001, "segmentation": [[1, 1, 5, 5]]},  # 2 points
        {**base, "id": 9002, "segmentation": {"size": [h + 1, w], "counts": [(h + 1) * w]}},
        {**base, "id": 9003, "segmentation": {"size": [h, w], "counts": [h * w]}},  # empty
        {**base, "id": 9004, "segmentation": [[1, 1, 5, 5, "x", 2]]},
    ]
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    summary = coco_to_sa1b(ann, IMG, tmp_path / "out")
    assert summary.n_masks == 28
    assert summary.skips == Counter(
        {
            "crowd": 4,
            "polygon_lt_3_points": 1,
            "invalid_rle": 1,
            "empty_mask": 1,
            "invalid_polygon": 1,
        }
    )
    assert summary.as_dict()["skips"]["empty_mask"] == 1


def _jpeg_set(tmp_path: Path) -> tuple[Path, Path]:
    """The synthetic COCO set with image 1 stored as a JPEG."""
    ann, img = write_synthetic_coco(tmp_path / "coco", n_images=3)
    data = json.loads(ann.read_text())
    entry = data["images"][0]
    Image.open(img / entry["file_name"]).convert("RGB").save(img / "one.jpg", quality=90)
    entry["file_name"] = "one.jpg"
    ann.write_text(json.dumps(data))
    return ann, img


def test_jpegs_are_copied_byte_for_byte(tmp_path: Path) -> None:
    ann, img = _jpeg_set(tmp_path)
    summary = coco_to_sa1b(ann, img, tmp_path / "out")
    assert summary.n_images == 3 and summary.n_images_reencoded == 2
    shard = summary.shards[0]
    assert read_member_path(f"{shard}::sa_1.jpg") == (img / "one.jpg").read_bytes()


def test_bad_images_stop_the_conversion_or_are_counted(tmp_path: Path) -> None:
    ann, img = write_synthetic_coco(tmp_path / "coco", n_images=3)
    (img / "000000000003.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot be decoded.*--skip-bad-images"):
        coco_to_sa1b(ann, img, tmp_path / "a", shard_size=2)
    # neither the shard being written nor the complete one before it is left behind (a partial
    # set would pass for a whole one): the folder this call created is gone, and a folder
    # that existed is empty again
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="cannot be decoded"):
        coco_to_sa1b(ann, img, tmp_path / "a", shard_size=2)
    assert list((tmp_path / "a").iterdir()) == []
    summary = coco_to_sa1b(ann, img, tmp_path / "b", shard_size=2, skip_bad_images=True)
    assert summary.n_images == 2
    # crowd regions are counted on loading, the 7 kept instances of image 3 with the image
    assert summary.skips == Counter(
        {"crowd": 3, "image_corrupt": 1, "instance_in_skipped_image": 7}
    )
    assert [p.name for p in summary.shards] == ["sa_000000.tar"]  # shard 1 had only image 3
    (img / "000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="image id 2 not found"):
        coco_to_sa1b(ann, img, tmp_path / "c")
    with pytest.raises(InputError, match="not empty"):
        coco_to_sa1b(ann, img, tmp_path / "b")


def test_lvis_files_convert_through_coco_url(tmp_path: Path) -> None:
    data = json.loads(ANN.read_text())
    for cat in data["categories"]:
        cat.update(frequency="f", synset=f"{cat['name']}.n.01")
    for im in data["images"]:
        im.update(
            neg_category_ids=[],
            not_exhaustive_category_ids=[],
            coco_url=f"http://images.cocodataset.org/val2017/{im.pop('file_name')}",
        )
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]
    ann = tmp_path / "lvis.json"
    ann.write_text(json.dumps(data))
    root = tmp_path / "coco"
    shutil.copytree(IMG, root / "val2017")
    summary = coco_to_sa1b(ann, root, tmp_path / "out", dataset="lvis")
    assert (summary.n_images, summary.n_masks, summary.skips) == (4, 28, Counter())
    with pytest.raises(InputError, match="LVIS annotation file"):
        coco_to_sa1b(ann, root, tmp_path / "again", dataset="coco")


def test_command_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["data", "coco-to-sa1b", "--annotations", str(ANN), "--images", str(IMG)]
    assert main([*argv, "--out", str(tmp_path / "o"), "--shard-size", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"] == ["sa_000000.tar", "sa_000001.tar"]
    assert summary["skips"] == {"crowd": 4} and summary["n_masks"] == 28
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "not empty" in capsys.readouterr().err
