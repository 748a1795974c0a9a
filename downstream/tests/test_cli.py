"""python -m esam_downstream train, then test from the trained checkpoint -> results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("mmcv")
from conftest import TINY_ARCH, tiny_vit  # noqa: E402
from esam_downstream.cli import main, sha256_file  # noqa: E402
from esam_downstream.runtime import allow_mmengine_checkpoints, config_path  # noqa: E402
from esam_downstream.synth import write_ade20k, write_coco_instances  # noqa: E402

from esam.errors import InputError  # noqa: E402
from esam.utils.results import validate_results  # noqa: E402


@pytest.mark.slow
def test_train_then_test_writes_results(
    tiny_backbone_ckpt: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    model = results["model"]
    assert model["checkpoint"] == str(ckpt) and model["checkpoint_sha256"] == sha256_file(ckpt)
    assert model["backbone_sha256"] == sha256_file(tiny_backbone_ckpt[0])
    assert results["model"]["weights"] == "trained"
    # the checkpoint loads strictly: a model it does not fit (here: relative position tables
    # the trained one lacks) is a named error, not a partly loaded model
    mismatched = ["test", *common[:-5], "--checkpoint", str(ckpt), *common[-5:],
                  "model.backbone.rel_pos=true"]  # fmt: skip
    allow_mmengine_checkpoints()
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not [k for k in trained if "rel_pos" in k]
    capsys.readouterr()
    assert main(mismatched) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "rel_pos" in err
    # and test without a checkpoint is refused unless asked for as a smoke run
    assert main(["test", *common[:-5], *common[-5:]]) == 2
    assert "test needs the trained model" in capsys.readouterr().err


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
            "--data-root", str(root), "--work-dir", str(tmp_path / "work"), "--untrained",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert results["task"] == "ade20k-mask2former"
    assert results["model"]["weights"] == "untrained heads (smoke run)"
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


def test_esam_downstream_forwards_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`esam downstream ...` runs this package's command line (installed here)."""
    from esam.cli.main import main as esam_main

    code = esam_main(
        ["downstream", "test", "--task", "coco-maskrcnn", "--backbone", str(tmp_path / "no.pt"),
         "--work-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 2
    assert "backbone checkpoint not found" in capsys.readouterr().err


def test_esam_declares_this_command_line() -> None:
    """esam.cli.downstream (read by esam suite) lists exactly the tasks this package runs."""
    from esam_downstream.cli import TASKS

    from esam.cli.downstream import DOWNSTREAM_TASKS

    assert sorted(DOWNSTREAM_TASKS) == sorted(TASKS)


def test_arch_comes_from_the_backbone(tmp_path: Path) -> None:
    """Without --arch, the shipped config of the backbone's width; other widths: --config."""
    from esam_downstream.cli import backbone_arch

    from esam.checkpoint import save_backbone
    from esam.modeling.vit import ViT

    arch = {"embed_dim": 384, "depth": 1, "num_heads": 6, "patch_size": 16, "mlp_ratio": 4.0,
            "pretrain_img_size": 32, "pos_embed_cls_slot": True}  # fmt: skip
    path = save_backbone(tmp_path / "s.pt", ViT(img_size=32, **arch).state_dict(), arch)
    assert backbone_arch(Path(path)) == "s"
    tiny = save_backbone(tmp_path / "t.pt", tiny_vit().state_dict(), TINY_ARCH)
    with pytest.raises(InputError, match="width 32 has no shipped config"):
        backbone_arch(Path(tiny))
