"""The EfficientSAM adapter: official outputs, batching, and end-to-end ``esam eval zeroshot`` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import esam
from esam.adapters import Prompts
from esam.adapters.efficientsam import EfficientSamAdapter
from esam.cli.main import main as esam_main
from esam.data.coco import ImageSpec, load_annotation_set
from esam.data.images import read_image
from esam.data.masks import decode_mask
from esam.data.synthetic import sample_paths, write_synthetic_coco
from esam.eval.metrics import SIZES, mask_iou
from esam.eval.outputs import read_rows
from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
from esam.standin import load_standin_weights
from esam.utils.results import validate_results
from tests.conftest import require_shared
from tests.numerics import efficientsam_tolerance, iou_tolerance


@pytest.fixture(scope="module")
def golden_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden stand-in EfficientSAM-Ti weights, in the official file layout."""
    golden = require_shared("golden", "efficientsam")
    out = tmp_path_factory.mktemp("golden") / "efficient_sam_vitt.pt"
    subprocess.run(
        [sys.executable, str(golden / "make_weights.py"), "vitt", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_adapter_reproduces_the_official_model(golden_checkpoint: Path) -> None:
    """Masks and scores of the recorded official forward passes (stretch to 1024, bicubic, > 0)."""
    cases = np.load(require_shared("golden", "efficientsam", "cases_vitt.npz"))
    model = esam.build_model("efficientsam_vitt", checkpoint=str(golden_checkpoint))
    adapter = EfficientSamAdapter(model, "efficientsam_vitt", str(golden_checkpoint))
    for case in ("batch2",):  # two 300x400 images, one click each
        images = cases[f"{case}/image_uint8"]
        shape = cases[f"{case}/full_res_shape"]
        bits = np.unpackbits(cases[f"{case}/full_res_mask_bits"], axis=-1)[..., : shape[-1]].astype(
            bool
        )
        ref_iou = cases[f"{case}/iou_predictions"]
        for b in range(images.shape[0]):
            adapter.set_image(np.ascontiguousarray(images[b].transpose(1, 2, 0)))
            labels = cases[f"{case}/labels"][b].astype(np.int64)
            pred = adapter.predict(Prompts(points=cases[f"{case}/points"][b], labels=labels))
            for q in range(labels.shape[0]):
                order = np.argsort(-ref_iou[b, q], kind="stable")  # the adapter sorts by score
                tol = efficientsam_tolerance() * np.abs(ref_iou[b, q]).max()
                np.testing.assert_allclose(pred.scores[q], ref_iou[b, q][order], atol=tol, rtol=0)
                agree = (pred.masks[q] == bits[b, q][order]).mean()
                assert agree > 0.999, (case, b, q, agree)


@pytest.fixture
def tiny_adapter(tiny_model: torch.nn.Module) -> EfficientSamAdapter:
    return EfficientSamAdapter(tiny_model, "efficientsam_vitt")


def test_one_decoder_call_equals_one_call_per_prompt(
    tiny_adapter: EfficientSamAdapter, rgb_image: np.ndarray
) -> None:
    tiny_adapter.set_image(rgb_image)
    boxes = np.array([[10, 15, 60, 65], [70, 25, 110, 70], [0, 0, 119, 89]], dtype=np.float32)
    batch = tiny_adapter.predict(Prompts(boxes=boxes))
    assert batch.masks.shape == (3, 3, 90, 120)
    assert np.all(np.diff(batch.scores, axis=1) <= 0)  # sorted by predicted IoU
    for q in range(3):
        one = tiny_adapter.predict(Prompts(boxes=boxes[q : q + 1]))
        tol = efficientsam_tolerance(encoder_depth=2) * np.abs(batch.scores).max()
        np.testing.assert_allclose(one.scores[0], batch.scores[q], atol=tol, rtol=0)
        assert (one.masks[0] == batch.masks[q]).mean() > 0.999
    single = tiny_adapter.predict(Prompts(boxes=boxes), multimask_output=False)
    assert single.masks.shape == (3, 1, 90, 120)


def test_harness_with_a_tiny_model_on_generated_data(
    tiny_adapter: EfficientSamAdapter, tmp_path: Path
) -> None:
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=2)
    for prompt, click in (("box", "random"), ("point3", "iterative"), ("point1", "center")):
        cfg = ZeroShotConfig(
            model="efficientsam_vitt",
            dataset="coco",
            annotations=str(ann),
            images=str(img),
            prompt=prompt,
            click=click,
            workers=0,
            progress=False,
        )
        run = run_zeroshot(cfg, adapter=tiny_adapter)
        assert run is not None
        assert run.results["metrics"]["n_instances"] == 14
        assert all(r["n_masks"] == 3 for r in run.rows)
        if click == "iterative":
            assert all(len(r["points"]) == 3 and len(r["iou_per_click"]) == 3 for r in run.rows)
            assert all(set(r["labels"][1:]) <= {0, 1, -1} for r in run.rows)
        # rows (for iterative clicks: the last round) are what the official forward gives
        aset = load_annotation_set("coco", ann, img)
        chosen = one_row_per_size(run.rows)
        checked = check_rows_with_the_official_forward(tiny_adapter.model, aset.images, chosen)
        assert checked == len(chosen) >= 3


def one_row_per_size(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row, and the first row of each size bucket (a few rows to recompute)."""
    keys = {(rows[0]["image_id"], rows[0]["ann_id"])}
    for size in SIZES:
        r = next(r for r in rows if r["size"] == size)
        keys.add((r["image_id"], r["ann_id"]))
    return [r for r in rows if (r["image_id"], r["ann_id"]) in keys]


def check_rows_with_the_official_forward(
    model: torch.nn.Module, specs: list[ImageSpec], rows: list[dict[str, Any]]
) -> int:
    """Recompute rows as the official ``forward`` does and compare IoU to 1e-3 points.

    One ``model(images, points, labels)`` call per prompt (the image re-encoded each time),
    the output with the highest predicted IoU, mask = logits > 0, IoU against the decoded
    ground truth computed here. Returns the number of rows checked.
    """
    by_key = {(r["image_id"], r["ann_id"]): r for r in rows}
    checked = 0
    with torch.inference_mode():
        for spec in specs:
            todo = [i for i in spec.instances if (spec.image_id, i.ann_id) in by_key]
            if not todo:
                continue
            assert spec.path is not None
            image = read_image(spec.path, (spec.height, spec.width))
            tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            for inst in todo:
                row = by_key[(spec.image_id, inst.ann_id)]
                if "box" in row:
                    points = torch.tensor(row["box"], dtype=torch.float32).reshape(1, 1, 2, 2)
                    labels = torch.tensor([[[2, 3]]])
                else:
                    points = torch.tensor(row["points"], dtype=torch.float32)[None, None]
                    labels = torch.tensor(row["labels"])[None, None]
                logits, iou = model(tensor, points, labels)
                best = int(iou[0, 0].argmax())
                mask = (logits[0, 0, best] > 0).numpy()
                gt = decode_mask(inst.segmentation, spec.height, spec.width)
                inter = np.logical_and(mask, gt).sum()
                union = np.logical_or(mask, gt).sum()
                expected = 100.0 * inter / union if union else 0.0
                key = (spec.image_id, inst.ann_id)
                # pixels within rounding of the threshold may flip: 0.1 % of the mask at most
                flippable = max(1, int(0.001 * (mask.sum() + gt.sum())))
                assert row["iou"] == pytest.approx(
                    expected, abs=iou_tolerance(int(union), flippable)
                ), key
                score_tol = efficientsam_tolerance() * float(iou[0, 0].abs().max())
                assert row["pred_score"] == pytest.approx(float(iou[0, 0, best]), abs=score_tol), (
                    key
                )
                assert row["mask_index"] == 0  # outputs are sorted by predicted IoU
                checked += 1
    return checked


def _cli(argv: list[str]) -> int:
    return esam_main(["eval", "zeroshot", *argv, "--workers", "0", "--no-progress"])


def test_cli_end_to_end_on_the_shipped_sample(tmp_path: Path) -> None:
    """Runs without ../shared: stand-in weights saved as an esam checkpoint, the shipped sample."""
    ckpt = tmp_path / "standin_vitt.pt"
    model = load_standin_weights(esam.build_model("efficientsam_vitt"))
    esam.save_checkpoint(model, ckpt, model_name="efficientsam_vitt")
    ann, img = sample_paths()
    out = tmp_path / "zs.json"
    rc = _cli(
        [
            "--model",
            "efficientsam_vitt",
            "--checkpoint",
            str(ckpt),
            "--dataset",
            "coco",
            "--annotations",
            str(ann),
            "--images",
            str(img),
            "--prompt",
            "box",
            "--limit-images",
            "1",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    res = validate_results(json.loads(out.read_text()))
    assert res["model"]["checkpoint_sha256"] and res["config"]["prompt"] == "box"
    rows = read_rows(out.with_name(res["rows_file"]))
    assert res["metrics"]["n_instances"] == len(rows) == 7
    assert res["metrics"]["miou"] == pytest.approx(np.mean([r["iou"] for r in rows]), abs=1e-9)
    # several rows (the first, and one per size bucket) recomputed with the official forward
    aset = load_annotation_set("coco", ann, img, limit_images=1)
    chosen = one_row_per_size(rows)
    assert check_rows_with_the_official_forward(model, aset.images, chosen) == len(chosen) >= 3


@pytest.mark.slow
def test_cli_end_to_end_on_coco_mini_matches_the_official_forward(
    golden_checkpoint: Path, tmp_path: Path
) -> None:
    """Golden weights on real COCO images; the first rows re-checked with the official forward."""
    coco = require_shared("data", "coco_val2017_mini")
    ann = coco / "annotations" / "instances_val2017.json"
    out = tmp_path / "coco.json"
    rc = _cli(
        [
            "--model",
            "efficientsam_vitt",
            "--checkpoint",
            str(golden_checkpoint),
            "--dataset",
            "coco",
            "--annotations",
            str(ann),
            "--images",
            str(coco / "val2017"),
            "--prompt",
            "box",
            "--limit-images",
            "3",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    res = validate_results(json.loads(out.read_text()))
    rows = read_rows(out.with_name(res["rows_file"]))
    assert (
        res["dataset"]["n_images"] == 3 and res["metrics"]["n_instances"] == len(rows) == 20 + 2 + 2
    )
    # the 24 annotations of images 139, 802 and 11813 are all kept (none is a crowd region)
    assert sum(res["skips"].values()) == 0
    # the official forward re-encodes the image for each prompt; the harness must agree
    model = esam.build_model("efficientsam_vitt", checkpoint=str(golden_checkpoint))
    aset = load_annotation_set("coco", ann, coco / "val2017", limit_images=3)
    spec = aset.images[1]  # image 802: two instances
    assert spec.path is not None
    image = read_image(spec.path, (spec.height, spec.width))
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    by_ann = {r["ann_id"]: r for r in rows}
    with torch.inference_mode():
        for inst in spec.instances:
            row = by_ann[inst.ann_id]
            box = torch.tensor(row["box"]).reshape(1, 1, 2, 2)
            logits, iou = model(tensor, box, torch.tensor([[[2, 3]]]))
            mask = (logits[0, 0, int(iou[0, 0].argmax())] > 0).numpy()
            gt = decode_mask(inst.segmentation, spec.height, spec.width)
            union = int(np.logical_or(mask, gt).sum())
            flippable = max(1, int(0.001 * (mask.sum() + gt.sum())))
            assert float(mask_iou(mask, gt)) == pytest.approx(
                row["iou"], abs=iou_tolerance(union, flippable)
            )


def test_adapter_builds_the_architecture_stored_in_an_esam_checkpoint(tmp_path: Path) -> None:
    """A reduced model saved with its config loads by registry name (CLI --checkpoint)."""
    from esam.adapters import build_adapter

    model = load_standin_weights(
        esam.build_model("efficientsam_vitt", img_size=128, encoder_depth=1)
    )
    ckpt = esam.save_checkpoint(
        model, tmp_path / "tiny.pt", "efficientsam_vitt", model.config.to_dict()
    )
    adapter = build_adapter("efficientsam_vitt", str(ckpt))
    assert isinstance(adapter, EfficientSamAdapter)
    assert adapter.model.config == model.config
    assert adapter.describe()["config"]["encoder_depth"] == 1
    for key, value in model.state_dict().items():
        assert torch.equal(adapter.model.state_dict()[key], value), key
    with pytest.raises(
        ValueError, match="is for model 'efficientsam_vitt', not 'efficientsam_vits'"
    ):
        build_adapter("efficientsam_vits", str(ckpt))
    # without a stored config the registry's architecture applies, and the weights must fit it
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ValueError, match="does not match the model"):
        build_adapter("efficientsam_vitt", str(bare))
