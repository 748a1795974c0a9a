"""Settings of the training loop every job shares (nested into each run kind's config).

A pretraining, fine-tuning or classification config holds a ``train: TrainConfig`` beside its
model and data settings; the command line, YAML files and ``key=value`` overrides reach these
fields as ``train.epochs``, ``train.optim.base_lr``, ... (see :mod:`esam.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from esam.errors import InputError
from esam.runtime.precision import parse_precision

#: dtype of Muon's Newton-Schulz iterations (``auto``: bfloat16 on CUDA, float32 elsewhere).
MuonNsDtype = Literal["auto", "float32", "bfloat16"]
ScheduleKind = Literal["cosine", "linear", "poly", "step", "constant"]


@dataclass
class OptimConfig:
    """Optimizer, learning rate and weight decay."""

    name: Literal["adamw", "sgd", "muon"] = "adamw"
    """Optimizer: ``adamw``, ``sgd`` (with momentum), or ``muon``: Muon for the weights of the
    linear and convolution layers and AdamW (``betas``, ``eps``) for every other parameter, at
    the same learning rate and weight decay (:mod:`esam.train.muon`)."""
    base_lr: float = 1.5e-4
    """Peak learning rate per 256 samples: the run's peak is base_lr x global batch / 256."""
    lr: float | None = None
    """Absolute peak learning rate; when set, base_lr is ignored."""
    min_lr: float = 0.0
    """Learning rate reached at the end of a cosine, linear or poly decay."""
    weight_decay: float = 0.05
    """Weight decay of the decayed parameters (norms, biases and embeddings get none)."""
    weight_decay_end: float | None = None
    """Weight decay at the end of the run, following the lr schedule's shape after warm-up;
    None keeps it constant."""
    layer_decay: float | None = None
    """Layer-wise lr decay (e.g. 0.75): layer i of n gets lr x layer_decay^(n-1-i); needs a
    model exposing layer_id(name) and num_layer_ids. None: one lr for all layers."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    momentum: float = 0.9
    """SGD momentum."""
    muon_momentum: float = 0.95
    """Muon's Nesterov momentum (``name: muon``)."""
    muon_ns_dtype: MuonNsDtype = "auto"
    """dtype of Muon's Newton-Schulz iterations: ``auto`` is bfloat16 on CUDA (PyTorch's
    choice) and float32 elsewhere (CPUs without bfloat16 matrix units run these small products
    10-20x slower in bfloat16)."""
    no_weight_decay: tuple[str, ...] = ()
    """More parameter names (or module prefixes) exempt from weight decay."""

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or (self.lr is not None and self.lr <= 0):
            raise InputError("learning rates must be > 0")
        if self.min_lr < 0 or self.weight_decay < 0:
            raise InputError("min_lr and weight_decay must be >= 0")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise InputError(f"layer_decay must be in (0, 1], got {self.layer_decay}")


@dataclass
class ScheduleConfig:
    """Shape of the per-step learning-rate schedule: linear warm-up, then a decay."""

    kind: ScheduleKind = "cosine"
    """Decay after warm-up: ``cosine``, ``linear``, ``poly``, ``step`` or ``constant``."""
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 to the peak lr, in epochs (converted to optimizer steps)."""
    warmup_steps: int | None = None
    """Warm-up in optimizer steps; when set, warmup_epochs is ignored."""
    power: float = 1.0
    """Exponent of the ``poly`` decay."""
    milestones: tuple[float, ...] = ()
    """Epochs at which the ``step`` schedule multiplies the lr by gamma."""
    gamma: float = 0.1
    """Factor of the ``step`` schedule at each milestone."""

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise InputError("warm-up must be >= 0")
        if list(self.milestones) != sorted(self.milestones):
            raise InputError(f"milestones must be increasing, got {list(self.milestones)}")


@dataclass
class TrainConfig:
    """The training loop: length, batch, precision, checkpoints, logging."""

    output_dir: str = "runs/train"
    """Run folder: config.yaml, log.jsonl and checkpoints/ are written here."""
    device: str = "cuda"
    """``cuda`` (one GPU per process under torchrun) or ``cpu``."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast and a gradient scaler; CUDA only)."""
    epochs: int = 100
    """Passes over the dataset."""
    batch_size: int = 64
    """Samples per process in one micro-batch."""
    accum_steps: int = 1
    """Micro-batches per optimizer step (global batch = batch_size x accum_steps x processes)."""
    clip_grad: float | None = None
    """Clip the global gradient norm to this value; None: no clipping (the norm is logged)."""
    seed: int = 0
    """Seed of the run (initial weights, data order, per-rank random streams)."""
    num_workers: int = 8
    """DataLoader worker processes per training process."""
    pin_memory: bool = True
    """Pin host memory of batches (CUDA only)."""
    log_every: int = 10
    """Write a log.jsonl line every this many optimizer steps (and at the last step)."""
    save_every_steps: int = 0
    """Save a checkpoint every this many optimizer steps (0: only at epoch ends)."""
    save_every_epochs: int = 1
    """Save a checkpoint every this many epochs (0: only by steps and at the end)."""
    keep_last: int = 3
    """Checkpoints kept on disk (the newest ones)."""
    resume: str | None = "auto"
    """``auto``: continue from the newest checkpoint in output_dir if there is one; a path:
    continue from that checkpoint; None: start fresh (refused if output_dir has checkpoints)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in total (the schedule still spans all epochs)."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer, learning rate and weight decay."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""

    def __post_init__(self) -> None:
        parse_precision(self.precision)
        for name in ("epochs", "batch_size", "accum_steps", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "save_every_steps", "save_every_epochs", "seed"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise InputError(f"clip_grad must be > 0, got {self.clip_grad}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"unknown device {self.device!r}; choose cpu or cuda")
