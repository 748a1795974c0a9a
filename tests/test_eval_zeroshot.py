"""The zero-shot runner on data the project generates itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from esam.adapters import Prediction, Prompts, SegmentationAdapter
from esam.data.masks import encode_mask
from esam.data.synthetic import write_synthetic_coco
from esam.eval.outputs import read_rows
from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
from esam.utils.io import sha256_file
from esam.utils.results import validate_results


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three synthetic images: 7 non-crowd instances each (2 small, 4 medium, 1 large) + 1 crowd."""
    return write_synthetic_coco(tmp_path_factory.mktemp("syn"), n_images=3)


def _cfg(ann: Path, img: Path, **kw: Any) -> ZeroShotConfig:
    base: dict[str, Any] = {"model": "oracle", "dataset": "coco", "workers": 0, "progress": False}
    base.update(kw)
    return ZeroShotConfig(annotations=str(ann), images=str(img), **base)


@pytest.mark.parametrize(
    ("prompt", "click", "box_source", "mask_choice"),
    [
        ("box", "random", "bbox", "score"),
        ("box", "random", "mask", "single"),
        ("point1", "random", "bbox", "score"),
        ("point1", "center", "bbox", "oracle"),
        ("point3", "random", "bbox", "score"),
        ("point3", "iterative", "bbox", "score"),
    ],
)
def test_oracle_scores_100(
    syn: tuple[Path, Path], prompt: str, click: str, box_source: str, mask_choice: str
) -> None:
    run = run_zeroshot(
        _cfg(*syn, prompt=prompt, click=click, box_source=box_source, mask_choice=mask_choice)
    )
    assert run is not None
    m = run.results["metrics"]
    assert m["miou"] == 100.0
    assert (m["miou_small"], m["miou_medium"], m["miou_large"]) == (100.0, 100.0, 100.0)
    assert (m["n_instances"], m["n_small"], m["n_medium"], m["n_large"]) == (21, 6, 12, 3)
    assert run.results["skips"] == {"crowd": 3}
    if click == "iterative":
        # the first (centre) click is already perfect: later clicks are padding
        assert all(r["labels"] == [1, -1, -1] for r in run.rows)
        assert all(r["iou_per_click"] == [100.0, 100.0, 100.0] for r in run.rows)


def write_handmade(root: Path) -> tuple[Path, Path]:
    """Two instances on a 20x30 image whose box-fill IoU is computed by hand.

    A: a 10x10 square (rows 2-11, cols 4-13), annotated with a 20x10 box -> filled box 200 px,
       IoU 100/200 = 50 %.
    B: an L shape, rows 14-17 x cols 0-9 (40 px) plus rows 18-19 x cols 0-1 (4 px), with its
       tight box (10x6 = 60 px) -> IoU 44/60 = 73.33 %.
    """
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "a.png")
    a = np.zeros((20, 30), bool)
    a[2:12, 4:14] = True
    b = np.zeros((20, 30), bool)
    b[14:18, 0:10] = True
    b[18:20, 0:2] = True
    anns = [
        {
            "id": 1,
            "image_id": 5,
            "category_id": 1,
            "iscrowd": 0,
            "area": 100.0,
            "bbox": [4, 2, 20, 10],
            "segmentation": encode_mask(a),
        },
        {
            "id": 2,
            "image_id": 5,
            "category_id": 1,
            "iscrowd": 0,
            "area": 44.0,
            "bbox": [0, 14, 10, 6],
            "segmentation": encode_mask(b),
        },
    ]
    data = {
        "images": [{"id": 5, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "x"}],
    }
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json", root / "images"


def test_box_fill_matches_hand_computed_iou(tmp_path: Path) -> None:
    ann, img = write_handmade(tmp_path)
    run = run_zeroshot(_cfg(ann, img, model="box_fill"))
    assert run is not None
    ious = {r["ann_id"]: r["iou"] for r in run.rows}
    assert ious[1] == pytest.approx(50.0)
    assert ious[2] == pytest.approx(100 * 44 / 60)
    assert run.results["metrics"]["miou"] == pytest.approx((50.0 + 100 * 44 / 60) / 2)
    assert run.rows[0]["box"] == [4.0, 2.0, 24.0, 12.0]
    # with the tight box of the mask, the square is recovered exactly
    run = run_zeroshot(_cfg(ann, img, model="box_fill", box_source="mask"))
    assert run is not None
    assert {r["ann_id"]: r["iou"] for r in run.rows}[1] == 100.0


def test_results_file_records_everything(syn: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "res" / "box_fill.json"
    run = run_zeroshot(_cfg(*syn, model="box_fill", output=str(out), limit_images=2, seed=3))
    assert run is not None
    res = validate_results(json.loads(out.read_text()))
    assert res["task"] == "zeroshot"
    assert res["model"] == {
        **res["model"],
        "name": "box_fill",
        "checkpoint": None,
        "checkpoint_sha256": None,
    }
    ds = res["dataset"]
    assert ds["annotations_sha256"] == sha256_file(syn[0]) and ds["n_images"] == 2
    cfg = res["config"]
    for key in (
        "prompt",
        "click",
        "box_source",
        "mask_choice",
        "include_crowd",
        "limit_images",
        "seed",
        "device",
        "world_size",
    ):
        assert key in cfg
    assert (cfg["prompt"], cfg["click"], cfg["box_source"], cfg["limit_images"], cfg["seed"]) == (
        "box",
        None,
        "bbox",
        2,
        3,
    )
    assert set(res["metrics"]) >= {"miou", "miou_small", "miou_medium", "miou_large", "n_instances"}
    assert res["skips"] == {"crowd": 2}
    for key in ("git_commit", "versions", "device", "start_time", "end_time"):
        assert key in res["meta"]
    rows = read_rows(out.parent / res["rows_file"])
    assert res["rows_file"] == "box_fill.rows.jsonl"
    assert rows == run.rows and len(rows) == res["metrics"]["n_instances"] == 14
    assert set(rows[0]) >= {"image_id", "ann_id", "area", "prompt", "iou", "mask_index"}
    assert [(r["image_id"], r["ann_id"]) for r in rows] == sorted(
        (r["image_id"], r["ann_id"]) for r in rows
    )


def test_seeded_clicks_are_reproducible(syn: tuple[Path, Path]) -> None:
    def points(seed: int, workers: int = 0) -> list[Any]:
        run = run_zeroshot(_cfg(*syn, prompt="point3", click="random", seed=seed, workers=workers))
        assert run is not None
        return [r["points"] for r in run.rows]

    first = points(0)
    assert first == points(0)
    assert first == points(0, workers=2)  # data workers do not change the clicks
    assert first != points(1)


def test_include_crowd(syn: tuple[Path, Path]) -> None:
    run = run_zeroshot(_cfg(*syn, include_crowd=True))
    assert run is not None
    assert run.results["metrics"]["n_instances"] == 24
    assert "crowd" not in run.results["skips"]
    assert sum(r["iscrowd"] for r in run.rows) == 3


def test_bad_settings_are_rejected(syn: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="iterative"):
        _cfg(*syn, prompt="point3", click="center")
    with pytest.raises(ValueError, match="does not accept point prompts"):
        run_zeroshot(_cfg(*syn, model="box_fill", prompt="point1"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_zeroshot(_cfg(*syn, device="cuda"))


def test_annotation_boxes_are_clipped_to_the_image(tmp_path: Path) -> None:
    """COCO boxes can overhang the image by rounding; prompts are clipped to [0, W] x [0, H]."""
    ann, img = write_handmade(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"][1]["bbox"] = [-0.4, 14, 10.4, 6.2]  # past the left and bottom edges
    outside = dict(data["annotations"][0], id=3, bbox=[31.0, 2.0, 5.0, 5.0])  # right of the image
    data["annotations"].append(outside)
    ann.write_text(json.dumps(data))
    run = run_zeroshot(_cfg(ann, img, model="box_fill"))
    assert run is not None
    assert run.results["config"]["clip_boxes"] is True
    assert run.results["skips"] == {"box_outside_image": 1}
    boxes = {r["ann_id"]: r["box"] for r in run.rows}
    assert boxes == {1: [4.0, 2.0, 24.0, 12.0], 2: [0.0, 14.0, 10.0, 20.0]}
    assert {r["ann_id"]: r["iou"] for r in run.rows}[2] == pytest.approx(100 * 44 / 60)
    point = run_zeroshot(_cfg(ann, img, prompt="point1"))
    assert point is not None and point.results["config"]["clip_boxes"] is None
    assert point.results["metrics"]["n_instances"] == 3  # clicks need no box


class HalfTruth(SegmentationAdapter):
    """Predicts each instance's ground truth left of its last click (or box centre): imperfect,
    prompt-dependent and per-instance, so chunking can be compared row for row."""

    name = "half_truth"
    supports_points = True
    needs_ground_truth = True

    def __init__(self) -> None:
        self.queries: list[int] = []

    def set_image(self, image: np.ndarray) -> None:
        pass

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        gt = prompts.gt_masks
        assert gt is not None
        self.queries.append(len(gt))
        if prompts.points is not None:
            x = prompts.points[:, -1, 0]
        else:
            assert prompts.boxes is not None
            x = (prompts.boxes[:, 0] + prompts.boxes[:, 2]) / 2
        cols = np.arange(gt.shape[-1])[None, None, :]
        masks = (gt & (cols <= np.maximum(x, 0)[:, None, None]))[:, None]
        return Prediction(masks=masks, scores=np.ones((len(gt), 1), np.float32))

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("prompt", ["box", "point3"])
def test_many_instances_are_decoded_in_chunks_with_the_same_rows(
    syn: tuple[Path, Path], prompt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import esam.eval.zeroshot as zeroshot

    click = {"click": "iterative"} if prompt == "point3" else {}
    whole = HalfTruth()
    one = run_zeroshot(_cfg(*syn, prompt=prompt, mask_choice="single", **click), adapter=whole)
    monkeypatch.setattr(zeroshot, "INSTANCES_PER_CALL", 3)
    chunked = HalfTruth()
    two = run_zeroshot(_cfg(*syn, prompt=prompt, mask_choice="single", **click), adapter=chunked)
    assert one is not None and two is not None
    assert max(whole.queries) == 7 and max(chunked.queries) == 3  # 7 instances per image
    assert sum(whole.queries) == sum(chunked.queries)
    assert one.rows == two.rows and 0 < one.results["metrics"]["miou"] < 100
