"""Settings of an ImageNet-style classification run: model, data, augmentation, the two loops.

One config serves the three modes of ``esam eval imagenet``:

* ``finetune``: the whole classifier trained with MAE's fine-tuning recipe (``train`` loop,
  ``aug`` augmentation), then evaluated;
* ``linear``: the backbone frozen, its features extracted once into a cache, a BatchNorm + linear
  head trained on them (``linear`` loop), then evaluated;
* ``eval``: a classifier checkpoint (``model.checkpoint``) evaluated as it is.

Registered configs live in ``esam/configs/classify/*.yaml``: ``vit_tiny``, ``vit_small`` and
``vit_base`` carry the paper's (MAE's) recipes; ``tiny`` is a CPU-sized run for tests and the
demo. ``output`` and ``device`` apply to whichever loop runs (the loops' own ``output_dir`` and
``device`` are overwritten by them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from esam.errors import InputError
from esam.train.config import OptimConfig, ScheduleConfig, TrainConfig

Mode = Literal["finetune", "linear", "eval"]

#: ViT sizes: (embed_dim, depth, num_heads), as EfficientSAM's encoders and DeiT/MAE.
ARCHS: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}


@dataclass
class ModelConfig:
    """The classifier: an esam ViT trunk, average or class-token pooling, a norm and a linear
    head."""

    arch: Literal["vit_tiny", "vit_small", "vit_base"] = "vit_tiny"
    """ViT size (Ti 192/3 heads, S 384/6, B 768/12; 12 blocks, patch 16)."""
    embed_dim: int | None = None
    """Token width instead of the architecture's (small CPU models)."""
    depth: int | None = None
    """Number of blocks instead of the architecture's (small CPU models)."""
    num_heads: int | None = None
    """Attention heads instead of the architecture's (small CPU models)."""
    patch_size: int = 16
    """Patch side in pixels."""
    img_size: int = 224
    """Input side; the backbone's position embedding is resized to this grid once, at load."""
    drop_path: float = 0.1
    """Stochastic depth of the last block when fine-tuning (MAE: 0.1 for B, DeiT-Ti/S: 0.1)."""
    pool: Literal["avg", "token"] = "avg"
    """How the last block's tokens become one feature: ``avg`` (global average pooling, MAE's
    fine-tuning and SAMI's) or ``token`` (a learned class token, DeiT's and DINO's; from a timm
    backbone's ``cls_token`` and final ``norm`` when it has them)."""
    head_init_std: float = 2e-5
    """Standard deviation of the head's initial weights (MAE fine-tuning: 2e-5; probe: 0.01)."""
    backbone: str | None = None
    """Backbone checkpoint: an ``esam pretrain export`` file, an EfficientSAM checkpoint (its
    image encoder's trunk), or a timm ViT state dict (DeiT, MAE, DINO). None: random weights."""
    backbone_format: Literal["auto", "esam", "timm"] = "auto"
    """How to read the backbone: auto-detected from its keys, or forced."""
    checkpoint: str | None = None
    """A classifier file written by a run (``RUN_DIR/classifier.pt``): required by mode eval."""
    name: str | None = None
    """Name of the model in the results and the report (default: from the backbone file)."""

    def __post_init__(self) -> None:
        if self.img_size < self.patch_size or self.img_size % self.patch_size:
            raise InputError(
                f"model.img_size {self.img_size} must be a multiple of model.patch_size "
                f"{self.patch_size}"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise InputError(f"model.drop_path must be in [0, 1), got {self.drop_path}")

    def dims(self) -> tuple[int, int, int]:
        """(embed_dim, depth, num_heads) after overrides."""
        e, d, h = ARCHS[self.arch]
        return (self.embed_dim or e, self.depth or d, self.num_heads or h)


@dataclass
class DataConfig:
    """Training and validation images and their labels."""

    train: str = ""
    """Training images in the ImageNet layout (one sub-folder per class, sorted = class index)."""
    val: str = ""
    """Validation images: the ImageNet layout, or a flat folder of images with ``labels``."""
    labels: str | None = None
    """Labels of a flat val folder: one ``FILE LABEL`` line per image (``FILE`` matched by file
    name; ``LABEL`` a class folder name such as a synset, or an integer index into ``synsets``);
    a comma after FILE is allowed (Caffe's val.txt and dataset.txt forms)."""
    synsets: str | None = None
    """Class list that integer labels index, one synset first on each line (synset_words.txt);
    None: ImageNet-1K's 1000 sorted synsets (timm's list)."""
    name: str = "imagenet-1k"
    """Dataset name in the results (the report groups rows by it)."""
    crop_pct: float = 0.875
    """Evaluation resize: the short side to img_size / crop_pct, then a centre crop."""
    eval_batch_size: int = 64
    """Images per evaluation / feature-extraction batch."""
    eval_workers: int = 8
    """DataLoader workers decoding evaluation images."""

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_pct <= 1.0:
            raise InputError(f"data.crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.eval_batch_size < 1 or self.eval_workers < 0:
            raise InputError("data.eval_batch_size must be >= 1 and data.eval_workers >= 0")


@dataclass
class AugConfig:
    """Fine-tuning augmentation (MAE's, through timm's implementations)."""

    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    """timm auto-augment policy: RandAugment with 9 ops magnitude, 0.5 magnitude std."""
    scale: tuple[float, float] = (0.08, 1.0)
    """RandomResizedCrop area range."""
    hflip: float = 0.5
    """Horizontal flip probability."""
    color_jitter: float | None = None
    """Colour jitter strength (timm ignores it when auto_augment is set)."""
    interpolation: Literal["bicubic", "bilinear", "random"] = "bicubic"
    """Resize interpolation."""
    reprob: float = 0.25
    """Random erasing probability."""
    remode: Literal["pixel", "const", "rand"] = "pixel"
    """Random erasing fill."""
    mixup: float = 0.8
    """Mixup alpha (0: off)."""
    cutmix: float = 1.0
    """CutMix alpha (0: off)."""
    mixup_prob: float = 1.0
    """Probability of applying mixup or cutmix to a batch."""
    mixup_switch_prob: float = 0.5
    """Probability of cutmix rather than mixup when both are on."""
    smoothing: float = 0.1
    """Label smoothing."""

    def __post_init__(self) -> None:
        for name in ("hflip", "reprob", "mixup_prob", "mixup_switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"aug.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mixup < 0 or self.cutmix < 0 or not 0.0 <= self.smoothing < 1.0:
            raise InputError("aug.mixup and aug.cutmix must be >= 0, aug.smoothing in [0, 1)")


def _probe_loop() -> TrainConfig:
    """MAE's linear probe: 90 epochs, LARS lr 0.1 per 256 at batch 16384, wd 0, 10 warm-up."""
    return TrainConfig(
        output_dir="runs/imagenet",
        precision="fp32",
        epochs=90,
        batch_size=16384,
        resume=None,
        num_workers=0,
        optim=OptimConfig(name="sgd", base_lr=0.1, weight_decay=0.0, momentum=0.9),
        schedule=ScheduleConfig(kind="cosine", warmup_epochs=10),
    )


@dataclass
class LinearConfig:
    """The linear probe: frozen backbone, cached features, BatchNorm (no affine) + linear head."""

    lars: bool = True
    """LARS (MAE's probe: a per-layer trust ratio on the head's weight) over the SGD settings
    of ``train.optim``; false: plain SGD with momentum (as DINO's probe)."""
    batchnorm: bool = True
    """BatchNorm without affine before the head (MAE): normalises the features' scale."""
    cache: str | None = None
    """Feature cache folder (default RUN_DIR/features); features stored in fp16, reused when
    backbone, images and preprocessing match."""
    train: TrainConfig = field(default_factory=_probe_loop)
    """The probe's loop (its data are cached feature vectors; workers are not needed)."""

    def __post_init__(self) -> None:
        if self.train.optim.name != "sgd":
            raise InputError("linear.train.optim.name must be sgd (LARS wraps SGD's settings)")


def _finetune_loop() -> TrainConfig:
    """MAE's fine-tuning: 100 epochs, AdamW (0.9, 0.999), wd 0.05, 5 warm-up, cosine."""
    return TrainConfig(
        output_dir="runs/imagenet",
        precision="bf16",
        epochs=100,
        batch_size=128,
        resume=None,
        optim=OptimConfig(
            base_lr=2.5e-4, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.75, min_lr=1e-6
        ),
        schedule=ScheduleConfig(kind="cosine", warmup_epochs=5),
    )


@dataclass
class ClassifyConfig:
    """An ImageNet-style classification run (fine-tune, linear probe, or evaluation only)."""

    CONFIG_KIND = "classify"

    mode: Mode = "finetune"
    """``finetune``, ``linear`` (probe on cached features) or ``eval`` (model.checkpoint)."""
    output: str = "runs/imagenet"
    """Run folder: config.yaml, log.jsonl, checkpoints/, classifier.pt, results.json."""
    device: str = "cuda"
    """``cuda`` or ``cpu`` (for whichever loop runs, and evaluation)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The classifier and its initial weights."""
    data: DataConfig = field(default_factory=DataConfig)
    """Images and labels."""
    aug: AugConfig = field(default_factory=AugConfig)
    """Fine-tuning augmentation."""
    train: TrainConfig = field(default_factory=_finetune_loop)
    """The fine-tuning loop (optimizer, layer decay, schedule, checkpoints)."""
    linear: LinearConfig = field(default_factory=LinearConfig)
    """The linear probe."""
