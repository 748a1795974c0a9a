"""The optimizer and its schedules from a :class:`~esam.train.config.TrainConfig`.

``build_optimization`` is the usual path; its parts (:func:`esam.train.param_groups.param_groups`,
:func:`build_optimizer`, :func:`esam.train.schedules.build_schedules`) stay usable alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from esam.errors import InputError
from esam.train.config import OptimConfig, TrainConfig
from esam.train.muon import MuonWithAdamW, matrix_params, split_groups
from esam.train.param_groups import param_groups
from esam.train.schedules import ParamScheduler, build_schedules, peak_lr


def build_optimizer(
    groups: list[dict[str, Any]], cfg: OptimConfig, matrices: set[int] | None = None
) -> torch.optim.Optimizer:
    """AdamW, SGD, or Muon with AdamW over ``groups``; the lr is set by the scheduler before
    every step.

    Args:
        matrices: for ``muon``, the ``id`` of each tensor Muon updates
            (:func:`esam.train.muon.matrix_params`); the others go to AdamW.
    """
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum)
    if cfg.name == "muon":
        if matrices is None:
            raise ValueError("optimizer muon needs the ids of the weight matrices (matrices=)")
        muon, adamw = split_groups(groups, matrices)
        return MuonWithAdamW(
            muon,
            adamw,
            betas=cfg.betas,
            eps=cfg.eps,
            momentum=cfg.muon_momentum,
            ns_dtype=cfg.muon_ns_dtype,
        )
    raise InputError(f"unknown optimizer {cfg.name!r}; choose adamw, sgd or muon")


def build_optimization(
    model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, global_batch: int
) -> tuple[torch.optim.Optimizer, ParamScheduler]:
    """Param groups (weight-decay exemptions, layer decay), optimizer and per-step scheduler.

    The peak lr is ``cfg.optim.lr``, or ``base_lr x global_batch / 256``.
    """
    oc = cfg.optim
    groups = param_groups(
        model,
        weight_decay=oc.weight_decay,
        layer_decay=oc.layer_decay,
        no_weight_decay=oc.no_weight_decay,
    )
    optimizer = build_optimizer(groups, oc, matrix_params(model))
    lr_s, wd_s = build_schedules(cfg, steps_per_epoch, peak_lr(oc, global_batch))
    return optimizer, ParamScheduler(optimizer, lr_s, wd_s)
