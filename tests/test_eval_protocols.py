"""Protocol presets, padding clicks, dataset checks and run accounting of the zero-shot harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from esam.adapters import Prediction, Prompts, SegmentationAdapter
from esam.data.coco import load_api
from esam.data.image_tasks import default_workers
from esam.data.masks import encode_mask
from esam.data.prompts import PAD_LABEL, PAD_POINT, next_error_click
from esam.data.synthetic import write_synthetic_coco
from esam.errors import InputError
from esam.eval.instseg import InstSegConfig, run_instseg
from esam.eval.metrics import aggregate_miou, size_buckets_of
from esam.eval.protocols import PROTOCOLS, get_protocol, resolve_settings
from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_coco(tmp_path_factory.mktemp("syn"), n_images=3)


def _cfg(ann: Path, img: Path, **kw: Any) -> ZeroShotConfig:
    base: dict[str, Any] = {"model": "oracle", "dataset": "coco", "workers": 0, "progress": False}
    base.update(kw)
    return ZeroShotConfig(annotations=str(ann), images=str(img), **base)


# --- presets ----------------------------------------------------------------------------------


def test_presets_resolve_per_prompt_and_record_only_real_overrides(syn) -> None:
    evit1 = _cfg(*syn, prompt="point1", protocol="efficientvit-sam")
    assert (evit1.click, evit1.include_crowd, evit1.no_error_click) == (
        "center",
        True,
        "negative-origin",
    )
    assert evit1.overrides == {}
    evit3 = _cfg(*syn, prompt="point3", protocol="efficientvit-sam")
    assert evit3.click == "iterative"
    evitbox = _cfg(*syn, prompt="box", protocol="efficientvit-sam")
    assert evitbox.clip_boxes is False and evitbox.size_buckets == "inclusive"
    esam3 = _cfg(*syn, prompt="point3")  # the default preset
    assert (esam3.protocol, esam3.click, esam3.include_crowd) == ("efficientsam", "random", False)
    # a switch equal to the preset is no override; a different one is, and is recorded
    same = _cfg(*syn, prompt="point1", protocol="sam", click="center")
    assert same.overrides == {}
    changed = _cfg(*syn, prompt="point1", protocol="sam", click="random", include_crowd=True)
    assert changed.overrides == {"click": "random", "include_crowd": True}
    config = changed.results_config(1)
    assert config["protocol"] == "sam"
    assert config["protocol_overrides"] == {"click": "random", "include_crowd": True}
    assert config["click"] == "random" and config["include_crowd"] is True
    # settings that do not apply to the prompt are neither overrides nor recorded
    box = _cfg(*syn, prompt="box", click="center")
    assert box.overrides == {} and box.results_config(1)["click"] is None
    one = _cfg(*syn, prompt="point1", protocol="sam", no_error_click="negative-origin")
    assert one.overrides == {} and one.results_config(1)["no_error_click"] is None
    three = _cfg(*syn, prompt="point3", protocol="sam", no_error_click="negative-origin")
    assert three.overrides == {"no_error_click": "negative-origin"}
    assert three.results_config(1)["no_error_click"] == "negative-origin"


def test_every_preset_is_complete_and_unknown_names_are_named() -> None:
    for name, p in PROTOCOLS.items():
        assert p.name == name and p.source and p.description
        resolved, overrides = resolve_settings(name, {}, n_clicks=1)
        assert overrides == {} and resolved["click"] == p.click
    with pytest.raises(ValueError, match="unknown protocol 'ritm'.*efficientsam"):
        get_protocol("ritm")
    with pytest.raises(ValueError, match="unknown protocol settings"):
        resolve_settings("sam", {"clicks": "x"}, n_clicks=1)


def test_unclipped_boxes_reach_the_model_raw(tmp_path: Path) -> None:
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img_dir / "a.png")
    m = np.zeros((20, 30), bool)
    m[0:5, 0:5] = True
    ann = tmp_path / "a.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 1,
                        "category_id": 1,
                        "iscrowd": 0,
                        "area": 25.0,
                        "bbox": [-2.5, -1.0, 7.5, 6.0],
                        "segmentation": encode_mask(m),
                    }
                ],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    seen: list[np.ndarray] = []
    for protocol, expected in (
        ("efficientsam", [0, 0, 5, 5]),
        ("efficientvit-sam", [-2.5, -1, 5, 5]),
    ):
        rec = RecordingAdapter()
        run_zeroshot(_cfg(ann, img_dir, protocol=protocol), adapter=rec)
        assert rec.boxes is not None
        np.testing.assert_array_equal(rec.boxes[0], np.array(expected, np.float32))
        seen.append(rec.boxes)
    assert not np.array_equal(seen[0], seen[1])


class RecordingAdapter(SegmentationAdapter):
    """Predicts the box region filled; remembers the last prompts it was given."""

    name = "recording"
    supports_points = True

    def __init__(self) -> None:
        self.boxes: np.ndarray | None = None
        self.hw = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.hw = image.shape[:2]

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        self.boxes = None if prompts.boxes is None else prompts.boxes.copy()
        q = len(prompts)
        masks = np.zeros((q, 1, *self.hw), bool)
        return Prediction(masks=masks, scores=np.ones((q, 1), np.float32))

    def describe(self) -> dict[str, Any]:
        return {}


# --- clicks -----------------------------------------------------------------------------------


def test_padding_click_is_minus_one_and_negative_origin_is_pixel_zero() -> None:
    gt = np.zeros((10, 10), bool)
    gt[3:7, 3:7] = True
    point, label = next_error_click(gt, gt.copy())
    assert label == PAD_LABEL and tuple(point) == PAD_POINT
    point, label = next_error_click(gt, gt.copy(), no_error="negative-origin")
    assert label == 0 and tuple(point) == (0.0, 0.0)
    with pytest.raises(ValueError, match="no-error click"):
        next_error_click(gt, gt.copy(), no_error="skip")


def test_padding_changes_nothing_in_efficientsam(tiny_model) -> None:
    """(-1, -1) with label -1 is neutral; (0, 0) with label -1 is not (the encoder adds the
    positional encoding of the coordinates even for padding points)."""
    emb = tiny_model.get_image_embeddings(torch.rand(1, 3, 64, 64))
    click = torch.tensor([[[[20.0, 30.0]]]])
    lab = torch.tensor([[[1]]])
    pad = torch.tensor([[[list(PAD_POINT)]]])
    zero = torch.zeros(1, 1, 1, 2)
    pad_lab = torch.tensor([[[PAD_LABEL]]])
    with torch.no_grad():
        alone = tiny_model.predict_masks(emb, click, lab, True, 64, 64)
        padded = tiny_model.predict_masks(
            emb, torch.cat([click, pad], 2), torch.cat([lab, pad_lab], 2), True, 64, 64
        )
        origin = tiny_model.predict_masks(
            emb, torch.cat([click, zero], 2), torch.cat([lab, pad_lab], 2), True, 64, 64
        )
    # the model fills its prompt slots with this padding itself: the same tensors, bit for bit
    assert torch.equal(alone[0], padded[0]) and torch.equal(alone[1], padded[1])
    assert not torch.allclose(alone[0], origin[0])


def test_iterative_padding_clicks_are_recorded_as_minus_one(syn) -> None:
    run = run_zeroshot(_cfg(*syn, prompt="point3", click="iterative"))
    assert run is not None
    assert all(r["points"][1] == [-1.0, -1.0] and r["labels"][1] == -1 for r in run.rows)


class MultimaskLog(SegmentationAdapter):
    """Returns the ground truth as every output; logs (clicks per prompt, multimask) per call."""

    name = "multimask_log"
    supports_points = True
    needs_ground_truth = True

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, bool]] = []

    def set_image(self, image: np.ndarray) -> None:
        pass

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        points = prompts.points
        self.calls.append((None if points is None else points.shape[1], multimask_output))
        assert prompts.gt_masks is not None
        m = 3 if multimask_output else 1
        masks = np.repeat(prompts.gt_masks[:, None], m, axis=1)
        return Prediction(masks=masks, scores=np.ones((len(masks), m), np.float32))

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    ("protocol", "prompt", "want"),
    [
        ("sam", "box", [(None, True)]),
        ("sam", "point1", [(1, True)]),
        ("sam", "point3", [(1, True), (2, False), (3, False)]),  # SAM: single for several
        ("efficientvit-sam", "point3", [(1, True), (2, True), (3, True)]),
        ("efficientsam", "point3", [(3, True)]),  # three random clicks at once
    ],
)
def test_score_single_uses_the_single_output_once_a_prompt_has_several_clicks(
    syn, protocol: str, prompt: str, want: list[tuple[int | None, bool]]
) -> None:
    ann, img = syn
    rec = MultimaskLog()
    cfg = _cfg(ann, img, prompt=prompt, protocol=protocol, limit_images=1)
    run = run_zeroshot(cfg, adapter=rec)
    assert run is not None and rec.calls == want
    multimask = run.results["config"]["multimask_output"]
    assert (multimask is True) == (protocol != "sam")
    # with several clicks at once the same rule picks the single output
    rec = MultimaskLog()
    run_zeroshot(_cfg(ann, img, prompt="point3", click="random", protocol=protocol,
                      limit_images=1, mask_choice="score-single"), adapter=rec)  # fmt: skip
    assert rec.calls == [(3, False)]


def test_instseg_reads_score_single_as_score_for_detector_boxes(tmp_path: Path) -> None:
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=1)
    kw: dict[str, Any] = {"model": "box_fill", "dataset": "coco", "annotations": str(ann),
                          "images": str(img), "detections": str(tmp_path / "d.json")}  # fmt: skip
    sam = InstSegConfig(protocol="sam", **kw)
    assert sam.mask_choice == "score" and sam.overrides == {}
    assert sam.results_config(1)["multimask_output"] is True
    assert InstSegConfig(protocol="sam", mask_choice="score", **kw).overrides == {}
    single = InstSegConfig(protocol="sam", mask_choice="single", **kw)
    assert single.overrides == {"mask_choice": "single"}


# --- size buckets -------------------------------------------------------------------------------


def test_inclusive_size_buckets_count_boundary_areas_twice() -> None:
    assert size_buckets_of(1024.0) == ("medium",)
    assert size_buckets_of(1024.0, "inclusive") == ("small", "medium")
    assert size_buckets_of(9216.0, "inclusive") == ("medium", "large")
    assert size_buckets_of(500.0, "inclusive") == ("small",)
    rows = [{"iou": 50.0, "area": 1024.0}, {"iou": 100.0, "area": 10.0}]
    coco = aggregate_miou(rows)
    inclusive = aggregate_miou(rows, "inclusive")
    assert (coco["n_small"], coco["n_medium"]) == (1, 1)
    assert (inclusive["n_small"], inclusive["n_medium"]) == (2, 1)
    assert inclusive["miou_small"] == 75.0 and coco["miou_small"] == 100.0
    assert inclusive["miou"] == coco["miou"] == 75.0


# --- dataset checks and image accounting ---------------------------------------------------------


def test_dataset_flag_must_match_the_file(syn, tmp_path: Path) -> None:
    ann, _ = syn
    with pytest.raises(InputError, match="--dataset lvis, but this is not an LVIS annotation"):
        load_api("lvis", ann)
    data = json.loads(Path(ann).read_text())
    for c in data["categories"]:
        c["frequency"] = "f"
    for im in data["images"]:
        im["neg_category_ids"] = []
        im["not_exhaustive_category_ids"] = []
    lvis = tmp_path / "lvis.json"
    lvis.write_text(json.dumps(data))
    with pytest.raises(InputError, match="--dataset coco, but this is an LVIS annotation file"):
        load_api("coco", lvis)
    assert load_api("lvis", lvis) is not None


def test_n_images_counts_evaluated_images_only(syn, tmp_path: Path) -> None:
    ann, img = syn
    partial = tmp_path / "img"
    shutil.copytree(img, partial)
    first = sorted(partial.iterdir())[0]
    first.unlink()
    run = run_zeroshot(_cfg(ann, partial, skip_bad_images=True))
    assert run is not None
    ds = run.results["dataset"]
    assert (ds["n_images"], ds["n_images_skipped"], ds["n_images_selected"]) == (2, 1, 3)
    assert run.results["skips"]["image_missing"] == 1


def test_instseg_records_the_same_image_counts(tmp_path: Path) -> None:
    from esam.data.synthetic import write_synthetic_detections

    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=3)
    det = write_synthetic_detections(ann, tmp_path / "det.json")
    first = sorted(Path(img).iterdir())[0]
    first.unlink()
    cfg = InstSegConfig(
        model="box_fill",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        detections=str(det),
        workers=0,
        progress=False,
        skip_bad_images=True,
    )
    run = run_instseg(cfg)
    assert run is not None
    ds = run.results["dataset"]
    assert (ds["n_images"], ds["n_images_skipped"]) == (2, 1)
    assert run.results["metrics"]["n_images"] == 2


def test_instseg_preset_passes_raw_detector_boxes(tmp_path: Path) -> None:
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=1)
    cfg = InstSegConfig(
        model="box_fill",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        detections=str(tmp_path / "d.json"),
        protocol="efficientvit-sam",
    )
    assert cfg.clip_boxes is False and cfg.results_config(1)["protocol"] == "efficientvit-sam"
    assert cfg.results_config(1)["clip_boxes"] is False
    kept = InstSegConfig(
        model="box_fill",
        dataset="coco",
        annotations=str(ann),
        images=str(img),
        detections=str(tmp_path / "d.json"),
        protocol="efficientvit-sam",
        clip_boxes=True,
    )
    assert kept.clip_boxes is True and kept.overrides == {"clip_boxes": True}


# --- defaults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "cores", "expected"),
    [("cpu", 2, 0), ("cpu", 7, 0), ("cpu", 16, 2), ("cpu", 64, 4), ("cuda", 16, 4), ("cuda", 1, 0)],
)
def test_default_workers_follow_device_and_cores(device: str, cores: int, expected: int) -> None:
    assert default_workers(device, cores) == expected


def test_auto_workers_are_recorded(syn) -> None:
    ann, img = syn
    cfg = ZeroShotConfig(model="oracle", dataset="coco", annotations=str(ann), images=str(img))
    assert cfg.workers == default_workers("cpu") and cfg.workers_auto
    assert cfg.results_config(1)["workers_auto"] is True


def test_harness_and_report_agree_on_protocol_names_and_skip_reasons() -> None:
    from esam.data.skips import IMAGE_SKIP_REASONS as harness_reasons
    from esam.utils.results import IMAGE_SKIP_REASONS, PROTOCOL_NAMES

    assert tuple(PROTOCOLS) == PROTOCOL_NAMES
    assert tuple(harness_reasons) == IMAGE_SKIP_REASONS


class QuadrantAdapter(RecordingAdapter):
    """Predicts the image's top-left quadrant whatever the prompt: every later click has to
    correct it."""

    name = "quadrant"

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        q, (h, w) = len(prompts), self.hw
        masks = np.zeros((q, 1, h, w), bool)
        masks[:, :, : h // 2, : w // 2] = True
        return Prediction(masks=masks, scores=np.ones((q, 1), np.float32))


def test_iterative_clicks_land_in_the_previous_predictions_error(syn) -> None:
    from esam.data.coco import load_annotation_set
    from esam.data.masks import decode_mask

    run = run_zeroshot(_cfg(*syn, prompt="point3", click="iterative"), QuadrantAdapter())
    assert run is not None
    aset = load_annotation_set("coco", syn[0], syn[1], include_crowd=False)
    masks = {
        (s.image_id, i.ann_id): decode_mask(i.segmentation, s.height, s.width)
        for s in aset.images
        for i in s.instances
    }
    checked = 0
    for r in run.rows:
        gt = masks[(r["image_id"], r["ann_id"])]
        quadrant = np.zeros_like(gt)
        quadrant[: gt.shape[0] // 2, : gt.shape[1] // 2] = True
        points = np.asarray(r["points"], np.float32)
        for k in (1, 2):  # each later click: from the error of the (same) prediction
            want, label = next_error_click(gt, quadrant, points[:k])
            assert r["labels"][k] == label and points[k].tolist() == want.tolist(), r
            if label == 1:
                assert gt[int(want[1]), int(want[0])] and not quadrant[int(want[1]), int(want[0])]
            elif label == 0:
                assert quadrant[int(want[1]), int(want[0])] and not gt[int(want[1]), int(want[0])]
        checked += int(r["labels"][1] in (0, 1))
    assert checked == len(run.rows) > 0


def test_an_image_without_instances_is_not_read(syn, tmp_path: Path) -> None:
    ann, img = syn
    data = json.loads(ann.read_text())
    data["images"].append({"id": 999, "file_name": "missing.png", "height": 20, "width": 30})
    extended = tmp_path / "instances.json"
    extended.write_text(json.dumps(data))
    run = run_zeroshot(_cfg(extended, img))  # no --skip-bad-images: yet no error
    assert run is not None and "image_missing" not in run.results["skips"]
    assert {r["image_id"] for r in run.rows} == {s["id"] for s in data["images"][:-1]}
