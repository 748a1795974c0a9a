"""python -m esam_downstream train, then test from the trained checkpoint -> results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mmcv")
from esam_downstream.cli import main  # noqa: E402
from esam_downstream.runtime import config_path  # noqa: E402
from esam_downstream.synth import write_ade20k, write_coco_instances  # noqa: E402

from esam.utils.results import validate_results  # noqa: E402


@pytest.mark.slow
def test_train_then_test_writes_results(
    tiny_backbone_ckpt: tuple[Path, Any], tmp_path: Path
) -> None:
    """Mask R-CNN: 2 iterations, then `test` loads the saved .pth (mmengine's torch.load)."""
    root = tmp_path / "coco"
    write_coco_instances(root, "train", num_images=2, seed=1)
    common = [
        "--task", "coco-maskrcnn",
        "--config", str(config_path("tiny_mask-rcnn_esam-vit_cpu")),
        "--backbone", str(tiny_backbone_ckpt[0]),
        "--data-root", str(root),
        "--work-dir", str(tmp_path / "work"),
        "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
        f"val_evaluator.ann_file={root}/annotations/instances_train.json",
        f"test_evaluator.ann_file={root}/annotations/instances_train.json",
    ]  # fmt: skip
    assert main(["train", *common]) == 0
    ckpt = tmp_path / "work" / "iter_2.pth"
    assert ckpt.is_file()
    assert main(["test", *common[:-5], "--checkpoint", str(ckpt), *common[-5:]]) == 0
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    validate_results(results)
    assert results["task"] == "coco-maskrcnn"
    assert set(results["metrics"]) >= {"bbox_mAP", "segm_mAP", "bbox_mAP_s", "segm_mAP_l"}
    assert len(results["model"]["checkpoint_sha256"]) == 64


@pytest.mark.slow
def test_segmentation_test_writes_miou(
    tiny_backbone_ckpt: tuple[Path, Any], tmp_path: Path
) -> None:
    root = tmp_path / "ade"
    write_ade20k(root, "training", num_images=2, seed=1)
    code = main(
        [
            "test", "--task", "ade20k-mask2former",
            "--config", str(config_path("tiny_mask2former_esam-vit_cpu")),
            "--backbone", str(tiny_backbone_ckpt[0]),
            "--data-root", str(root), "--work-dir", str(tmp_path / "work"),
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert results["task"] == "ade20k-mask2former"
    assert all(0.0 <= results["metrics"][k] <= 100.0 for k in ("mIoU", "aAcc"))


def test_missing_backbone_is_a_named_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["test", "--task", "coco-maskrcnn", "--backbone", str(tmp_path / "nope.pt"),
         "--work-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 2
    assert "backbone checkpoint not found" in capsys.readouterr().err
