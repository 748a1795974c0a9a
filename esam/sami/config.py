"""Settings of a SAMI (or MAE) pretraining run: student, decoder, teacher, data and the loop.

Registered configs live in ``esam/configs/pretrain/*.yaml``: ``sami_vit_tiny``,
``sami_vit_small`` and ``sami_vit_base`` carry the paper's recipe; ``mae_vit_tiny`` is the MAE
baseline from the same code; ``tiny`` is a CPU-sized run for the demo and tests. Every field
can be overridden with ``key=value`` (``train.epochs=10``, ``teacher.name=sam_vit_l``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from esam.errors import InputError
from esam.sami.teacher import TEACHER_NAMES
from esam.train.config import OptimConfig, ScheduleConfig, TrainConfig


@dataclass
class StudentConfig:
    """The ViT being pretrained: an EfficientSAM encoder's architecture at the pretraining size."""

    arch: Literal["efficientsam_vitt", "efficientsam_vits", "efficientsam_vitb"] = (
        "efficientsam_vitt"
    )
    """Architecture of an EfficientSAM image encoder (Ti 192/3, S 384/6, B 768/12 heads)."""
    img_size: int = 224
    """Pretraining input side (224 px: 14x14 tokens of 16 px)."""
    drop_path: float = 0.0
    """Stochastic depth rate of the last block (MAE pretrains without it)."""
    embed_dim: int | None = None
    """Token width instead of the architecture's (small CPU models)."""
    depth: int | None = None
    """Number of blocks instead of the architecture's (small CPU models)."""
    num_heads: int | None = None
    """Attention heads instead of the architecture's (small CPU models)."""

    def __post_init__(self) -> None:
        if self.img_size < 16 or self.img_size % 16:
            raise InputError(f"student.img_size must be a multiple of 16, got {self.img_size}")
        if not 0.0 <= self.drop_path < 1.0:
            raise InputError(f"student.drop_path must be in [0, 1), got {self.drop_path}")


@dataclass
class DecoderConfig:
    """The cross-attention decoder that reconstructs the masked tokens."""

    depth: int = 8
    """Decoder blocks (the paper: 8)."""
    dim: int = 512
    """Decoder width (the paper: 512)."""
    heads: int = 16
    """Decoder attention heads."""
    self_attn: bool = False
    """Add self-attention among the masked-token queries (the paper's decoder has none)."""

    def __post_init__(self) -> None:
        if self.depth < 0 or self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise InputError(
                f"decoder: depth >= 0 and dim divisible by heads needed, got depth {self.depth}, "
                f"dim {self.dim}, heads {self.heads}"
            )


@dataclass
class TeacherConfig:
    """The frozen teacher whose features the student reconstructs."""

    name: str = "sam_vit_h"
    """sam_vit_h, sam_vit_l, sam_vit_b (segment-anything files) or efficientsam_vitt/_vits."""
    checkpoint: str | None = None
    """Teacher weights (sam_vit_h_4b8939.pth, efficient_sam_vitt.pt, ...); never downloaded."""
    input_size: int | None = None
    """Side of the teacher's view: None = the student's (224), or e.g. 1024 with its output
    average-pooled to the student's grid."""
    output: Literal["neck", "trunk"] = "neck"
    """Target features: the neck's 256 channels or the last block's width."""
    cache: str | None = None
    """Teacher-feature cache folder (esam pretrain cache-teacher); None runs the teacher online."""
    random_weights: bool = False
    """Untrained teacher weights; only for speed measurements, never for a real run."""

    def __post_init__(self) -> None:
        if self.name not in TEACHER_NAMES:
            raise InputError(
                f"teacher.name must be one of {list(TEACHER_NAMES)}, got {self.name!r}"
            )


@dataclass
class DataConfig:
    """Training images and augmentation."""

    path: str = ""
    """Image folder: ImageNet layout (class sub-folders) or a flat folder of images."""
    scale_min: float = 0.2
    """Smallest crop area of RandomResizedCrop, as a fraction of the image (MAE: 0.2)."""
    flip_prob: float = 0.5
    """Probability of a horizontal flip."""
    eval_path: str | None = None
    """Held-out image folder: after training, the student's reconstruction error there is
    compared with predicting the teacher's mean feature."""
    eval_limit: int = 256
    """At most this many held-out images are evaluated."""

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_min <= 1.0:
            raise InputError(f"data.scale_min must be in (0, 1], got {self.scale_min}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise InputError(f"data.flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.eval_limit < 1:
            raise InputError(f"data.eval_limit must be >= 1, got {self.eval_limit}")


def _pretrain_loop() -> TrainConfig:
    """The paper's loop: 400 epochs, AdamW (0.9, 0.95), wd 0.05, 2.4e-3 at batch 4096."""
    return TrainConfig(
        output_dir="runs/sami",
        precision="bf16",
        epochs=400,
        batch_size=512,
        resume=None,
        optim=OptimConfig(base_lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95)),
        schedule=ScheduleConfig(kind="cosine", warmup_epochs=40),
    )


@dataclass
class SamiConfig:
    """A SAMI (target=teacher) or MAE (target=pixels) pretraining run."""

    CONFIG_KIND = "pretrain"

    student: StudentConfig = field(default_factory=StudentConfig)
    """The ViT being pretrained."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """The cross-attention decoder."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The frozen teacher (unused for target=pixels)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training images and augmentation."""
    target: Literal["teacher", "pixels"] = "teacher"
    """Reconstruct the teacher's features (SAMI) or normalised pixels (MAE)."""
    mask_ratio: float = 0.75
    """Fraction of tokens hidden from the encoder."""
    loss_on: Literal["all", "masked"] | None = None
    """Tokens the loss covers: None = all for SAMI (the paper), masked for MAE."""
    norm_target: bool | None = None
    """Normalise each target token (mean 0, variance 1): None = off for SAMI, on for MAE."""
    train: TrainConfig = field(default_factory=_pretrain_loop)
    """The training loop (epochs, batch per process, optimizer, schedule, checkpoints)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise InputError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
