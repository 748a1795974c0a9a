"""`test` on the shared COCO val2017 mini set and ADE20K sample, when present.

A random (MAE-initialised) ViT-Ti backbone: the numbers mean nothing; what is checked is that
the real on-disk formats flow through the shipped full-size configs to results.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmcv")
from esam_downstream.cli import main  # noqa: E402

from esam.checkpoint import save_backbone  # noqa: E402
from esam.modeling.vit import ViT  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _shared_data(name: str) -> Path:
    root = Path(os.environ.get("ESAM_SHARED", REPO.parent / "shared")) / "data" / name
    if not root.is_dir():
        pytest.skip(f"shared data {name} not found (set ESAM_SHARED)")
    return root


@pytest.fixture(scope="module")
def vit_ti_random(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    vit = ViT(img_size=1024, embed_dim=192, depth=12, num_heads=3)
    vit.init_weights()
    arch = {
        "embed_dim": 192,
        "depth": 12,
        "num_heads": 3,
        "patch_size": 16,
        "mlp_ratio": 4.0,
        "pretrain_img_size": 224,
        "pos_embed_cls_slot": True,
    }
    return Path(save_backbone(tmp_path_factory.mktemp("bb") / "ti.pt", vit.state_dict(), arch))


@pytest.mark.slow
def test_ade20k_sample(vit_ti_random: Path, tmp_path: Path) -> None:
    root = _shared_data("ade20k_sample") / "ADEChallengeData2016"
    args = ["test", "--task", "ade20k-mask2former", "--arch", "t", "--backbone", str(vit_ti_random)]
    args.append("--untrained")  # a random backbone: the formats, not the scores, are tested
    assert main([*args, "--data-root", str(root), "--work-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["metrics"]) == {"mIoU", "aAcc"}


@pytest.mark.slow
def test_coco_val2017_mini(vit_ti_random: Path, tmp_path: Path) -> None:
    """The first 4 images (mmengine's dataset `indices`) through Mask R-CNN at 1024 px."""
    root = _shared_data("coco_val2017_mini")
    args = ["test", "--task", "coco-maskrcnn", "--arch", "t", "--backbone", str(vit_ti_random)]
    args.append("--untrained")
    opts = ["--cfg-options", "test_dataloader.dataset.indices=4"]
    assert main([*args, "--data-root", str(root), "--work-dir", str(tmp_path), *opts]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"bbox_mAP", "segm_mAP"} <= set(results["metrics"])
