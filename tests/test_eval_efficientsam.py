"""The EfficientSAM adapter: official outputs, batching, and end-to-end ``esam eval zeroshot`` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import esam
from esam.cli.main import main as esam_main
from esam.eval.adapters import Prompts
from esam.eval.adapters.efficientsam import EfficientSamAdapter
from esam.eval.data import decode_mask, load_annotation_set, read_image
from esam.eval.metrics import mask_iou
from esam.eval.outputs import read_rows
from esam.eval.synthetic import sample_paths, write_synthetic_coco
from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
from esam.standin import load_standin_weights
from esam.utils.results import validate_results
from tests.conftest import require_shared


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
                np.testing.assert_allclose(pred.scores[q], ref_iou[b, q][order], atol=1e-4)
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
        np.testing.assert_allclose(one.scores[0], batch.scores[q], atol=1e-5)
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
        assert all(0.0 <= r["iou"] <= 100.0 and r["n_masks"] == 3 for r in run.rows)
        if click == "iterative":
            assert all(len(r["points"]) == 3 and len(r["iou_per_click"]) == 3 for r in run.rows)
            assert all(set(r["labels"][1:]) <= {0, 1, -1} for r in run.rows)


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
    assert res["metrics"]["n_instances"] == 7 and 0.0 <= res["metrics"]["miou"] <= 100.0
    assert len(read_rows(out.with_name(res["rows_file"]))) == 7


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
    assert res["skips"].get("crowd", 0) >= 0
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
            assert float(mask_iou(mask, gt)) == pytest.approx(row["iou"], abs=0.05)
