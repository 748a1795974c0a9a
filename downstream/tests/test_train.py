"""A few CPU training iterations of tiny Mask R-CNN and Mask2Former on generated data,
then evaluation through mmdet's CocoMetric and mmseg's IoUMetric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mmcv")
from esam_downstream.runtime import build_runner, config_path  # noqa: E402
from esam_downstream.synth import write_ade20k, write_coco_instances  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402


class LossRecorder(Hook):
    """Keeps the total training loss of every iteration."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.losses.append(float(outputs["loss"]))


def _falls(losses: list[float]) -> bool:
    """Mean of the last third below the mean of the first third."""
    k = max(1, len(losses) // 3)
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


@pytest.mark.slow
def test_tiny_mask_rcnn_trains_and_evaluates(
    tiny_backbone_ckpt: tuple[Path, Any], tmp_path: Path
) -> None:
    root = tmp_path / "coco"
    write_coco_instances(root, "train", num_images=2, seed=0)
    ann = str(root / "annotations" / "instances_train.json")
    recorder = LossRecorder()
    runner = build_runner(
        config_path("tiny_mask-rcnn_esam-vit_cpu"),
        tmp_path / "work",
        cfg_options={
            "train_dataloader.dataset.data_root": f"{root}/",
            "val_dataloader.dataset.data_root": f"{root}/",
            "test_dataloader.dataset.data_root": f"{root}/",
            "val_evaluator.ann_file": ann,
            "test_evaluator.ann_file": ann,
            "train_cfg.max_iters": 12,
            "train_cfg.val_interval": 12,
            "optim_wrapper.optimizer.lr": 1e-3,
            # seeded: unseeded, the sampling of proposals and points varies between runs, and
            # 12 steps on 2 images are too few for the loss to fall on every draw
            "randomness": {"seed": 0},
        },
        backbone=tiny_backbone_ckpt[0],
        extra_hooks=[recorder],
    )
    runner.train()
    assert len(recorder.losses) == 12 and all(math.isfinite(v) for v in recorder.losses)
    assert _falls(recorder.losses), recorder.losses
    metrics = runner.test()
    assert {"coco/bbox_mAP", "coco/segm_mAP"} <= set(metrics)


@pytest.mark.slow
def test_tiny_mask2former_trains_and_evaluates(
    tiny_backbone_ckpt: tuple[Path, Any], tmp_path: Path
) -> None:
    root = tmp_path / "ade"
    write_ade20k(root, "training", num_images=2, seed=0)
    recorder = LossRecorder()
    runner = build_runner(
        config_path("tiny_mask2former_esam-vit_cpu"),
        tmp_path / "work",
        cfg_options={
            "train_dataloader.dataset.data_root": str(root),
            "val_dataloader.dataset.data_root": str(root),
            "test_dataloader.dataset.data_root": str(root),
            "train_cfg.max_iters": 12,
            "train_cfg.val_interval": 12,
            "optim_wrapper.optimizer.lr": 1e-3,
            # seeded: unseeded, the sampling of proposals and points varies between runs, and
            # 12 steps on 2 images are too few for the loss to fall on every draw
            "randomness": {"seed": 0},
        },
        backbone=tiny_backbone_ckpt[0],
        extra_hooks=[recorder],
    )
    runner.train()
    assert len(recorder.losses) == 12 and all(math.isfinite(v) for v in recorder.losses)
    assert _falls(recorder.losses), recorder.losses
    metrics = runner.test()
    assert {"mIoU", "aAcc"} <= set(metrics)
