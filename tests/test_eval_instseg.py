"""Instance segmentation from detector boxes: the AP path, detections checks, COCO and LVIS."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from esam.adapters import Prediction, Prompts, SegmentationAdapter
from esam.adapters.efficientsam import EfficientSamAdapter
from esam.data.coco import load_api
from esam.data.images import read_image
from esam.data.masks import decode_mask, encode_mask
from esam.data.synthetic import synthetic_detections, write_synthetic_coco
from esam.eval.instseg import InstSegConfig, evaluate_detections, load_detections, run_instseg
from esam.utils.results import validate_results
from tests.conftest import require_shared
from tests.polygons import with_short_polygon_parts


def _published(text: str, kind: str) -> list[float]:
    """The 12 COCOeval summary numbers cocoapi publishes for one iou type."""
    block = text.split(f"type={kind}")[1].split("type=")[0]
    return [float(v) for v in re.findall(r"\] = ([0-9.]+)", block)]


@pytest.mark.parametrize("kind", ["segm", "bbox"])
def test_fake_results_reproduce_cocoapi_numbers(kind: str) -> None:
    root = require_shared("data", "coco_val2014_fake_results")
    gt = load_api("coco", root / "instances_val2014_100.json")
    dets = json.loads((root / f"instances_val2014_fake{kind}100_results.json").read_text())
    m = evaluate_detections(gt, dets, "coco", iou_type=kind)
    published = _published((root / "val2014_fake_eval_res.txt").read_text(), kind)
    ours = [m[k] for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")]
    np.testing.assert_allclose(np.round(np.array(ours) / 100, 3), published[:6], atol=1e-9)
    # full-precision values of the same evaluation
    full = {"segm": 0.3195452758576433, "bbox": 0.5045806987249628}[kind]
    assert m["ap"] == pytest.approx(100 * full, abs=1e-10)


@pytest.mark.parametrize("max_dets", [1, 100, 300])
def test_coco_ap_is_defined_at_any_detection_limit(max_dets: int) -> None:
    """COCOeval.summarize reads its headline AP at 100 detections whatever maxDets holds."""
    from pycocotools.coco import COCO

    masks = [np.zeros((40, 60), bool), np.zeros((40, 60), bool)]
    masks[0][5:20, 5:30] = True
    masks[1][22:38, 30:58] = True
    rles = [encode_mask(m) for m in masks]
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": 40, "width": 60}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": r,
             "area": float(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0}
            for k, (r, m) in enumerate(zip(rles, masks, strict=True))
        ],
    }  # fmt: skip
    gt.createIndex()
    # the first mask found at a high score, the second at a lower one: AP 100 with two
    # detections allowed, 50 with one (recall stops at one half)
    dets = [
        {"image_id": 1, "category_id": 1, "segmentation": rles[0], "score": 0.9},
        {"image_id": 1, "category_id": 1, "segmentation": rles[1], "score": 0.5},
    ]
    m = evaluate_detections(gt, dets, "coco", max_dets=max_dets)
    want = 100.0 if max_dets > 1 else pytest.approx(100.0 * 51 / 101)
    assert m["ap"] == want and m["ap50"] == want and m["ap75"] == want
    assert m["ap_small"] == want  # both masks are small (under 32x32 pixels)
    assert m["ap_medium"] is None and m["ap_large"] is None  # no such ground truth


class GtLookupAdapter(SegmentationAdapter):
    """A perfect model: for each box, the ground-truth mask whose box overlaps it most.

    The image is recognised by a hash of its pixels, so the adapter works in any order.
    """

    name = "gt_lookup"

    def __init__(self, annotations: Path, images: Path) -> None:
        data = json.loads(annotations.read_text())
        self.ids = {
            hashlib.sha1(read_image(str(images / i["file_name"])).tobytes()).hexdigest(): i["id"]
            for i in data["images"]
        }
        self.anns = data["annotations"]

    def set_image(self, image: np.ndarray) -> None:
        self.hw = image.shape[:2]
        self.image_id = self.ids[hashlib.sha1(image.tobytes()).hexdigest()]

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        assert prompts.boxes is not None
        h, w = self.hw
        out = np.zeros((len(prompts), 1, h, w), bool)
        for k, box in enumerate(prompts.boxes):
            best, best_iou = None, 0.0
            for a in self.anns:
                if a["image_id"] != self.image_id:
                    continue
                x, y, bw, bh = a["bbox"]
                ix = max(0.0, min(box[2], x + bw) - max(box[0], x))
                iy = max(0.0, min(box[3], y + bh) - max(box[1], y))
                iou = ix * iy / ((box[2] - box[0]) * (box[3] - box[1]) + bw * bh - ix * iy)
                if iou > best_iou:
                    best, best_iou = a, iou
            if best is not None:
                out[k, 0] = decode_mask(best["segmentation"], h, w)
        return Prediction(out, np.ones((len(prompts), 1), np.float32))


@pytest.fixture
def syn(tmp_path: Path) -> tuple[Path, Path, Path]:
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=3)
    det = tmp_path / "dets.json"
    det.write_text(json.dumps(synthetic_detections(ann)))
    return ann, img, det


def _cfg(ann: Path, img: Path, det: Path, **kw: Any) -> InstSegConfig:
    base: dict[str, Any] = {"model": "box_fill", "dataset": "coco", "workers": 0, "progress": False}
    base.update(kw)
    return InstSegConfig(annotations=str(ann), images=str(img), detections=str(det), **base)


def test_perfect_masks_give_ap_100(syn: tuple[Path, Path, Path]) -> None:
    ann, img, det = syn
    run = run_instseg(_cfg(ann, img, det), adapter=GtLookupAdapter(ann, img))
    assert run is not None
    m = run.results["metrics"]
    assert m["ap"] == pytest.approx(100.0) and m["ap50"] == pytest.approx(100.0)
    assert m["n_detections"] == 3 * 7 + 3 and m["n_images"] == 3


def test_box_fill_instseg_results_and_files(syn: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ann, img, det = syn
    out = tmp_path / "out" / "inst.json"
    run = run_instseg(_cfg(ann, img, det, output=str(out), save_segm=True))
    assert run is not None
    res = validate_results(json.loads(out.read_text()))
    assert res["task"] == "instseg"
    m = res["metrics"]
    assert 0 < m["ap"] < 100 and m["ap_large"] > m["ap_small"]  # filled boxes fit rectangles best
    assert res["config"]["max_dets"] == 100 and res["config"]["evaluator"].startswith("pycocotools")
    assert (out.parent / res["rows_file"]).is_file()
    segm = json.loads((out.parent / res["files"]["segm"]).read_text())
    assert len(segm) == m["n_detections"] and "counts" in segm[0]["segmentation"]
    keys = [(r["image_id"], r["det_index"]) for r in run.rows]
    assert keys == sorted(keys)


def test_unusable_detections_are_counted(syn: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ann, img, det = syn
    dets = json.loads(det.read_text())
    dets += [
        {"image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9},
        {"image_id": 1, "category_id": 777, "bbox": [1, 1, 5, 5], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5], "score": 0.9},
        {"image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9},
    ]
    path = tmp_path / "more.json"
    path.write_text(json.dumps(dets))
    run = run_instseg(_cfg(ann, img, path, limit_images=2))
    assert run is not None
    skips = run.results["skips"]
    assert skips["detection_unknown_image"] == 1
    assert skips["detection_unknown_category"] == 1
    assert skips["detection_zero_size_box"] == 1
    assert skips["detection_image_not_evaluated"] == 8 + 1  # image 3's detections (limit 2)
    assert run.results["metrics"]["n_images"] == 2


def test_bad_detection_files(syn: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ann, img, _ = syn
    p = tmp_path / "d.json"
    with pytest.raises(FileNotFoundError, match="detections file not found"):
        load_detections(p)
    p.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_detections(p)
    p.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 1.0}]))
    with pytest.raises(ValueError, match=r"detection #0 needs 'bbox'"):
        load_detections(p)
    p.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]))
    with pytest.raises(ValueError, match="'score'"):
        load_detections(p)
    p.write_text(
        json.dumps([{"image_id": 4242, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}])
    )
    with pytest.raises(ValueError, match="none of the 1 detections"):
        run_instseg(_cfg(ann, img, p))
    p.write_text(json.dumps(synthetic_detections(ann)))
    with pytest.raises(ValueError, match="cannot segment detector boxes"):
        run_instseg(_cfg(ann, img, p, model="oracle"))
    with pytest.raises(ValueError, match="not available for detector boxes"):
        _cfg(ann, img, p, mask_choice="oracle")


def to_lvis(coco_json: Path, images: Path, root: Path) -> tuple[Path, Path]:
    """An LVIS-format copy of a synthetic COCO set, its images in a COCO-style val2017/ folder."""
    data = json.loads(coco_json.read_text())
    (root / "val2017").mkdir(parents=True)
    for im in data["images"]:
        shutil.copy(images / im["file_name"], root / "val2017" / im["file_name"])
        im["coco_url"] = f"http://images.cocodataset.org/val2017/{im['file_name']}"
        im["file_name"] = f"COCO_val2014_{im['file_name']}"
        im["neg_category_ids"] = []
        im["not_exhaustive_category_ids"] = []
    data["annotations"] = [
        {k: v for k, v in a.items() if k != "iscrowd"}
        for a in data["annotations"]
        if not a["iscrowd"]
    ]
    for c in data["categories"]:
        c.update(
            {"frequency": "f", "synset": f"{c['name']}.n.01", "image_count": 3, "instance_count": 3}
        )
    path = root / "lvis.json"
    path.write_text(json.dumps(data))
    return path, root


def test_lvis_instseg_and_zero_shot(syn: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ann, img, det = syn
    lvis_ann, lvis_root = to_lvis(ann, img, tmp_path / "lvis")
    run = run_instseg(
        _cfg(lvis_ann, lvis_root, det, dataset="lvis"), adapter=GtLookupAdapter(ann, img)
    )
    assert run is not None
    m = run.results["metrics"]
    assert m["ap"] == pytest.approx(100.0) and m["ap_frequent"] == pytest.approx(100.0)
    assert m["ap_rare"] is None  # no rare categories
    assert run.results["config"]["max_dets"] == 300

    from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot

    zs = run_zeroshot(
        ZeroShotConfig(
            model="oracle",
            dataset="lvis",
            annotations=str(lvis_ann),
            images=str(lvis_root),
            workers=0,
            progress=False,
        )
    )
    assert zs is not None and zs.results["metrics"]["miou"] == 100.0
    assert zs.results["metrics"]["n_instances"] == 21


def test_lvis_max_dets_keeps_the_top_scores(syn: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ann, img, det = syn
    lvis_ann, lvis_root = to_lvis(ann, img, tmp_path / "lvis")
    run = run_instseg(_cfg(lvis_ann, lvis_root, det, dataset="lvis", max_dets=3))
    assert run is not None
    assert run.results["skips"]["detection_over_max_dets"] == 3 * (8 - 3)
    kept: dict[int, list[float]] = {}
    for r in run.rows:
        kept.setdefault(r["image_id"], []).append(r["score"])
    given: dict[int, list[float]] = {}
    for d in json.loads(det.read_text()):
        given.setdefault(d["image_id"], []).append(d["score"])
    for image_id, scores in kept.items():
        assert sorted(scores, reverse=True) == sorted(given[image_id], reverse=True)[:3]


def test_lvis_sample_from_shared_zero_shot_oracle() -> None:
    lvis_dir = require_shared("data", "lvis_v0.5_val100")
    from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot

    run = run_zeroshot(
        ZeroShotConfig(
            model="oracle",
            dataset="lvis",
            annotations=str(lvis_dir / "lvis_val_100.json"),
            images=str(lvis_dir),
            workers=0,
            progress=False,
            skip_bad_images=True,
        )
    )
    assert run is not None
    assert run.results["metrics"]["miou"] == 100.0
    assert run.results["metrics"]["n_instances"] == 44
    # 96 of the 100 images are not in the sample; 7 of those have no instance to evaluate,
    # are never read, and so are not counted missing
    assert run.results["skips"]["image_missing"] == 89
    assert run.results["dataset"]["lvis_version"] == "v0.5"


def test_missing_images_and_bad_ground_truth(syn: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ann, img, det = syn
    (img / "000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="image id 2 not found"):
        run_instseg(_cfg(ann, img, det))
    run = run_instseg(_cfg(ann, img, det, skip_bad_images=True))
    assert run is not None
    assert run.results["skips"]["image_missing"] == 1
    assert run.results["skips"]["detection_in_skipped_image"] == 8
    assert run.results["metrics"]["n_images"] == 2  # the skipped image leaves the evaluated set
    data = json.loads(ann.read_text())
    del data["annotations"][0]["segmentation"]
    bad = tmp_path / "bad_gt.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="cannot be evaluated as masks"):
        run_instseg(_cfg(bad, img, det, skip_bad_images=True))


def test_short_polygon_parts_in_the_ground_truth_are_left_out(
    syn: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """pycocotools itself would read a first part of 4 numbers as a box and fail on shorter
    ones; the harness drops such parts, as zero-shot evaluation does."""
    ann, img, det = syn
    clean = run_instseg(_cfg(ann, img, det))
    slivers = with_short_polygon_parts(ann, tmp_path / "slivers.json")
    run = run_instseg(_cfg(slivers, img, det))
    assert clean is not None and run is not None
    assert run.results["metrics"]["ap"] == clean.results["metrics"]["ap"] is not None


def test_detector_boxes_are_clipped_to_the_image(
    syn: tuple[Path, Path, Path], tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    """A box partly outside the image reaches the model clipped; one wholly outside is counted.

    EfficientSAM maps any negative coordinate to -1 (padding), so an unclipped corner at
    x = -0.3 would change the prediction; the harness must give the model the clipped box.
    """
    ann, img, _ = syn
    h, w = 256, 384  # the synthetic images
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [-0.3, 10.0, 50.3, 40.0], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [360.0, 240.0, 40.0, 30.0], "score": 0.8},
        {"image_id": 1, "category_id": 3, "bbox": [-50.0, 10.0, 20.0, 20.0], "score": 0.7},
        {"image_id": 1, "category_id": 3, "bbox": [10.0, 256.0, 20.0, 5.0], "score": 0.6},
    ]
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(dets))
    adapter = EfficientSamAdapter(tiny_model, "efficientsam_vitt")
    run = run_instseg(_cfg(ann, img, path, limit_images=1), adapter=adapter)
    assert run is not None
    assert run.results["config"]["clip_boxes"] is True
    assert run.results["skips"]["detection_box_outside_image"] == 2
    boxes = np.array([r["box"] for r in run.rows], dtype=np.float32)
    np.testing.assert_array_equal(boxes, [[0.0, 10.0, 50.0, 50.0], [360.0, 240.0, w, h]])
    # the harness's masks are the model's masks for the clipped boxes ...
    image = read_image(str(img / "000000000001.png"), (h, w))
    adapter.set_image(image)
    clipped = adapter.predict(Prompts(boxes=boxes))
    assert [r["pred_score"] for r in run.rows] == [float(s) for s in clipped.scores[:, 0]]
    assert [r["mask_area"] for r in run.rows] == [int(m.sum()) for m in clipped.masks[:, 0]]
    # ... which differ from what the unclipped corner (read as padding) would have given
    raw = adapter.predict(Prompts(boxes=np.array([[-0.3, 10.0, 50.0, 50.0]], np.float32)))
    assert not np.array_equal(raw.scores[0], clipped.scores[0])


def test_lvis_evaluation_leaves_numpy_unpatched(
    syn: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """lvis 0.5.3 needs np.float (removed from NumPy); the alias exists only during LVISEval."""
    removed = np.lib.NumpyVersion(np.__version__) >= "1.24.0"  # np.float is gone since 1.24
    ann, img, det = syn
    lvis_ann, lvis_root = to_lvis(ann, img, tmp_path / "lvis")
    run = run_instseg(
        _cfg(lvis_ann, lvis_root, det, dataset="lvis"), adapter=GtLookupAdapter(ann, img)
    )
    assert run is not None and run.results["metrics"]["ap"] == pytest.approx(100.0)
    assert hasattr(np, "float") is not removed


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"workers": -1}, "workers must be >= 0"),
        ({"limit_images": 0}, "limit_images must be >= 1"),
    ],
)
def test_both_run_configs_check_the_shared_settings(tmp_path, kw, message) -> None:
    from esam.eval.zeroshot import ZeroShotConfig

    common = {"model": "box_fill", "dataset": "coco", "annotations": "a.json", "images": "i"}
    with pytest.raises(ValueError, match=message):
        InstSegConfig(**common, detections="d.json", **kw)
    with pytest.raises(ValueError, match=message):
        ZeroShotConfig(**common, **kw)
