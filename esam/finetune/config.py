"""Settings of an EfficientSAM fine-tuning run: model, initialisation, data, prompts, loss, loop.

Registered configs live in ``esam/configs/finetune/*.yaml``: ``efficientsam_vitt`` and
``efficientsam_vits`` carry the paper's recipe (SA-1B, 1024 px, AdamW 4e-4, batch 128, 5
epochs); ``tiny`` trains a small model from scratch on a CPU in minutes. Every field can be
overridden with ``key=value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from esam.errors import InputError
from esam.train.config import OptimConfig, ScheduleConfig, TrainConfig

#: The parts of an EfficientSAM that ``model.freeze`` can name.
FreezablePart = Literal["image_encoder", "prompt_encoder", "mask_decoder"]
FREEZABLE_PARTS: tuple[str, ...] = get_args(FreezablePart)


@dataclass
class ModelConfig:
    """The EfficientSAM being trained and where its first weights come from."""

    arch: Literal["efficientsam_vitt", "efficientsam_vits", "efficientsam_vitb"] = (
        "efficientsam_vitt"
    )
    """Architecture (EfficientSAM-Ti, -S, or a ViT-B-sized encoder)."""
    img_size: int = 1024
    """Encoder input side (1024 for the released models; smaller for CPU runs)."""
    encoder_depth: int | None = None
    """Encoder blocks instead of the architecture's (small CPU models)."""
    encoder_embed_dim: int | None = None
    """Encoder width instead of the architecture's (small CPU models)."""
    encoder_num_heads: int | None = None
    """Encoder attention heads instead of the architecture's (small CPU models)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further :class:`esam.EfficientSamConfig` fields to change (e.g. ``patch_size``,
    ``neck_dim``, ``decoder_mlp_dim`` for small CPU models); stored in ``model.pt``."""
    backbone: str | None = None
    """Backbone checkpoint for the image encoder's trunk (esam pretrain export, or an
    EfficientSAM checkpoint's image encoder); None: random (or from init_checkpoint)."""
    init_checkpoint: str | None = None
    """EfficientSAM checkpoint (official layout accepted) to start the whole model from; the
    backbone, when also given, then replaces its encoder trunk."""
    freeze: list[FreezablePart] = field(default_factory=list)
    """Parts kept at their starting weights (no gradient, not in the optimizer), e.g.
    ``[image_encoder]`` to train the prompt encoder and mask decoder on an encoder that stays
    as it is; a frozen image encoder runs without autograd, so none of its activations are
    kept. A frozen part must start from a checkpoint (``init_checkpoint``, or ``backbone``
    for the image encoder)."""

    def __post_init__(self) -> None:
        if self.img_size < 64 or self.img_size % 16:
            raise InputError(f"model.img_size must be a multiple of 16, >= 64, got {self.img_size}")
        parts = set(self.freeze)
        if parts == set(FREEZABLE_PARTS):
            raise InputError("model.freeze names every part of the model: nothing would train")
        if self.init_checkpoint is None:
            random = parts - ({"image_encoder"} if self.backbone is not None else set())
            if random:
                raise InputError(
                    f"model.freeze names {sorted(random)}, which would stay at random weights: "
                    "start them from a checkpoint (--init-checkpoint; --backbone for the image "
                    "encoder) or train them"
                )


@dataclass
class DataConfig:
    """SA-1B-format training data."""

    path: str = ""
    """SA-1B data: a folder of sa_*.jpg + sa_*.json pairs, a folder of tar shards, or tar files
    (comma-separated)."""
    max_masks: int = 64
    """Masks sampled per image per step (fewer when an image has fewer)."""
    min_mask_area: int = 16
    """Masks smaller than this many pixels (at the loss resolution) are not sampled."""
    note: str | None = None
    """What the data is, recorded with the weights (``finetuned on <note>``) and shown by the
    report beside every number of the model, e.g. ``synthetic data (esam data synth-sa1b)``."""

    def __post_init__(self) -> None:
        if self.max_masks < 1:
            raise InputError(f"data.max_masks must be >= 1, got {self.max_masks}")
        if self.min_mask_area < 1:
            raise InputError(f"data.min_mask_area must be >= 1, got {self.min_mask_area}")


@dataclass
class PromptConfig:
    """SAM's interactive prompting: a first box or point, then corrective clicks."""

    box_prob: float = 0.5
    """Probability that a mask's first prompt is its (jittered) box rather than one point."""
    box_noise: float = 0.1
    """Box-corner noise: standard deviation as a fraction of the box side."""
    box_noise_max: float = 20.0
    """Largest box-corner noise standard deviation, in pixels of a 1024 px image."""
    corrective_rounds: int = 4
    """Rounds that add a click in the previous prediction's error region (at most the
    decoder's prompt slots allow: 6, of which a box takes 2)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.box_prob <= 1.0:
            raise InputError(f"prompts.box_prob must be in [0, 1], got {self.box_prob}")
        if self.corrective_rounds < 0:
            raise InputError(
                f"prompts.corrective_rounds must be >= 0, got {self.corrective_rounds}"
            )


@dataclass
class LossConfig:
    """SAM's loss: focal + dice (20:1) on the best of the outputs, plus IoU-prediction MSE."""

    focal_weight: float = 20.0
    """Weight of the focal loss."""
    dice_weight: float = 1.0
    """Weight of the dice loss."""
    iou_weight: float = 1.0
    """Weight of the IoU-prediction MSE."""
    resolution: Literal["low", "full"] = "low"
    """Where masks are compared: the decoder's low-resolution logits against downsampled
    targets (memory bounded), or logits upsampled to the encoder input."""


@dataclass
class MemoryConfig:
    """Trading compute for activation memory."""

    recompute_rounds: bool = False
    """Keep no decoder activations from a prompt round's forward to the backward pass: each
    round's decoder and loss run again during backward (``torch.utils.checkpoint``), so one
    round's activations are alive at a time instead of every round's. Same gradients; the
    decoder's forward runs twice."""


#: Prompts a validation can score (each as ``esam eval zeroshot --prompt`` scores it).
ValPrompt = Literal["box", "point1", "point3"]


@dataclass
class ValConfig:
    """Held-out data scored during training, as ``esam eval zeroshot --dataset sa1b`` scores it."""

    path: str | None = None
    """SA-1B-format held-out data (folders or tar shards, comma-separated); None: no
    validation."""
    every_epochs: int = 1
    """Validate after every this many epochs; 0: only at the end of the run (always then)."""
    prompts: list[ValPrompt] = field(default_factory=lambda: ["box", "point1"])
    """Prompts scored, each giving ``val_<prompt>_miou`` (the harness's default protocol:
    annotation boxes clipped to the image, clicks at random inside the mask, seeded per
    instance; the output of highest predicted IoU)."""
    max_images: int | None = None
    """Score only the first N images by id; None: all."""
    seed: int = 0
    """Seed of the clicks (the harness's ``--seed``)."""

    def __post_init__(self) -> None:
        if self.every_epochs < 0:
            raise InputError(f"val.every_epochs must be >= 0, got {self.every_epochs}")
        if not self.prompts:
            raise InputError("val.prompts is empty: name box, point1 or point3")
        if self.max_images is not None and self.max_images < 1:
            raise InputError(f"val.max_images must be >= 1, got {self.max_images}")


def _finetune_loop() -> TrainConfig:
    """The paper's optimiser and schedule (5 epochs, AdamW 4e-4 (0.9, 0.999), wd 0.1) at 2
    images per process: the activations of 64 masks over every prompt round bound them. The
    paper's batch of 128 also needs ``accum_steps`` x processes = 64, which the recipe configs
    set (8 accumulated micro-batches on 8 processes)."""
    return TrainConfig(
        output_dir="runs/finetune",
        precision="bf16",
        epochs=5,
        batch_size=2,
        resume=None,
        clip_grad=None,
        optim=OptimConfig(lr=4e-4, weight_decay=0.1, betas=(0.9, 0.999)),
        schedule=ScheduleConfig(kind="linear", warmup_steps=250),
    )


@dataclass
class FinetuneConfig:
    """An EfficientSAM fine-tuning run on SA-1B-format data."""

    CONFIG_KIND = "finetune"

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model and its initialisation."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    """Prompt sampling."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The loss."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """Activation memory."""
    val: ValConfig = field(default_factory=ValConfig)
    """Held-out data scored during training (``--val-data``)."""
    train: TrainConfig = field(default_factory=_finetune_loop)
    """The training loop (images per process per step, optimizer, schedule, checkpoints)."""
