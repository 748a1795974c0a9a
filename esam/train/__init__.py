"""The training engine shared by pretraining, fine-tuning and classification; it knows no task.

* :mod:`esam.train.config`: :class:`TrainConfig` (loop, optimizer, schedule settings).
* :mod:`esam.train.param_groups`: weight-decay exemptions and layer-wise lr decay.
* :mod:`esam.train.schedules`: per-step warm-up + cosine / linear / poly / step / constant.
* :mod:`esam.train.optim`: optimizer and scheduler from a config.
* :mod:`esam.train.muon`: Muon for the linear layers' weights with AdamW for the rest
  (``optim.name: muon``).
* :mod:`esam.train.loader`: the sharded, resumable DataLoader.
* :mod:`esam.train.checkpointing`: atomic checkpoints, keep-last-k, ``last`` pointer.
* :mod:`esam.train.metrics`: ``log.jsonl``.
* :mod:`esam.train.engine`: :class:`Trainer`, the step loop (and an optional evaluation
  after every N epochs).
* :mod:`esam.train.task_state`: the checkpointed state of tasks that name skipped images.

A job (``esam.sami``, ``esam.finetune``, ...) supplies the model, the dataset and a
:class:`TrainTask` computing ``(loss, logs)`` from a batch.
"""

from esam.train.config import OptimConfig, ScheduleConfig, TrainConfig
from esam.train.engine import (
    NonFiniteLossError,
    ResumeError,
    StatefulTask,
    Trainer,
    TrainResult,
    TrainTask,
)
from esam.train.loader import make_train_loader, steps_per_epoch
from esam.train.optim import build_optimization, build_optimizer
from esam.train.param_groups import LayerDecayError, param_groups
from esam.train.schedules import ParamScheduler, Schedule, build_schedules, peak_lr, scaled_lr

__all__ = [
    "LayerDecayError",
    "NonFiniteLossError",
    "OptimConfig",
    "ParamScheduler",
    "ResumeError",
    "Schedule",
    "ScheduleConfig",
    "StatefulTask",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "build_optimization",
    "build_optimizer",
    "build_schedules",
    "make_train_loader",
    "param_groups",
    "peak_lr",
    "scaled_lr",
    "steps_per_epoch",
]
