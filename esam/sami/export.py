"""``esam pretrain export``: the student trunk of a pretraining run as a backbone checkpoint.

The backbone file (:func:`esam.checkpoint.save_backbone`) holds the ViT trunk's weights, its
architecture and where it comes from (run folder, checkpoint, step, method and teacher). Every
consumer reads it the same way: :func:`esam.build.build_backbone` for classification and
detection backbones, :func:`esam.build.load_backbone_into` for EfficientSAM's image encoder
(its position embedding is stored at the pretraining grid and resized to 64x64 at run time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from esam.checkpoint import CheckpointError, arch_of_trunk, save_backbone
from esam.train.checkpointing import find_run_checkpoint, load_checkpoint

ENCODER_PREFIX = "encoder."


def trunk_architecture(config: dict[str, Any], trunk: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The backbone ``arch`` of a pretraining run's student (from its config and weights)."""
    from esam.build import MODEL_CONFIGS

    student = config.get("student") or {}
    arch_name = student.get("arch", "efficientsam_vitt")
    if arch_name not in MODEL_CONFIGS:
        raise CheckpointError(f"the run's student architecture {arch_name!r} is unknown")
    heads = student.get("num_heads") or MODEL_CONFIGS[arch_name].encoder_num_heads
    return arch_of_trunk(trunk, int(heads), "the run's student")


def export_backbone(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str]
) -> tuple[Path, dict[str, Any]]:
    """Write the student trunk of a run's newest checkpoint (or of a checkpoint file) to ``out``.

    Returns:
        (the backbone file, its ``arch``).

    Raises:
        FileNotFoundError: no run folder or checkpoint.
        CheckpointError: the checkpoint is not a pretraining checkpoint.
    """
    path = find_run_checkpoint(run_dir, "esam pretrain")
    state = load_checkpoint(path)
    model_state = state.get("model")
    config = state.get("config") or {}
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' state)")
    trunk = {
        k[len(ENCODER_PREFIX) :]: v for k, v in model_state.items() if k.startswith(ENCODER_PREFIX)
    }
    if "patch_embed.proj.weight" not in trunk or "pos_embed" not in trunk:
        raise CheckpointError(
            f"{path}: holds no student trunk (no {ENCODER_PREFIX}patch_embed / pos_embed): is it "
            "a checkpoint of esam pretrain?"
        )
    arch = trunk_architecture(config, trunk)
    teacher = config.get("teacher") or {}
    source = {
        "run_dir": str(Path(run_dir)),
        "checkpoint": str(path),
        "step": int(state.get("global_step", 0)),
        "method": "sami" if config.get("target", "teacher") == "teacher" else "mae",
        "teacher": teacher.get("name") if config.get("target", "teacher") == "teacher" else None,
    }
    return save_backbone(out, trunk, arch, source), arch
